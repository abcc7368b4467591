use serde::{Deserialize, Serialize};

/// Default cap on a request body the filter will read (8 MiB: enough for a
/// few base64 images, small enough that one request cannot exhaust a VM).
pub const DEFAULT_MAX_REQUEST_BODY_BYTES: u64 = 8 * 1024 * 1024;
/// Default cap on a non-stream response body the filter buffers for usage.
pub const DEFAULT_MAX_RESPONSE_BODY_BYTES: u64 = 16 * 1024 * 1024;
/// Default cap on one server-sent event (the carry-over buffer's bound).
pub const DEFAULT_MAX_SSE_EVENT_BYTES: u64 = 1024 * 1024;

/// The whole plugin configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Opaque version label (the control plane sets it; shown in logs and usage).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Virtual keys callers present.
    #[serde(default)]
    pub keys: Vec<VirtualKey>,
    /// Upstream providers (each an Envoy cluster).
    #[serde(default)]
    pub providers: Vec<Provider>,
    /// Public model names and where they route.
    #[serde(default)]
    pub models: Vec<Model>,
    /// Size bounds.
    #[serde(default)]
    pub limits: Limits,
    /// Content rules (docs/guardrails.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<Guardrails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
    /// Traffic capture for replay baselines (docs/replay.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureConfig>,
    /// Online shadow comparison: this filter's role (docs/replay.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowConfig>,
    /// The hosts (`:authority`, port ignored) the gateway serves: `llm.example.com`,
    /// or `*.example.com` for any subdomain. Requests for other hosts pass
    /// through untouched and unrecorded — the filter can sit on a listener
    /// shared with other applications (an Istio ingress gateway). Empty:
    /// every host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

/// Whether `authority` (a `:authority` value, with or without a port) is one
/// of `hosts`; every host when `hosts` is empty. Case-insensitive.
pub fn host_matches(hosts: &[String], authority: &str) -> bool {
    if hosts.is_empty() {
        return true;
    }
    let host = match authority.rsplit_once(':') {
        // `[::1]:8080` and `host:8080`, not the colons inside `[::1]`.
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    hosts.iter().any(|h| match h.strip_prefix("*.") {
        Some(suffix) => host
            .len()
            .checked_sub(suffix.len())
            .and_then(|at| at.checked_sub(1).map(|dot| (at, dot)))
            .is_some_and(|(at, dot)| {
                host.get(dot..at) == Some(".")
                    && host
                        .get(at..)
                        .is_some_and(|s| s.eq_ignore_ascii_case(suffix))
            }),
        None => host.eq_ignore_ascii_case(h),
    })
}

/// Which requests are captured (client request, upstream exchange, client
/// response) and shipped to the control plane for replay baselines.
/// Sampling is stratified by (model, tools or not, stream or not): the
/// first `min_per_stratum` requests of every stratum are kept, then one in
/// `1 / sample_rate`, so rare cases are in the baseline too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Fraction of requests captured after the per-stratum minimum (0–1).
    #[serde(default)]
    pub sample_rate: f64,
    /// Requests captured per stratum (and per worker VM and config version)
    /// regardless of `sample_rate`.
    #[serde(default = "d_min_per_stratum")]
    pub min_per_stratum: u32,
    /// A record larger than this (all bodies together) is dropped, not cut:
    /// a truncated record could not be replayed.
    #[serde(default = "d_max_record_bytes")]
    pub max_record_bytes: u64,
}

fn d_min_per_stratum() -> u32 {
    5
}
fn d_max_record_bytes() -> u64 {
    256 * 1024
}

/// A filter that takes part in an online shadow comparison reports a
/// digest of what it sent upstream with its usage record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    pub role: ShadowRole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShadowRole {
    /// Serves the traffic; its usage is charged.
    Primary,
    /// Receives mirrored traffic; its usage is compared, never charged.
    Shadow,
}

impl ShadowRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowRole::Primary => "primary",
            ShadowRole::Shadow => "shadow",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Add a `key` label (virtual key id) to request, token and rejection
    /// metrics. Off by default: one series per key per model.
    #[serde(default)]
    pub per_key: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    #[serde(default)]
    pub rules: Vec<GuardrailRule>,
    /// Environment variable with the salt of the `hash` action (a fixed
    /// default salt is used when unset, which makes hashes guessable for
    /// low-entropy values: set it in production).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_salt_env: Option<String>,
    /// Public model names allowed / denied for every key (a trailing `*`
    /// is a prefix). Empty `allow`: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_models: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_models: Vec<String>,
    /// Refuse prompts longer than this many tokens (counted with tiktoken;
    /// an estimate for non-OpenAI models).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_input_tokens: Option<u64>,
    /// Refuse requests asking for more completion tokens than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Refuse out-of-range parameters (temperature 0–2, top_p 0–1,
    /// max_tokens ≥ 1) before they reach a provider.
    #[serde(default)]
    pub validate_parameters: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailRule {
    /// Named in errors (never the matched text).
    pub name: String,
    pub detector: Detector,
    pub action: GuardAction,
    /// `request` (default), `response` or `both`.
    #[serde(default)]
    pub on: GuardDirection,
    /// Public model names the rule applies to (a trailing `*` is a prefix);
    /// empty: every model.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// Key ids the rule applies to; empty: every key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    Email,
    Phone,
    UsSsn,
    /// Payment card numbers that pass the Luhn check.
    PaymentCard,
    /// IBANs that pass the ISO 13616 mod-97 check.
    Iban,
    IpAddress,
    /// API keys (`sk-…`, `AKIA…`), private-key blocks, JWTs.
    Secret,
    /// A custom regular expression (Rust `regex` syntax).
    Regex(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardAction {
    /// Refuse with 400 naming the rule.
    Block,
    /// Replace with a typed placeholder such as `[EMAIL]`.
    Mask,
    /// Replace with a stable salted hash (`[EMAIL:3f2a…]`).
    Hash,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardDirection {
    #[default]
    Request,
    Response,
    Both,
}

/// A virtual key. Only its SHA-256 is ever stored or pushed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualKey {
    /// Stable identifier, reported in usage records.
    pub id: String,
    /// Human-readable name.
    #[serde(default)]
    pub name: String,
    /// Lowercase hex SHA-256 of the key as the caller sends it.
    pub sha256: String,
    /// Public model names this key may use; empty means every model.
    #[serde(default)]
    pub models: Vec<String>,
    /// `active`, `disabled`, or `over_budget` (set by the control plane
    /// when the key's budget is spent: requests get 429 `insufficient_quota`).
    #[serde(default)]
    pub status: KeyStatus,
    /// Unix seconds after which the key is refused (checked by the filter,
    /// so expiry is exact even between config pushes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Budget for the filter's precheck: what was left at the start of an
    /// epoch. The filter reserves each request's estimated cost against it
    /// per Envoy, so concurrent requests cannot overshoot while usage is in
    /// flight. The epoch changes only when the budget is (re)set or a period
    /// rolls over; pushes for other reasons keep the counters running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<KeyBudget>,
    /// Rate limits, enforced per Envoy across its worker VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<KeyLimits>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyLimits {
    /// Requests per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    /// Tokens (prompt + completion) per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    /// Streams open at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrent_streams: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBudget {
    pub remaining_usd: f64,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    #[default]
    Active,
    Disabled,
    OverBudget,
}

/// Which API a provider speaks: the name of a backend in the filter's
/// registry (`openai` — any OpenAI-compatible Chat Completions API —,
/// `anthropic`, `gemini`). The filter's config compiler refuses a kind it
/// has no backend for, so adding a backend needs no change here.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderKind(pub String);

impl ProviderKind {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ProviderKind {
    fn from(s: &str) -> Self {
        ProviderKind(s.to_string())
    }
}

/// An upstream provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Unique name, referenced by model targets and reported in usage.
    pub name: String,
    pub kind: ProviderKind,
    /// The Envoy cluster requests to this provider go to.
    pub cluster: String,
    /// The `:authority` sent upstream (e.g. `api.openai.com`).
    pub host: String,
    /// Path prefix the API lives under. Default per kind: `/v1` (openai,
    /// anthropic), `/v1beta` (gemini). Vertex AI is the gemini kind with
    /// `/v1/projects/P/locations/L/publishers/google`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_path: Option<String>,
    /// How the provider credential is sent.
    #[serde(default)]
    pub auth: ProviderAuth,
    /// Name of the environment variable holding the provider API key, exposed
    /// to the VM through `vm_config.environment_variables.host_env_keys`.
    /// Keys never appear in the configuration itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Name of an SDS generic secret holding the key, which Envoy's
    /// `credential_injector` (an upstream filter of `cluster`) adds to every
    /// request to this provider: the key then never enters the VM, the
    /// filter's configuration or `/config_dump`. The filter sets no
    /// credential itself (it still strips the client's). Excludes
    /// `api_key_env`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<String>,
}

/// How a provider credential is attached to the upstream request.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProviderAuth {
    /// `Authorization: Bearer <key>` (OpenAI and compatibles).
    #[default]
    Bearer,
    /// `<name>: <key>` (e.g. Anthropic `x-api-key`, Azure `api-key`,
    /// Gemini `x-goog-api-key`).
    Header { name: String },
    /// No credential (a local or already-authenticated upstream).
    None,
}

/// A public model name and its targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The name clients send in `model`.
    pub name: String,
    /// One or more targets, chosen by weight.
    pub targets: Vec<Target>,
}

/// One place a model can be served from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Provider name.
    pub provider: String,
    /// Model name the provider knows.
    pub model: String,
    /// Relative weight (> 0).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Price of this target, for budget prechecks (the control plane fills it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<TokenPrice>,
}

/// USD per token.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPrice {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's cache (Anthropic bills them
    /// above plain input); unset: input × `CACHE_WRITE_MARKUP`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_input: Option<f64>,
}

/// Anthropic's price for a 5-minute cache write, relative to plain input.
pub const CACHE_WRITE_MARKUP: f64 = 1.25;

impl TokenPrice {
    /// Cost of a request; cached prompt tokens at the cached price.
    pub fn cost(&self, prompt: u64, completion: u64, cached: u64) -> f64 {
        self.cost_with_cache_writes(prompt, completion, cached, 0)
    }

    /// Cost of a request whose prompt tokens include `cached` read from and
    /// `written` written to the provider's cache, each at its own price.
    pub fn cost_with_cache_writes(
        &self,
        prompt: u64,
        completion: u64,
        cached: u64,
        written: u64,
    ) -> f64 {
        let cached = cached.min(prompt);
        let written = written.min(prompt.saturating_sub(cached));
        let fresh = prompt.saturating_sub(cached).saturating_sub(written);
        let write_price = self
            .cache_write_input
            .unwrap_or(self.input * CACHE_WRITE_MARKUP);
        fresh as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + written as f64 * write_price
            + completion as f64 * self.output
    }
}

fn default_weight() -> u32 {
    1
}

/// Size bounds. Every buffer the filter keeps is bounded by one of these.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "d_req")]
    pub max_request_body_bytes: u64,
    #[serde(default = "d_resp")]
    pub max_response_body_bytes: u64,
    #[serde(default = "d_sse")]
    pub max_sse_event_bytes: u64,
}

fn d_req() -> u64 {
    DEFAULT_MAX_REQUEST_BODY_BYTES
}
fn d_resp() -> u64 {
    DEFAULT_MAX_RESPONSE_BODY_BYTES
}
fn d_sse() -> u64 {
    DEFAULT_MAX_SSE_EVENT_BYTES
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_body_bytes: d_req(),
            max_response_body_bytes: d_resp(),
            max_sse_event_bytes: d_sse(),
        }
    }
}
