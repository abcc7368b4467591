//! The admin API through its router on a loopback port, called with the
//! CLI's typed client: tokens, every resource's life cycle, and that a change
//! which would make the pushed configuration invalid writes nothing.

use std::sync::Arc;

use super::{router, AdminState};
use crate::api::*;
use crate::app::{test_app, App};
use crate::cli::Client;
use crate::store;

const RW: &str = "rw-token-0123456789";
const RO: &str = "ro-token-0123456789";

/// The router on 127.0.0.1:<free port>, on a runtime of its own thread.
fn serve(app: Arc<App>) -> String {
    let state = Arc::new(AdminState {
        app,
        rw_token: RW.into(),
        ro_token: Some(RO.into()),
    });
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, router(state)).await.unwrap();
        });
    });
    format!("http://{addr}")
}

fn setup() -> (tempfile::TempDir, Arc<App>, Client, Client) {
    let dir = tempfile::tempdir().unwrap();
    let (app, _rx) = test_app(dir.path());
    let base = serve(app.clone());
    (dir, app, Client::new(&base, RW), Client::new(&base, RO))
}

fn provider(name: &str) -> sluice_config::Provider {
    serde_json::from_value(serde_json::json!({
        "name": name, "kind": "openai", "cluster": "c", "host": "h", "auth": {"type": "none"}
    }))
    .unwrap()
}

fn target(provider: &str, model: &str) -> sluice_config::Target {
    serde_json::from_value(serde_json::json!({"provider": provider, "model": model})).unwrap()
}

#[test]
fn tokens_guard_every_resource() {
    let (_d, _app, rw, ro) = setup();
    let base = rw.base().to_string();
    let none = Client::new(&base, "");
    let wrong = Client::new(&base, "nope");
    assert!(none
        .get::<KeyList>("/v1/keys")
        .unwrap_err()
        .contains("admin token"));
    assert!(wrong.get::<Status>("/v1/status").is_err());
    // The read-only token reads, and is refused every change.
    ro.get::<KeyList>("/v1/keys").unwrap();
    ro.get::<Status>("/v1/status").unwrap();
    let e = ro
        .send::<_, KeyCreated>(
            "POST",
            "/v1/keys",
            &NewKey {
                name: "k".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.contains("read-only"), "{e}");
    // Health needs none.
    let h = ureq::get(&format!("{base}/healthz")).call().unwrap();
    assert_eq!(h.status().as_u16(), 200);
}

#[test]
fn a_key_is_shown_once_stored_as_a_hash_and_revoked() {
    let (_d, app, rw, _ro) = setup();
    let v0 = app.snapshot.borrow().version;
    let k: KeyCreated = rw
        .send(
            "POST",
            "/v1/keys",
            &NewKey {
                name: "team-a".into(),
                budget_usd: Some(5.0),
                rpm: Some(60),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(k.key.starts_with("sk-sluice-") && k.config_version > v0);
    let row = store::get_key(&app.store.lock(), &k.id).unwrap().unwrap();
    assert_eq!(row.sha256, sluice_config::hash_key(&k.key));
    // Listed without its hash, with its spend.
    let raw: serde_json::Value = rw.get("/v1/keys").unwrap();
    assert!(!raw.to_string().contains(&row.sha256));
    let list: KeyList = rw.get("/v1/keys").unwrap();
    assert_eq!(
        (
            list.keys[0].name.as_str(),
            list.keys[0].spend_usd,
            list.keys[0].rpm
        ),
        ("team-a", 0.0, Some(60))
    );
    // A key for a model that does not exist is refused.
    let e = rw
        .send::<_, KeyCreated>(
            "POST",
            "/v1/keys",
            &NewKey {
                name: "x".into(),
                models: vec!["nope".into()],
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.contains("unknown model 'nope'"), "{e}");
    let e = rw
        .send::<_, KeyCreated>(
            "POST",
            "/v1/keys",
            &NewKey {
                name: "x".into(),
                budget_period: Some("weekly".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
    assert!(e.contains("budget_period"), "{e}");
    let b: BudgetSet = rw
        .send(
            "PUT",
            &format!("/v1/keys/{}/budget", k.id),
            &SetBudget {
                usd: None,
                period: None,
            },
        )
        .unwrap();
    assert_eq!(b.budget_usd, None);
    let r: KeyRevoked = rw
        .send("POST", &format!("/v1/keys/{}/revoke", k.id), &())
        .unwrap();
    assert_eq!(r.status, "revoked");
    // Revoked keys are not pushed.
    let cfg: ConfigView = rw.get("/v1/config").unwrap();
    assert_eq!(cfg.config["keys"], serde_json::json!([]));
    let e = rw
        .send::<_, KeyRevoked>("POST", "/v1/keys/key_none/revoke", &())
        .unwrap_err();
    assert!(e.contains("no key"), "{e}");
}

#[test]
fn routes_are_published_and_an_invalid_change_writes_nothing() {
    let (_d, app, rw, _ro) = setup();
    let p: ProviderSet = rw
        .send("PUT", "/v1/providers/up", &provider("ignored-name"))
        .unwrap();
    assert_eq!(p.provider, "up");
    let m: ModelSet = rw
        .send(
            "PUT",
            "/v1/models/gpt",
            &ModelSpec {
                targets: vec![target("up", "gpt-4o")],
                retry: None,
                timeouts: None,
                cooldown: None,
            },
        )
        .unwrap();
    assert!(m.config_version > p.config_version);
    let models: ModelList = rw.get("/v1/models").unwrap();
    assert_eq!(models.models[0].targets[0].model, "gpt-4o");
    let providers: ProviderList = rw.get("/v1/providers").unwrap();
    assert_eq!(providers.providers[0].name, "up");
    // A model routed to a provider that does not exist: refused, not stored.
    let before = app.snapshot.borrow().version;
    let e = rw
        .send::<_, ModelSet>(
            "PUT",
            "/v1/models/broken",
            &ModelSpec {
                targets: vec![target("missing", "x")],
                retry: None,
                timeouts: None,
                cooldown: None,
            },
        )
        .unwrap_err();
    assert!(e.contains("would make the gateway config invalid"), "{e}");
    assert_eq!(store::list_models(&app.store.lock()).unwrap().len(), 1);
    assert_eq!(app.snapshot.borrow().version, before);
    // Nor can a provider of an unknown kind get in (the filter's compiler
    // says so).
    let mut bad = provider("x");
    bad.kind = "bedrock-nope".into();
    let e = rw
        .send::<_, ProviderSet>("PUT", "/v1/providers/x", &bad)
        .unwrap_err();
    assert!(e.contains("unknown provider kind"), "{e}");
    let d: Deleted = rw.delete("/v1/models/gpt").unwrap();
    assert_eq!(d.deleted, "gpt");
}

#[test]
fn settings_round_trip_under_their_names() {
    let (_d, _app, rw, _ro) = setup();
    let h: Setting<Vec<String>> = rw
        .send("PUT", "/v1/hosts", &vec!["llm.example.com".to_string()])
        .unwrap();
    assert!(h.config_version.is_some());
    let shown: Setting<Vec<String>> = rw.get("/v1/hosts").unwrap();
    assert_eq!(
        shown.value["hosts"],
        Some(vec!["llm.example.com".to_string()])
    );
    let cap = sluice_config::CaptureConfig {
        sample_rate: 0.5,
        min_per_stratum: 1,
        max_record_bytes: 1024,
    };
    let _: Setting<sluice_config::CaptureConfig> = rw.send("PUT", "/v1/capture", &cap).unwrap();
    let off: Setting<sluice_config::CaptureConfig> = rw.delete("/v1/capture").unwrap();
    assert_eq!(off.value["capture"], None);
    let g: Guardrails = rw.get("/v1/guardrails").unwrap();
    assert!(g.rules.is_empty());
}

#[test]
fn reports_are_typed_and_checked() {
    let (_d, _app, rw, _ro) = setup();
    let r: UsageReport = rw.get("/v1/usage?days=7&by=model").unwrap();
    assert!(r.rows.is_empty());
    let e = rw.get::<UsageReport>("/v1/usage?by=colour").unwrap_err();
    assert!(e.contains("by must be"), "{e}");
    let e = rw.get::<UsageReport>("/v1/usage?days=0").unwrap_err();
    assert!(e.contains("days"), "{e}");
    let s: Status = rw.get("/v1/status").unwrap();
    assert_eq!((s.ledger_rows, s.nodes.len()), (0, 0));
}

use sluice_config::Guardrails;
