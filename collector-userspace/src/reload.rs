//! Configuration reload on SIGHUP: the layered configuration is loaded again; what can
//! change live is applied, what needs a restart is named, and a file that does not load
//! or validate leaves the running configuration as it was, saying why.

use std::path::PathBuf;

use collector_core::config::FIELD_NAMES;
use collector_core::CollectorConfig;

use crate::ebpf::{Exclusions, KernelPrograms};
use tokio_util::sync::CancellationToken;

/// Keys applied without a restart.
pub const LIVE_KEYS: &[&str] = &["enable_debug_logging"];

/// Keys applied without a restart to kernel programs loaded with live exclusions (the
/// daemon's); without kernel programs they need a restart.
pub const KERNEL_LIVE_KEYS: &[&str] =
    &["excluded_pids", "excluded_comms", "excluded_path_prefixes"];

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// Keys that changed and were applied.
    pub applied: Vec<&'static str>,
    /// Keys that changed but only take effect after a restart.
    pub need_restart: Vec<&'static str>,
}

fn value_of(config: &CollectorConfig, key: &str) -> Option<serde_json::Value> {
    serde_json::to_value(config).ok()?.get(key).cloned()
}

/// Compares `running` with `loaded`, applies the live keys to `running` (and to the
/// process, such as the log level, and to `kernel`'s exclusion maps), and says what
/// else changed.
pub fn apply(
    running: &mut CollectorConfig,
    loaded: &CollectorConfig,
    kernel: Option<&KernelPrograms>,
) -> ReloadOutcome {
    let mut outcome = ReloadOutcome::default();
    let mut exclusions_changed = Vec::new();
    for &key in FIELD_NAMES {
        if value_of(running, key) == value_of(loaded, key) {
            continue;
        }
        if LIVE_KEYS.contains(&key) {
            outcome.applied.push(key);
        } else if KERNEL_LIVE_KEYS.contains(&key) && kernel.is_some() {
            exclusions_changed.push(key);
        } else {
            outcome.need_restart.push(key);
        }
    }
    if let (Some(kernel), false) = (kernel, exclusions_changed.is_empty()) {
        let new = Exclusions {
            pids: loaded.excluded_pids.clone(),
            comms: loaded.excluded_comms.clone(),
            path_prefixes: loaded.excluded_path_prefixes.clone(),
        };
        match kernel.set_exclusions(new) {
            Ok(()) => {
                running.excluded_pids = loaded.excluded_pids.clone();
                running.excluded_comms = loaded.excluded_comms.clone();
                running.excluded_path_prefixes = loaded.excluded_path_prefixes.clone();
                outcome.applied.extend(exclusions_changed);
            }
            Err(e) => {
                tracing::warn!(
                    "SIGHUP: the kernel exclusions stay as they were: {:#}",
                    anyhow::Error::from(e)
                );
                outcome.need_restart.extend(exclusions_changed);
            }
        }
    }
    if running.enable_debug_logging != loaded.enable_debug_logging {
        running.enable_debug_logging = loaded.enable_debug_logging;
        if !crate::logging::set_debug(loaded.enable_debug_logging) {
            tracing::info!("enable_debug_logging changed, but COLLECTOR_LOG sets the log filter");
        }
    }
    outcome
}

/// Reloads on every SIGHUP until `shutdown`. `overrides` re-applies what the command line
/// set (it wins over files, as at start).
pub fn spawn(
    explicit_file: Option<PathBuf>,
    mut running: CollectorConfig,
    overrides: impl Fn(&mut CollectorConfig) + Send + 'static,
    kernel: Option<std::sync::Arc<KernelPrograms>>,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tracing::info!("SIGHUP reloads the configuration");
    Ok(tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hangup.recv() => if got.is_none() { return },
            }
            let loaded = CollectorConfig::load(explicit_file.as_deref()).and_then(|mut c| {
                overrides(&mut c);
                c.validate().map(|()| c)
            });
            match loaded {
                Err(e) => tracing::warn!(
                    "SIGHUP: keeping the running configuration, the new one is not usable: {}",
                    collector_core::Report(&e)
                ),
                Ok(loaded) => {
                    let outcome = apply(&mut running, &loaded, kernel.as_deref());
                    tracing::info!(
                        applied = ?outcome.applied,
                        need_restart = ?outcome.need_restart,
                        "SIGHUP: configuration reloaded{}",
                        if outcome.need_restart.is_empty() {
                            ""
                        } else {
                            "; restart the collector for the keys in need_restart"
                        }
                    );
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_keys_apply_and_the_rest_are_named_for_restart() {
        let mut running = CollectorConfig::default();
        let loaded = CollectorConfig {
            enable_debug_logging: true,
            max_batch_size: 50,
            ..CollectorConfig::default()
        };
        let outcome = apply(&mut running, &loaded, None);
        assert_eq!(outcome.applied, ["enable_debug_logging"]);
        assert_eq!(outcome.need_restart, ["max_batch_size"]);
        assert!(running.enable_debug_logging);
        assert_eq!(
            running.max_batch_size, 100,
            "restart-only keys are not applied"
        );
        let same = running.clone();
        assert_eq!(apply(&mut running, &same, None), ReloadOutcome::default());
        let excluding = CollectorConfig {
            excluded_path_prefixes: vec!["/tmp/".into()],
            ..running.clone()
        };
        assert_eq!(
            apply(&mut running, &excluding, None).need_restart,
            ["excluded_path_prefixes"],
            "without kernel programs an exclusion waits for a restart"
        );
    }
}
