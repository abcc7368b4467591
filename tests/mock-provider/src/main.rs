//! Mock LLM provider for tests, the demo and benchmarks.
//!
//! Speaks OpenAI Chat Completions, Anthropic Messages and Gemini
//! generateContent/streamGenerateContent (AI Studio and Vertex paths),
//! stream and non-stream, with tool calls and each provider's error shape.
//! Behaviour is steered per request by `x-mock-*` headers (README.md in this
//! crate lists them); recent requests are inspectable at `/__mock/requests`.

mod answer;
mod anthropic;
mod gemini;
mod openai;
mod ops;
mod replay;
mod responses;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenAi,
    /// OpenAI's Responses API.
    Responses,
    Anthropic,
    Gemini,
}

struct Options {
    chunk_delay_ms: u64,
    require_key: Option<String>,
    recordings: Option<PathBuf>,
    quiet_log: bool,
}

struct AppState {
    opts: Options,
    recent: Mutex<VecDeque<Value>>,
    /// Replay mode: recorded provider answers by record id, and what each
    /// gateway side sent for each record.
    replay: std::collections::HashMap<String, sluice_replay::record::Record>,
    replay_log: Mutex<std::collections::HashMap<String, serde_json::Map<String, Value>>>,
    /// Injected errors with a budget (`x-mock-error-times`): failures made
    /// so far per `x-mock-error-key`.
    failures: Mutex<std::collections::HashMap<String, u64>>,
}

const MAX_REPLAY_LOG: usize = 100_000;

const MAX_RECENT: usize = 200;
const MAX_BODY: usize = 32 * 1024 * 1024;

fn usage() -> ! {
    eprintln!(
        "usage: sluice-mock-provider [--addr 127.0.0.1] [--port 0] [--port-file PATH] \
         [--chunk-delay-ms N] [--require-key KEY] [--recordings DIR] [--workers N] [--no-log] \
         [--replay-baseline FILE]..."
    );
    std::process::exit(2)
}

fn main() {
    let mut addr = "127.0.0.1".to_string();
    let mut port: u16 = 0;
    let mut port_file = None;
    let mut workers = 1usize;
    let mut opts = Options {
        chunk_delay_ms: 0,
        require_key: None,
        recordings: None,
        quiet_log: false,
    };
    let mut replay_files: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--addr" => addr = val(),
            "--port" => port = val().parse().unwrap_or_else(|_| usage()),
            "--port-file" => port_file = Some(PathBuf::from(val())),
            "--chunk-delay-ms" => opts.chunk_delay_ms = val().parse().unwrap_or_else(|_| usage()),
            "--require-key" => opts.require_key = Some(val()),
            "--recordings" => opts.recordings = Some(PathBuf::from(val())),
            "--workers" => workers = val().parse().unwrap_or_else(|_| usage()),
            "--no-log" => opts.quiet_log = true,
            "--replay-baseline" => replay_files.push(PathBuf::from(val())),
            _ => usage(),
        }
    }
    let mut replay = std::collections::HashMap::new();
    for f in &replay_files {
        match sluice_replay::record::read_baseline(f) {
            Ok(records) => replay.extend(records.into_iter().map(|r| (r.id.clone(), r))),
            Err(e) => {
                eprintln!("sluice-mock-provider: {e}");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((addr.as_str(), port))
            .await
            .expect("bind");
        let bound = listener.local_addr().expect("local addr");
        if let Some(f) = port_file {
            std::fs::write(&f, bound.port().to_string()).expect("write port file");
        }
        eprintln!("sluice-mock-provider listening on {bound}");
        let state = Arc::new(AppState {
            opts,
            recent: Mutex::new(VecDeque::new()),
            replay,
            replay_log: Mutex::new(Default::default()),
            failures: Mutex::new(Default::default()),
        });
        let app = Router::new().fallback(handle).with_state(state);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        // TCP_NODELAY: stream frames leave as written, like a real
        // provider's; without it Nagle holds small frames for an ACK.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
            .expect("serve");
    });
}

fn json_response(status: u16, body: &Value, extra: &[(&str, String)]) -> Response {
    let mut b = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    for (k, v) in extra {
        b = b.header(*k, v);
    }
    b.body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn provider_error(format: Format, status: u16, message: &str) -> Response {
    provider_error_after(
        format,
        status,
        message,
        (status == 429).then(|| "7".to_string()),
    )
}

fn provider_error_after(
    format: Format,
    status: u16,
    message: &str,
    retry_after: Option<String>,
) -> Response {
    let body = match format {
        Format::OpenAi | Format::Responses => openai::error(status, message),
        Format::Anthropic => anthropic::error(status, message),
        Format::Gemini => gemini::error(status, message),
    };
    let extra: Vec<(&str, String)> = retry_after
        .map(|v| ("retry-after", v))
        .into_iter()
        .collect();
    json_response(status, &body, &extra)
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::OpenAi => "openai",
            Format::Responses => "openai-responses",
            Format::Anthropic => "anthropic",
            Format::Gemini => "gemini",
        }
    }
}

/// Whether the `x-mock-error` of this request applies: only to the wire
/// formats in `x-mock-error-for` (so one provider kind fails and another
/// answers: fallback tests), and only the first `x-mock-error-times`
/// requests with the same `x-mock-error-key` (so a retry succeeds).
fn injected_error_applies(state: &AppState, h: &HeaderMap, format: Format) -> bool {
    let for_format = header(h, "x-mock-error-for")
        .is_none_or(|list| list.split(',').any(|f| f.trim() == format.name()));
    if !for_format {
        return false;
    }
    let Some(times) = header(h, "x-mock-error-times").and_then(|s| s.parse::<u64>().ok()) else {
        return true;
    };
    let key = header(h, "x-mock-error-key")
        .unwrap_or_default()
        .to_string();
    let mut made = state.failures.lock().unwrap_or_else(|p| p.into_inner());
    let n = made.entry(key).or_insert(0);
    if *n < times {
        *n += 1;
        true
    } else {
        false
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Which API a path belongs to, and for Gemini the model and whether the
/// call streams.
fn classify(path: &str) -> Option<(Format, Option<String>, bool)> {
    if path.ends_with("/chat/completions") {
        return Some((Format::OpenAi, None, false));
    }
    if path.ends_with("/messages") {
        return Some((Format::Anthropic, None, false));
    }
    if path.ends_with("/responses") {
        return Some((Format::Responses, None, false));
    }
    // /v1beta/models/M:generateContent, /v1/models/M:..., and Vertex
    // /v1/projects/P/locations/L/publishers/google/models/M:...
    let (before, action) = path.rsplit_once(':')?;
    let model = before.rsplit_once("/models/")?.1.to_string();
    match action {
        "generateContent" => Some((Format::Gemini, Some(model), false)),
        "streamGenerateContent" => Some((Format::Gemini, Some(model), true)),
        _ => None,
    }
}

fn presented_key<'a>(h: &'a HeaderMap, query: &'a str) -> Option<&'a str> {
    header(h, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .or_else(|| header(h, "x-api-key"))
        .or_else(|| header(h, "x-goog-api-key"))
        .or_else(|| header(h, "api-key"))
        .or_else(|| query.split('&').find_map(|kv| kv.strip_prefix("key=")))
}

async fn handle(State(state): State<Arc<AppState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return json_response(413, &json!({"error": "body too large"}), &[]),
    };

    if path.starts_with("/__mock/") {
        return control(&state, &parts.method, &path, &query);
    }
    if let Some(id) = header(&parts.headers, sluice_replay::runner::REPLAY_ID_HEADER) {
        if !state.replay.is_empty() {
            let side = header(&parts.headers, sluice_replay::runner::REPLAY_SIDE_HEADER)
                .unwrap_or("primary");
            return replay_answer(&state, id, side, &path, &query, &body);
        }
    }

    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    if !state.opts.quiet_log {
        let headers: serde_json::Map<String, Value> = parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
            .collect();
        let mut recent = state.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() >= MAX_RECENT {
            recent.pop_front();
        }
        recent.push_back(json!({
            "method": parts.method.as_str(), "path": path, "query": query,
            "headers": headers,
            "body": parsed.clone().unwrap_or_else(|| json!(String::from_utf8_lossy(&body))),
        }));
    }

    let Some((format, path_model, path_stream)) = classify(&path) else {
        if parts.method == Method::POST {
            if let Some(want) = &state.opts.require_key {
                if presented_key(&parts.headers, &query) != Some(want.as_str()) {
                    return provider_error(Format::OpenAi, 401, "mock: invalid provider API key");
                }
            }
            let req = parsed.clone().unwrap_or(Value::Null);
            if let Some((status, body)) = ops::respond(&path, &req, body.len()) {
                return json_response(status, &body, &[]);
            }
        }
        let req = parsed.clone().unwrap_or(Value::Null);
        if let Some((status, ctype, out)) = ops::other(parts.method.as_str(), &path, &req, &body) {
            if let Some(want) = &state.opts.require_key {
                if presented_key(&parts.headers, &query) != Some(want.as_str()) {
                    return provider_error(Format::OpenAi, 401, "mock: invalid provider API key");
                }
            }
            return Response::builder()
                .status(status)
                .header("content-type", ctype)
                .body(Body::from(out))
                .unwrap_or_else(|_| Response::new(Body::empty()));
        }
        return json_response(
            404,
            &json!({"error": {"message": format!("mock: no route for {path}")}}),
            &[],
        );
    };
    if parts.method != Method::POST {
        return provider_error(format, 405, "method not allowed");
    }
    if let Some(want) = &state.opts.require_key {
        if presented_key(&parts.headers, &query) != Some(want.as_str()) {
            return provider_error(format, 401, "mock: invalid provider API key");
        }
    }
    let h = &parts.headers;
    if let Some(ms) = header(h, "x-mock-first-byte-delay-ms").and_then(|s| s.parse::<u64>().ok()) {
        // Nothing at all until then: a first-byte timeout's upstream (only
        // for the formats in `x-mock-first-byte-delay-for`, if given).
        let for_format = header(h, "x-mock-first-byte-delay-for")
            .is_none_or(|list| list.split(',').any(|f| f.trim() == format.name()));
        if for_format {
            tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        }
    }
    if let Some(status) = header(h, "x-mock-error").and_then(|s| s.parse::<u16>().ok()) {
        if injected_error_applies(&state, h, format) {
            let retry_after = header(h, "x-mock-retry-after")
                .map(str::to_string)
                .or_else(|| (status == 429).then(|| "7".to_string()));
            let msg = format!("mock: injected error {status}");
            return provider_error_after(format, status, &msg, retry_after);
        }
    }
    let Some(req) = parsed else {
        return provider_error(format, 400, "mock: body is not valid JSON");
    };
    let stream = match format {
        Format::Gemini => path_stream,
        _ => req.get("stream").and_then(Value::as_bool) == Some(true),
    };
    let delay = header(h, "x-mock-delay-ms")
        .and_then(|s| s.parse().ok())
        .unwrap_or(state.opts.chunk_delay_ms);

    if let Some(name) = header(h, "x-mock-replay") {
        return match replay::respond(
            state.opts.recordings.as_deref(),
            name,
            format,
            stream,
            delay,
        ) {
            Ok(r) => r,
            Err(msg) => json_response(500, &json!({"error": {"message": msg}}), &[]),
        };
    }

    let model = path_model
        .or_else(|| req.get("model").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "mock-model".into());
    let input = answer::AnswerInput {
        model,
        body_len: body.len(),
        chunks: header(h, "x-mock-chunks")
            .and_then(|s| s.parse().ok())
            .unwrap_or(8)
            .min(100_000),
        max_tokens: match format {
            Format::OpenAi => openai::max_tokens(&req),
            Format::Responses => responses::max_tokens(&req),
            Format::Anthropic => req.get("max_tokens").and_then(Value::as_u64),
            Format::Gemini => gemini::max_tokens(&req),
        },
        tools: match format {
            Format::OpenAi => openai::offered_tools(&req),
            Format::Responses => responses::offered_tools(&req),
            Format::Anthropic => anthropic::offered_tools(&req),
            Format::Gemini => gemini::offered_tools(&req),
        },
        no_tool_call: match format {
            Format::OpenAi => openai::no_tool_call(&req),
            Format::Responses => responses::no_tool_call(&req),
            Format::Anthropic => anthropic::no_tool_call(&req),
            Format::Gemini => gemini::no_tool_call(&req),
        },
        parallel_tools: header(h, "x-mock-parallel-tools")
            .and_then(|s| s.parse().ok())
            .unwrap_or(1),
    };
    if format == Format::Anthropic && req.get("max_tokens").is_none() {
        return provider_error(format, 400, "max_tokens: Field required");
    }
    let a = answer::build(input);
    let error_after: Option<usize> =
        header(h, "x-mock-stream-error-after").and_then(|s| s.parse().ok());

    if !stream {
        let body = match format {
            Format::OpenAi => openai::response(&a),
            Format::Responses => responses::response(&a),
            Format::Anthropic => anthropic::response(&a),
            Format::Gemini => gemini::response(&a),
        };
        return json_response(200, &body, &[]);
    }
    let mut frames: Vec<String> = match format {
        Format::OpenAi => {
            let include_usage = req
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                == Some(true);
            let mut f: Vec<String> = openai::stream_payloads(&a, include_usage)
                .iter()
                .map(|p| openai::frame(&p.to_string()))
                .collect();
            f.push(openai::DONE.to_string());
            f
        }
        Format::Responses => responses::stream_events(&a)
            .iter()
            .map(|(ev, p)| responses::frame(ev, &p.to_string()))
            .collect(),
        Format::Anthropic => anthropic::stream_events(&a)
            .iter()
            .map(|(ev, p)| anthropic::frame(ev, &p.to_string()))
            .collect(),
        Format::Gemini => gemini::stream_payloads(&a)
            .iter()
            .map(|p| gemini::frame(&p.to_string()))
            .collect(),
    };
    if let Some(n) = error_after {
        frames.truncate(n);
        let msg = "mock: upstream failed mid-stream";
        if format == Format::Responses {
            for (ev, p) in responses::failure(&a, 500, msg, n) {
                frames.push(responses::frame(&ev, &p.to_string()));
            }
            return sse_response(frames, delay);
        }
        frames.push(match format {
            Format::OpenAi | Format::Responses => {
                openai::frame(&openai::error(500, msg).to_string())
            }
            Format::Anthropic => anthropic::frame("error", &anthropic::error(529, msg).to_string()),
            Format::Gemini => gemini::frame(&gemini::error(500, msg).to_string()),
        });
    }
    if let Some(n) = header(h, "x-mock-stream-abort-after").and_then(|s| s.parse::<usize>().ok()) {
        return sse_abort_response(frames, n, delay);
    }
    sse_response(frames, delay)
}

/// The first `n` frames, then the connection breaks (no terminal event):
/// a provider dying mid-stream.
fn sse_abort_response(frames: Vec<String>, n: usize, delay_ms: u64) -> Response {
    let stream = futures_util::stream::unfold(
        (frames.into_iter().take(n), true, false),
        move |(mut it, first, failed)| async move {
            if failed {
                return None;
            }
            if delay_ms > 0 && !first {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            match it.next() {
                Some(f) => Some((Ok(Bytes::from(f)), (it, false, false))),
                None => Some((
                    Err(std::io::Error::other("mock: connection lost mid-stream")),
                    (it, false, true),
                )),
            }
        },
    );
    sse(Body::from_stream(stream))
}

/// A 200 event stream with `body`.
fn sse(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

pub fn sse_response(frames: Vec<String>, delay_ms: u64) -> Response {
    let stream = futures_util::stream::unfold(
        (frames.into_iter(), true),
        move |(mut it, first)| async move {
            let next = it.next()?;
            if delay_ms > 0 && !first {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Some((Ok::<Bytes, Infallible>(Bytes::from(next)), (it, false)))
        },
    );
    sse(Body::from_stream(stream))
}

/// Replay mode: the recorded provider answer of record `id`, and a log of
/// what this side sent.
fn replay_answer(
    state: &AppState,
    id: &str,
    side: &str,
    path: &str,
    query: &str,
    body: &[u8],
) -> Response {
    {
        let mut log = state.replay_log.lock().unwrap_or_else(|p| p.into_inner());
        if log.len() < MAX_REPLAY_LOG || log.contains_key(id) {
            let full = if query.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{query}")
            };
            let text = String::from_utf8_lossy(body);
            log.entry(id.to_string()).or_default().insert(
                side.to_string(),
                json!({"path": full, "body": sluice_replay::record::body_value(&text)}),
            );
        }
    }
    let Some(up) = state.replay.get(id).and_then(|r| r.upstream.as_ref()) else {
        return json_response(
            500,
            &json!({"error": {"message": format!("mock replay: no upstream exchange recorded for {id}")}}),
            &[],
        );
    };
    let r = &up.response;
    let frames = r.wire_frames();
    if r.events.is_some() {
        return sse_response(frames, 0);
    }
    let ct = r
        .headers
        .get("content-type")
        .cloned()
        .unwrap_or_else(|| "application/json".into());
    Response::builder()
        .status(r.status)
        .header("content-type", ct)
        .body(Body::from(frames.concat()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn control(state: &AppState, method: &Method, path: &str, query: &str) -> Response {
    match (method.as_str(), path) {
        ("GET", "/__mock/replay-log") => {
            let id = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("id="))
                .unwrap_or_default();
            let log = state.replay_log.lock().unwrap_or_else(|p| p.into_inner());
            json_response(200, &json!(log.get(id)), &[])
        }
        ("GET", "/__mock/health") => json_response(200, &json!({"ok": true}), &[]),
        ("GET", "/__mock/requests") => {
            let recent = state.recent.lock().unwrap_or_else(|p| p.into_inner());
            json_response(200, &json!(recent.iter().collect::<Vec<_>>()), &[])
        }
        ("DELETE", "/__mock/requests") => {
            state
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            json_response(200, &json!({"ok": true}), &[])
        }
        _ => json_response(404, &json!({"error": "unknown control path"}), &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_paths() {
        assert_eq!(classify("/v1/chat/completions").unwrap().0, Format::OpenAi);
        assert_eq!(
            classify("/openai/v1/chat/completions").unwrap().0,
            Format::OpenAi
        );
        assert_eq!(classify("/v1/messages").unwrap().0, Format::Anthropic);
        let (f, m, s) = classify("/v1beta/models/gemini-2.5-flash:streamGenerateContent").unwrap();
        assert_eq!(
            (f, m.as_deref(), s),
            (Format::Gemini, Some("gemini-2.5-flash"), true)
        );
        let (_, m, s) = classify(
            "/v1/projects/p/locations/us/publishers/google/models/gemini-pro:generateContent",
        )
        .unwrap();
        assert_eq!((m.as_deref(), s), (Some("gemini-pro"), false));
        assert!(classify("/v1/embeddings").is_none());
    }

    fn tool_answer() -> answer::Answer {
        answer::build(answer::AnswerInput {
            model: "m".into(),
            body_len: 40,
            chunks: 3,
            max_tokens: None,
            tools: vec![answer::OfferedTool {
                name: "get_weather".into(),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}),
            }],
            no_tool_call: false,
            parallel_tools: 1,
        })
    }

    #[test]
    fn openai_stream_tool_arguments_reassemble() {
        let a = tool_answer();
        let args: String = openai::stream_payloads(&a, true)
            .iter()
            .filter_map(|p| p.pointer("/choices/0/delta/tool_calls/0/function/arguments"))
            .filter_map(Value::as_str)
            .collect();
        let v: Value = serde_json::from_str(&args).unwrap();
        assert_eq!(v, json!({"city": "Paris", "days": 42}));
    }

    #[test]
    fn anthropic_stream_is_well_formed() {
        let a = tool_answer();
        let evs = anthropic::stream_events(&a);
        assert_eq!(evs.first().unwrap().0, "message_start");
        assert_eq!(evs.last().unwrap().0, "message_stop");
        let json: String = evs
            .iter()
            .filter_map(|(_, p)| p.pointer("/delta/partial_json"))
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap()["city"],
            "Paris"
        );
    }

    #[test]
    fn max_tokens_truncates_with_length_finish() {
        let a = answer::build(answer::AnswerInput {
            model: "m".into(),
            body_len: 4,
            chunks: 10,
            max_tokens: Some(3),
            tools: vec![],
            no_tool_call: false,
            parallel_tools: 1,
        });
        assert_eq!(a.text.len(), 3);
        assert_eq!(a.finish, answer::Finish::Length);
        assert_eq!(
            gemini::response(&a)["candidates"][0]["finishReason"],
            "MAX_TOKENS"
        );
    }
}
