//! The command line: one command enum for everything `sluice` does, and the
//! CLI commands as thin clients of the admin API — one file per resource,
//! mirroring `admin/`, reading the typed bodies of `crate::api`.

mod catalog;
mod keys;
mod policy;
mod reports;

use clap::{Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use catalog::{ModelsCmd, PricesCmd, ProvidersCmd};
pub use keys::{BudgetsCmd, KeysCmd};
pub use policy::{CaptureCmd, EndpointsCmd, GuardrailsCmd, HostsCmd, ShadowCmd};
pub use reports::UsageCmd;

#[derive(Parser)]
#[command(name = "sluice", version, about = "Sluice control plane and CLI")]
pub struct Cli {
    /// Admin API address (CLI commands).
    #[arg(
        long,
        env = "SLUICE_ADMIN_URL",
        default_value = "http://127.0.0.1:18001",
        global = true
    )]
    pub admin_url: String,
    /// Admin bearer token (CLI commands; `serve`: the read-write token).
    #[arg(
        long,
        env = "SLUICE_ADMIN_TOKEN",
        default_value = "",
        global = true,
        hide_env_values = true
    )]
    pub token: String,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the control plane: xDS (ECDS, CDS, SDS) and access-log gRPC, admin HTTP API.
    Serve(Box<crate::serve::ServeArgs>),
    #[command(subcommand)]
    Keys(KeysCmd),
    #[command(subcommand)]
    Budgets(BudgetsCmd),
    #[command(subcommand)]
    Models(ModelsCmd),
    #[command(subcommand)]
    Providers(ProvidersCmd),
    #[command(subcommand)]
    Prices(PricesCmd),
    #[command(subcommand)]
    Usage(UsageCmd),
    #[command(subcommand)]
    Guardrails(GuardrailsCmd),
    /// Traffic capture for replay baselines.
    #[command(subcommand)]
    Capture(CaptureCmd),
    /// The hosts the gateway serves on a shared listener.
    #[command(subcommand)]
    Hosts(HostsCmd),
    /// Online shadow comparison role of the pushed filter.
    #[command(subcommand)]
    Shadow(ShadowCmd),
    /// Provider endpoints passed through metered (moderations, images,
    /// audio, files, batches).
    #[command(subcommand)]
    Endpoints(EndpointsCmd),
    /// Connected Envoys, acked versions, NACKs, lost usage records.
    Status {
        #[arg(long)]
        json: bool,
    },
}

/// The admin API, typed.
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Client {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            // A fresh connection per call: a CLI makes a handful, and a
            // pooled one the server has just closed (it does after a
            // request whose body a handler did not read) fails the next
            // call with "Peer disconnected" — a flaky test, and a flaky
            // script.
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build()
            .into();
        Client {
            base: base.to_string(),
            token: token.to_string(),
            agent,
        }
    }

    /// The admin API's address.
    #[cfg(test)]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call; `body` is sent as JSON (`PUT`, `POST`).
    fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, String> {
        let url = format!("{}{}", self.base.trim_end_matches('/'), path);
        let auth = format!("Bearer {}", self.token);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            (m, b) => {
                let b = b.unwrap_or_default();
                let req = if m == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                req.header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(&b[..])
            }
        };
        let mut resp =
            resp.map_err(|e| format!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| format!("bad response from the admin API: {e}"))?;
        if status >= 400 {
            return Err(serde_json::from_str::<crate::api::ErrorBody>(&text)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("HTTP {status}")));
        }
        serde_json::from_str(&text).map_err(|e| format!("bad response from the admin API: {e}"))
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        self.call("GET", path, None)
    }

    pub fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        self.call("DELETE", path, None)
    }

    /// `PUT` or `POST` with a typed body.
    pub fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        self.call(method, path, Some(bytes))
    }

    /// `PUT` or `POST` of a file's bytes as they are (the server validates).
    pub fn send_raw<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        bytes: Vec<u8>,
    ) -> Result<T, String> {
        self.call(method, path, Some(bytes))
    }
}

/// Prints a value as JSON (the `--json` outputs and the `show` commands).
pub fn print_json<T: Serialize>(v: &T) -> Result<(), String> {
    println!("{}", serde_json::to_string(v).map_err(|e| e.to_string())?);
    Ok(())
}

pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let h: Vec<String> = headers.iter().map(|s| s.to_string()).collect();
    println!("{}", line(&h));
    for r in rows {
        println!("{}", line(r));
    }
}

/// An optional cell: `-` when absent.
pub fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn run(base: &str, token: &str, cmd: Command) -> Result<(), String> {
    let c = Client::new(base, token);
    match cmd {
        Command::Serve(_) => Err("serve is not a client command".into()),
        Command::Keys(k) => keys::run_keys(&c, k),
        Command::Budgets(b) => keys::run_budgets(&c, b),
        Command::Models(m) => catalog::run_models(&c, m),
        Command::Providers(p) => catalog::run_providers(&c, p),
        Command::Prices(p) => catalog::run_prices(&c, p),
        Command::Guardrails(g) => policy::run_guardrails(&c, g),
        Command::Capture(cap) => policy::run_capture(&c, cap),
        Command::Hosts(h) => policy::run_hosts(&c, h),
        Command::Shadow(s) => policy::run_shadow(&c, s),
        Command::Endpoints(e) => policy::run_endpoints(&c, e),
        Command::Usage(u) => reports::run_usage(&c, u),
        Command::Status { json } => reports::run_status(&c, json),
    }
}
