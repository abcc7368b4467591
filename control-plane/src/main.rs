//! `sluice`: the Sluice control plane (`sluice serve`) and the CLI that
//! manages it through its admin API (`sluice keys create`, …). One command
//! enum (`cli::Command`); docs/architecture.md maps the modules.

mod admin;
mod als;
mod api;
mod app;
mod capture;
mod cli;
mod clusters;
mod config_build;
mod ingest;
mod pricing;
mod ratelimit;
mod sds;
mod serve;
mod shadow;
mod store;
mod xds;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let res = match cli.cmd {
        cli::Command::Serve(a) => serve::run(*a, cli.token),
        cmd => cli::run(&cli.admin_url, &cli.token, cmd),
    };
    if let Err(e) = res {
        eprintln!("sluice: {e}");
        std::process::exit(1);
    }
}
