//! Kernel-side diagnostics: aya-log records forwarded to `tracing`.

use std::sync::Arc;
use std::time::Duration;

use super::loader::KernelPrograms;

/// Forwards aya-log records (which use the `log` crate) to `tracing`.
struct LogBridge;

impl log::Log for LogBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args().to_string();
        match record.level() {
            log::Level::Error => tracing::error!(target: "collector::kernel", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "collector::kernel", "{msg}"),
            log::Level::Info => tracing::info!(target: "collector::kernel", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "collector::kernel", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "collector::kernel", "{msg}"),
        }
    }
    fn flush(&self) {}
}

pub(super) fn log_bridge() -> &'static dyn log::Log {
    static BRIDGE: LogBridge = LogBridge;
    &BRIDGE
}

impl KernelPrograms {
    pub(super) fn spawn_log_reader(self: &Arc<Self>) {
        // aya-log records are rare (diagnostics off the hot path); flushing them on a
        // slow timer keeps the logger's map drained without a dedicated wakeup.
        let has_logger = self.logger.lock().map(|l| l.is_some()).unwrap_or(false);
        if !has_logger || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let Some(programs) = weak.upgrade() else {
                    return;
                };
                if let Ok(mut logger) = programs.logger.lock() {
                    if let Some(logger) = logger.as_mut() {
                        logger.flush();
                    }
                };
            }
        });
    }

    /// Whether kernel-side diagnostics (aya-log) reach this process's log.
    pub fn kernel_logging(&self) -> bool {
        self.logger.lock().map(|l| l.is_some()).unwrap_or(false)
    }
}
