//! Configuration parsing, validation and compilation (what `on_configure`
//! runs on every push): any bytes are rejected cleanly or compile.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = sluice_config::PluginConfig::from_json(data) {
        let _ = sluice_core::gateway::Gateway::new(cfg, |v| Some(format!("secret-{v}")));
    }
});
