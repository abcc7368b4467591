//! Admission: who is asking (the virtual key), and whether this request may
//! go — rate limits and the budget, reserved at admission and settled with
//! what the provider billed when the request ends. Guardrails on the
//! request run in `route` (they need the decoded body); this room owns the
//! counters.

use sluice_records::TokenUsage;

use crate::api::RequestHead;
use crate::auth::presented_key;
use crate::budget::{self, Reservation, SharedStore};
use crate::error::{ErrorKind, GatewayError};
use crate::gateway::{Gateway, KeyEntry};
use crate::limits;

#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Digest of the authenticated key (looked up again in the body phase
    /// in the same `Gateway` the request started with).
    pub key_digest: Option<[u8; 32]>,
    /// Budget reserved for this request, and the price to settle it with.
    reservation: Option<(Reservation, sluice_config::TokenPrice)>,
    /// Rate-limit admission (settled at the end) and the status to report.
    limits: Option<(limits::Admission, sluice_config::KeyLimits)>,
    pub rate_status: Option<limits::Status>,
    /// Prompt-token estimate made at admission, for an `estimated` usage
    /// record when the provider reports none.
    pub prompt_estimate: u64,
}

/// `key=` in a query string (Gemini SDKs may authenticate that way).
fn query_key(path: &str) -> Option<&str> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| kv.strip_prefix("key="))
}

impl Admission {
    /// The key presented in any of the ways SDKs send it, hashed once: the
    /// body phase finds the key again by its digest.
    pub fn authenticate<'g>(
        &mut self,
        gw: &'g Gateway,
        head: &RequestHead<'_>,
        now_ms: u64,
    ) -> Result<&'g KeyEntry, GatewayError> {
        let presented = presented_key(head.authorization, head.x_api_key, head.x_goog_api_key)
            .or_else(|| query_key(head.path));
        self.key_digest = presented.map(crate::auth::digest);
        gw.authenticate_digest_at(self.key_digest.as_ref(), now_ms / 1000)
    }

    /// The authenticated key, in the body phase.
    #[inline]
    pub fn key<'g>(&self, gw: &'g Gateway) -> Option<&'g KeyEntry> {
        self.key_digest.and_then(|d| gw.key_by_digest(&d))
    }

    /// Headers on the gateway's own replies: the rate-limit status, and
    /// `retry-after` when the refusal is the rate limit's.
    #[inline]
    pub fn reply_headers(&self, err: &GatewayError) -> Vec<(&'static str, String)> {
        let mut headers = self.rate_status.map(|s| s.headers()).unwrap_or_default();
        if err.kind == ErrorKind::RateLimited {
            if let Some(s) = self.rate_status {
                headers.push(("retry-after", s.reset_s.to_string()));
            }
        }
        headers
    }

    /// Rate limits, then the budget. `prompt_tokens` and
    /// `completion_estimate` are the request's estimate (the completion
    /// already multiplied by the choices asked for).
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        shared: &dyn SharedStore,
        key: &KeyEntry,
        price: Option<sluice_config::TokenPrice>,
        model_name: &str,
        prompt_tokens: u64,
        completion_estimate: u64,
        stream: bool,
        now_s: u64,
    ) -> Result<(), GatewayError> {
        self.prompt_estimate = prompt_tokens;
        if let Some(l) = key.limits {
            let estimate = prompt_tokens.saturating_add(completion_estimate);
            let (res, status) = limits::admit(shared, &key.id, &l, estimate, stream, now_s);
            self.rate_status = Some(status);
            match res {
                Ok(a) => self.limits = Some((a, l)),
                Err(which) => {
                    let what = match which {
                        limits::Refusal::Requests => "requests per minute",
                        limits::Refusal::Tokens => "tokens per minute",
                        limits::Refusal::Streams => "concurrent streams",
                    };
                    return Err(GatewayError::new(
                        429,
                        ErrorKind::RateLimited,
                        format!("Rate limit reached for this API key ({what}). Retry later."),
                    ));
                }
            }
        }
        if let Some(b) = key.budget {
            // A budget cannot be kept on a model whose price is unknown: the
            // ledger would charge it $0 forever. Refused, and said why.
            let Some(price) = price else {
                return Err(GatewayError::new(
                    403,
                    ErrorKind::PermissionDenied,
                    format!(
                        "The model '{model_name}' has no price configured, so this API key's \
                         budget cannot be applied to it. Ask the gateway operator to set \
                         its price."
                    ),
                ));
            };
            let estimate = price.cost(prompt_tokens, completion_estimate, 0);
            match budget::reserve(shared, b.epoch, &key.id, b.remaining_usd, estimate) {
                Some(r) => self.reservation = Some((r, price)),
                None => {
                    return Err(GatewayError::new(
                        429,
                        ErrorKind::QuotaExceeded,
                        "This request would exceed the budget of this API key.",
                    ))
                }
            }
        }
        Ok(())
    }

    /// Whether the admitted key has something Envoy's global rate limiting
    /// counts across Envoys: an rpm or tpm limit, or a budget (concurrent
    /// streams stay per Envoy).
    #[inline]
    pub fn globally_limited(&self) -> bool {
        self.reservation.is_some()
            || self
                .limits
                .as_ref()
                .is_some_and(|(_, l)| l.rpm.is_some() || l.tpm.is_some())
    }

    /// The budget this request holds (micro-dollars; 0 without a budget).
    #[inline]
    pub fn budget_hold_micros(&self) -> u64 {
        self.reservation.as_ref().map_or(0, |(r, _)| r.micros())
    }

    /// What `billed` costs at the reservation's price (micro-dollars; 0
    /// without a budget): what `settle` will charge.
    pub fn billed_micros(&self, billed: Option<TokenUsage>) -> u64 {
        self.reservation
            .as_ref()
            .map_or(0, |(_, price)| budget::micros(cost(price, billed)))
    }

    /// The target that answered a resilient request: the budget settles at
    /// its price (it reserved at the dearest target's).
    pub fn reprice(&mut self, price: Option<sluice_config::TokenPrice>) {
        if let (Some((_, p)), Some(new)) = (self.reservation.as_mut(), price) {
            *p = new;
        }
    }

    /// Settles what admission took with what was billed (`None`: nothing).
    pub fn settle(&mut self, shared: &dyn SharedStore, billed: Option<TokenUsage>) {
        if let Some((a, l)) = self.limits.take() {
            let actual = billed.map(|u| u.prompt_tokens.saturating_add(u.completion_tokens));
            limits::settle(shared, &l, &a, actual);
        }
        if let Some((r, price)) = self.reservation.take() {
            budget::settle(shared, &r, cost(&price, billed));
        }
    }
}

/// What `billed` costs at `price` (nothing billed: $0).
fn cost(price: &sluice_config::TokenPrice, billed: Option<TokenUsage>) -> f64 {
    billed.map_or(0.0, |u| {
        price.cost_with_cache_writes(
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.cache_creation_tokens,
        )
    })
}
