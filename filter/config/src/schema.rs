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
    /// Other endpoints of providers, passed through metered
    /// (`/v1/moderations`, `/v1/images/generations`, `/v1/audio/…`,
    /// `/v1/files`, `/v1/batches`): docs/translation.md. Paths not listed
    /// here or served by Sluice are 404.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<PassthroughEndpoint>,
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

/// A provider endpoint passed through as it is: key auth, the key's model
/// allow-list when the body names a model, usage when the provider reports
/// it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PassthroughEndpoint {
    /// The client's path: exact (`/v1/moderations`), or a prefix ending in
    /// `/*` (`/v1/files/*` also matches `/v1/files`). Under `/v1/`.
    pub path: String,
    /// The provider that serves it; the upstream path is the provider's
    /// base path followed by the client's path after `/v1`.
    pub provider: String,
    /// Allowed methods (default: POST).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Read the body (bounded) for its `model` — a JSON member or a
    /// multipart form field — and check it against the key's models. Off
    /// for bodies that name none (file uploads): they stream through.
    #[serde(default = "yes")]
    pub check_model: bool,
    /// Body bound when the body is read (default: `limits.max_request_body_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
}

fn yes() -> bool {
    true
}

impl PassthroughEndpoint {
    /// Whether a request's method and path are this endpoint's.
    pub fn matches(&self, method: &str, path: &str) -> bool {
        let path_ok = match self.path.strip_suffix("/*") {
            Some(prefix) => {
                path == prefix
                    || path
                        .strip_prefix(prefix)
                        .is_some_and(|rest| rest.starts_with('/'))
            }
            None => path == self.path,
        };
        let method_ok = if self.methods.is_empty() {
            method == "POST"
        } else {
            self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
        };
        path_ok && method_ok
    }

    /// Whether the path alone is this endpoint's (a method it does not
    /// allow is then a 405).
    pub fn matches_path(&self, path: &str) -> bool {
        let any = PassthroughEndpoint {
            methods: vec![String::from("*")],
            ..self.clone()
        };
        any.matches("*", path)
    }
}

/// An upstream provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Unique name, referenced by model targets and reported in usage.
    pub name: String,
    pub kind: ProviderKind,
    /// Where the provider's API is: `https://api.openai.com/v1`,
    /// `http://10.0.0.5:8000/v1`. The control plane then pushes the Envoy
    /// cluster itself (TLS with SNI and the system CA bundle for https), and
    /// `cluster`, `host` and `base_path` follow from it (leave them unset).
    /// Needed by every provider of a model with a resilience policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// The Envoy cluster requests to this provider go to (a cluster of the
    /// bootstrap; with `base_url`: `sluice_provider_<name>`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// The `:authority` sent upstream (e.g. `api.openai.com`; with
    /// `base_url`: its host).
    #[serde(default, skip_serializing_if = "String::is_empty")]
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
    /// Other client APIs this provider serves natively, by backend kind
    /// (`openai-responses` on an `openai` provider that also answers
    /// `/responses`): their clients are passed through to it, with its
    /// stored state and built-in tools, instead of translated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serves: Vec<ProviderKind>,
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
    /// One or more targets: within a priority chosen by weight, the next
    /// priority is the fallback (docs/routing.md).
    pub targets: Vec<Target>,
    /// Retries of a failed attempt, on the same target or the next priority.
    /// Setting any of `retry`, `timeouts`, `cooldown` — or targets at more
    /// than one priority — gives the model a resilience policy: Envoy routes
    /// among its targets and the filter translates each attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// A target that failed this many times in a row is skipped for a while
    /// (Envoy's outlier detection: per Envoy, shared by its workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<Cooldown>,
}

impl Model {
    /// Whether Envoy routes this model among its targets (a cluster of its
    /// own, an attempt filter translating each attempt) rather than the
    /// filter picking one target.
    pub fn resilient(&self) -> bool {
        self.retry.is_some()
            || self.timeouts.is_some()
            || self.cooldown.is_some()
            || self.targets.iter().any(|t| t.priority != 0)
    }

    /// The Envoy cluster of a resilient model: `sluice_model_` and the
    /// name with anything but `[A-Za-z0-9_.-]` as `_`, plus a short hash of
    /// the exact name when that changed it (so two names never share one).
    pub fn cluster_name(&self) -> String {
        cluster_name("sluice_model_", &self.name)
    }
}

fn cluster_name(prefix: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == name {
        return format!("{prefix}{clean}");
    }
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(name.as_bytes());
    let short: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{clean}_{short}")
}

/// When and how often a failed attempt is tried again. Envoy's router does
/// it (docs/routing.md): a retry goes to the next priority once the current
/// one failed (`previous_priorities`), backs off with jitter between
/// attempts (base 25 ms, at most 250 ms), and waits out a provider's
/// `retry-after` up to the route's cap (10 s in the bundled bootstrap).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1: no retry; at most 10).
    #[serde(default = "d_attempts")]
    pub attempts: u32,
    /// Which failures are retried.
    #[serde(default = "d_retry_on")]
    pub on: Vec<RetryOn>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: d_attempts(),
            on: d_retry_on(),
        }
    }
}

fn d_attempts() -> u32 {
    3
}
fn d_retry_on() -> Vec<RetryOn> {
    vec![
        RetryOn::RateLimited,
        RetryOn::ServerError,
        RetryOn::ConnectFailure,
        RetryOn::Reset,
    ]
}

/// A kind of failed attempt. Only failures before the first byte of the
/// answer reached the client can be retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// 429.
    RateLimited,
    /// Any 5xx (500, 502, 503, 504, 529, …).
    ServerError,
    /// Only the "busy" statuses: 503 and 529 (Anthropic's overloaded).
    Overloaded,
    /// The connection could not be made.
    ConnectFailure,
    /// The connection broke before the answer's headers.
    Reset,
    /// No answer within `timeouts.first_byte_ms`.
    Timeout,
}

/// Time limits of a request, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Per attempt, until the provider's answer starts (its headers): an
    /// attempt past it is abandoned (and retried on `timeout`). Once the
    /// answer has started streaming it no longer applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte_ms: Option<u64>,
    /// The whole request, every attempt and back-off included, until the
    /// last byte of the answer (streams too). Default: the route's (600 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_ms: Option<u64>,
}

/// Outlier detection per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cooldown {
    /// Consecutive failures (5xx, connect failures, resets, timeouts) that
    /// open the circuit.
    #[serde(default = "d_failures")]
    pub consecutive_failures: u32,
    /// How long the target is skipped (doubles each time it opens again,
    /// up to 10 ×, as Envoy's outlier detection does).
    #[serde(default = "d_cooldown_s")]
    pub seconds: u64,
}

fn d_failures() -> u32 {
    5
}
fn d_cooldown_s() -> u64 {
    30
}

/// One place a model can be served from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Provider name.
    pub provider: String,
    /// Model name the provider knows.
    pub model: String,
    /// Relative weight (> 0) among the targets of the same priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// 0 (default) is tried first; a retry moves to the next priority once
    /// the current one failed (docs/routing.md).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub priority: u32,
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

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A provider's `base_url`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    pub tls: bool,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// Path prefix, `/v1` (no trailing slash; empty for the root).
    pub path: String,
}

impl BaseUrl {
    /// `http(s)://host[:port][/path]`; no user info, query or fragment.
    pub fn parse(url: &str) -> Result<BaseUrl, String> {
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("must start with http:// or https://".into());
        };
        if rest.contains(['?', '#', '@', ' ']) {
            return Err("must hold no user, query or fragment".into());
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("unclosed '[' in the host")?;
            match after.strip_prefix(':') {
                Some(p) => (h, Some(p)),
                None if after.is_empty() => (h, None),
                None => return Err("bad port".into()),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or("bad port")?,
            None if tls => 443,
            None => 80,
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'));
        if !host_ok {
            return Err("bad host".into());
        }
        Ok(BaseUrl {
            tls,
            host: host.to_ascii_lowercase(),
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// The `:authority` to send: the host, with the port unless it is the
    /// scheme's default.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => host,
            _ => format!("{host}:{}", self.port),
        }
    }
}

impl Provider {
    /// The Envoy cluster: `cluster`, or for a provider by URL
    /// `sluice_provider_<name>` (pushed by the control plane).
    pub fn cluster_name(&self) -> String {
        if self.base_url.is_some() && self.cluster.is_empty() {
            cluster_name("sluice_provider_", &self.name)
        } else {
            self.cluster.clone()
        }
    }

    /// The parsed `base_url` (None when unset or invalid: validation says).
    pub fn url(&self) -> Option<BaseUrl> {
        self.base_url
            .as_deref()
            .and_then(|u| BaseUrl::parse(u).ok())
    }

    /// The `:authority` sent upstream.
    pub fn authority(&self) -> String {
        match self.url() {
            Some(u) if self.host.is_empty() => u.authority(),
            _ => self.host.clone(),
        }
    }

    /// The path prefix: `base_path`, or the `base_url`'s path.
    pub fn path_prefix(&self) -> Option<String> {
        match (&self.base_path, self.url()) {
            (Some(p), _) => Some(p.clone()),
            // A URL without a path: the kind's default prefix.
            (None, Some(u)) if !u.path.is_empty() => Some(u.path),
            _ => None,
        }
    }
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
