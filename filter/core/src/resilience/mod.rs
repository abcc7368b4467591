//! Models with a resilience policy (docs/routing.md): Envoy's router
//! retries and falls back among the model's targets, and this filter's
//! provider-facing half — an upstream HTTP filter of the model's cluster —
//! translates each attempt for the provider it goes to. The router headers
//! of a model's retry policy are `retry_policy.rs` (compiled with the
//! configuration).
//!
//! - `plans.rs`: what the gateway half hands to the attempts of a request
//!   (same VM, same thread), and what the attempts report back.
//!
//! The attempt itself — a sans-IO state machine for the glue, beside the
//! gateway half's — is `flow/attempt.rs`.

pub mod plans;

/// Request header carrying a request's plan id from the gateway half to its
/// attempts (removed before the provider sees the request).
pub const PLAN_HEADER: &str = "x-sluice-plan";
/// Response header: the provider that answered.
pub const PROVIDER_HEADER: &str = "x-sluice-provider";
/// Response header: how many attempts the request took.
pub const ATTEMPTS_HEADER: &str = "x-sluice-attempts";
/// Root id of the attempt filter in Envoy's configuration (the gateway half
/// uses any other).
pub const ATTEMPT_ROOT_ID: &str = "sluice_attempt";
/// Request header an attempt carries to its model cluster's upstream
/// filters: the provider's name (so only that provider's credential
/// injector applies); removed there before the provider sees the request.
pub const CREDENTIAL_HEADER: &str = "x-sluice-credential";
/// Endpoint metadata namespace naming a target: `provider`, `model`.
pub const METADATA_NAMESPACE: &str = "sluice";
