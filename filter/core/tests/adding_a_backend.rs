//! Adding a backend, in the smallest form: an OpenAI-compatible variant
//! with its own upstream path (Azure OpenAI's deployment URLs). In the crate
//! it would be one folder (`src/azure/backend.rs` with this `impl`) and one
//! line in `registry::BACKENDS`; here the test's own registry stands in for
//! that line. Nothing else changes: the client APIs, the flow, translation
//! and metering all reach it through the seam.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use sluice_core::backend::{Backend, StreamDecoder, UsageMeter, Wire};
use sluice_core::budget::MemoryStore;
use sluice_core::canonical::{ProviderError, Request, Response, Warnings};
use sluice_core::flow::{BodyStep, Flow, HeadersStep, RequestHead};
use sluice_core::gateway::Gateway;
use sluice_core::records::TokenUsage;
use sluice_core::registry::BACKENDS;

/// Azure OpenAI: Chat Completions bodies, the deployment in the path.
#[derive(Debug)]
struct AzureOpenAi;

static OPENAI: &dyn Backend = &sluice_core::openai::backend::OpenAi;

impl Backend for AzureOpenAi {
    fn kind(&self) -> &'static str {
        "azure-openai"
    }
    fn wire(&self) -> Wire {
        OPENAI.wire()
    }
    fn default_base_path(&self) -> &'static str {
        "/openai"
    }
    fn upstream_path(&self, base_path: &str, upstream_model: &str, _stream: bool) -> String {
        format!("{base_path}/deployments/{upstream_model}/chat/completions?api-version=2024-10-21")
    }
    fn encode_request(&self, req: &Request, model: &str, w: &mut Warnings) -> Vec<u8> {
        OPENAI.encode_request(req, model, w)
    }
    fn decode_response(&self, body: &[u8]) -> Option<Response> {
        OPENAI.decode_response(body)
    }
    fn decode_error(&self, status: u16, body: &[u8]) -> ProviderError {
        OPENAI.decode_error(status, body)
    }
    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        OPENAI.stream_decoder()
    }
    fn usage_meter(&self) -> Box<dyn UsageMeter> {
        OPENAI.usage_meter()
    }
    fn body_usage(&self, body: &[u8]) -> Option<TokenUsage> {
        OPENAI.body_usage(body)
    }
}

static AZURE: AzureOpenAi = AzureOpenAi;

fn config() -> sluice_config::PluginConfig {
    serde_json::from_value(serde_json::json!({
        "version": "v1",
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [{"name": "azure", "kind": "azure-openai", "cluster": "azure",
                       "host": "x.openai.azure.com",
                       "auth": {"type": "header", "name": "api-key"}, "api_key_env": "AZ"}],
        "models": [{"name": "gpt", "targets": [{"provider": "azure", "model": "my-deploy"}]}]
    }))
    .unwrap()
}

fn send<'g>(g: &'g Gateway, head: RequestHead<'_>, body: &str) -> (Flow, BodyStep<'g>) {
    let mut f = Flow::new(0);
    assert_eq!(
        f.on_request_headers(g, &sluice_core::budget::MemoryStore::default(), &head),
        HeadersStep::ReadBody
    );
    let b = body.as_bytes().to_vec();
    let step = f.on_request_body(g, &MemoryStore::default(), b.len(), true, || Some(b));
    (f, step)
}

fn header<'a>(step: &'a BodyStep<'_>, name: &str) -> &'a str {
    let BodyStep::Forward(fw) = step else {
        panic!("not forwarded: {step:?}")
    };
    fw.set.iter().find(|(k, _)| *k == name).unwrap().1.as_ref()
}

#[test]
fn a_registered_backend_serves_every_client_api() {
    let registry: Vec<&'static dyn Backend> = BACKENDS
        .iter()
        .copied()
        .chain([&AZURE as &dyn Backend])
        .collect();
    let g = Gateway::with_backends(config(), |_| Some("az-secret".into()), &registry).unwrap();

    // An OpenAI client: same wire, passed through to the deployment path.
    let openai = RequestHead {
        method: "POST",
        path: "/v1/chat/completions",
        authorization: Some("Bearer sk-1"),
        ..Default::default()
    };
    let (_, step) = send(&g, openai, r#"{"model":"gpt","messages":[]}"#);
    assert_eq!(
        header(&step, ":path"),
        "/openai/deployments/my-deploy/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(header(&step, "api-key"), "az-secret");
    let BodyStep::Forward(fw) = &step else {
        unreachable!()
    };
    let body: serde_json::Value = serde_json::from_slice(&fw.body).unwrap();
    assert_eq!(body["model"], "my-deploy");

    // An Anthropic client: translated into the backend's wire.
    let anthropic = RequestHead {
        method: "POST",
        path: "/v1/messages",
        x_api_key: Some("sk-1"),
        anthropic_version: Some("2023-06-01"),
        ..Default::default()
    };
    let (mut f, step) = send(
        &g,
        anthropic,
        r#"{"model":"gpt","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    let BodyStep::Forward(fw) = &step else {
        panic!("{step:?}")
    };
    let body: serde_json::Value = serde_json::from_slice(&fw.body).unwrap();
    assert_eq!(body["messages"][0]["content"], "hi");
    assert!(fw.set.iter().all(|(k, _)| *k != "anthropic-version"));
    // The answer comes back in the client's API, metered by the backend.
    f.on_response_headers(&g, 200, Some("application/json"));
    let answer = br#"{"id":"c1","object":"chat.completion","created":1,"model":"my-deploy",
        "choices":[{"index":0,"message":{"role":"assistant","content":"hello"},
        "finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let out = match f.on_response_body(&g, answer.len(), true, 1, || Some(answer.to_vec())) {
        sluice_core::flow::ResponseBodyStep::ReplaceWithStatus(200, b) => b,
        other => panic!("{other:?}"),
    };
    let msg: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        (msg["type"].as_str(), msg["content"][0]["text"].as_str()),
        (Some("message"), Some("hello"))
    );
    let rec: serde_json::Value =
        serde_json::from_slice(&f.finish(2, &MemoryStore::default())).unwrap();
    assert_eq!(
        (rec["prompt_tokens"].as_u64(), rec["provider"].as_str()),
        (Some(3), Some("azure"))
    );
}

#[test]
fn a_kind_without_a_backend_is_refused_with_the_known_kinds() {
    let errs = Gateway::new(config(), |_| None).unwrap_err();
    let msg = format!("{errs:?}");
    assert!(
        msg.contains("unknown provider kind 'azure-openai'"),
        "{msg}"
    );
    assert!(msg.contains("openai, anthropic, gemini"), "{msg}");
}
