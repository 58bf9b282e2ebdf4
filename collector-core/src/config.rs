//! The collector's configuration ([`CollectorConfig`]): defaults, validation and layered
//! loading.
//!
//! Layers, lowest first (each later one overrides the keys it sets):
//!
//! 1. built-in defaults ([`CollectorConfig::default`]);
//! 2. the system file, `/etc/collector/config.toml`;
//! 3. the user file, `$XDG_CONFIG_HOME/collector/config.toml` (or `~/.config/...`);
//! 4. an explicit file (`--config PATH`), if given;
//! 5. environment variables `COLLECTOR_<FIELD>` (`COLLECTOR_BATCH_TIMEOUT=100ms`);
//! 6. programmatic overrides: the `with_*` setters, applied to the loaded value.
//!
//! Durations are human-readable in files and the environment (`"30s"`, `"100ms"`).
//! Unknown keys in a file are an error that names the key, since a mistyped key would
//! otherwise be silently ignored. The environment is read only for known field names, so
//! unrelated `COLLECTOR_*` variables (e.g. `COLLECTOR_REQUIRE_KERNEL`) do not interfere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// `socket_group` as text, also when a file or the environment gives a bare number
/// (`COLLECTOR_SOCKET_GROUP=4242` parses as one).
fn group_name_or_gid<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Group {
        Name(String),
        Gid(u32),
    }
    Ok(Option::<Group>::deserialize(d)?.map(|g| match g {
        Group::Name(name) => name,
        Group::Gid(gid) => gid.to_string(),
    }))
}

/// Whether `group` can name a group: a numeric gid, or a name as `groupadd` accepts it.
fn is_group_name_or_gid(group: &str) -> bool {
    if !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()) {
        return group.parse::<u32>().is_ok();
    }
    (1..=32).contains(&group.len())
        && !group.starts_with('-')
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Prefix of the environment variables that override configuration fields.
pub const ENV_PREFIX: &str = "COLLECTOR_";

/// The system-wide configuration file.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/collector/config.toml";

/// Smallest accepted `max_frame_bytes`: a frame must hold at least a status reply.
pub const MIN_FRAME_BYTES: usize = 1024;

/// Every field of [`CollectorConfig`], as its file key; environment variables are these
/// upper-cased behind [`ENV_PREFIX`].
pub const FIELD_NAMES: &[&str] = &[
    "max_event_sources",
    "event_buffer_size",
    "shutdown_timeout",
    "health_check_interval",
    "startup_timeout",
    "enable_debug_logging",
    "max_batch_size",
    "batch_timeout",
    "backpressure_threshold",
    "max_backpressure_wait",
    "enable_telemetry",
    "telemetry_interval",
    "component_name",
    "socket_path",
    "data_dir",
    "max_ipc_connections",
    "max_frame_bytes",
    "ipc_allowed_uids",
    "ipc_allowed_gids",
    "socket_group",
    "subscriber_queue_batches",
];

/// Configuration of a [`Collector`](crate::Collector) and the IPC server it hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Most sources that may be registered at once (default 16).
    pub max_event_sources: usize,
    /// Capacity, in events, of each source's channel and of the shared pipeline queue
    /// (default 1000).
    pub event_buffer_size: usize,
    /// How long shutdown waits for sources to stop before aborting them (default 30s).
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// How often every source's `health_check` runs (default 60s).
    #[serde(with = "humantime_serde")]
    pub health_check_interval: Duration,
    /// How long a source may take to come up (default 10s); see [`Collector`](crate::Collector).
    #[serde(with = "humantime_serde")]
    pub startup_timeout: Duration,
    /// Log at debug level (default false).
    pub enable_debug_logging: bool,
    /// Most events per batch handed to sinks (default 100).
    pub max_batch_size: usize,
    /// Longest the first event of a batch waits while more keep arriving (default 100ms).
    /// A batch is delivered at once when the input runs dry or it reaches
    /// `max_batch_size`, so on a quiet host events do not wait for this.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// Fill ratio of the shared queue (0 < r <= 1) above which the collector is under
    /// backpressure (default 0.8): sends then wait up to `max_backpressure_wait` for it to
    /// drain back to this level; below it they never wait.
    pub backpressure_threshold: f64,
    /// Longest a send into a pressured queue waits before the events are dropped and
    /// counted with reason `backpressure` (default 500ms).
    #[serde(with = "humantime_serde")]
    pub max_backpressure_wait: Duration,
    /// Log pipeline telemetry every `telemetry_interval` (default true).
    pub enable_telemetry: bool,
    /// Period of the telemetry log (default 30s).
    #[serde(with = "humantime_serde")]
    pub telemetry_interval: Duration,
    /// Name of this collector in logs and status (default `collector`).
    pub component_name: String,
    /// Unix socket the IPC server listens on (default `/run/collector/collector.sock`).
    pub socket_path: PathBuf,
    /// Directory for persistent state such as the event store (default `/var/lib/collector`).
    pub data_dir: PathBuf,
    /// Most concurrent IPC connections (default 64).
    pub max_ipc_connections: usize,
    /// Largest IPC frame accepted, in bytes (default 1 MiB).
    pub max_frame_bytes: usize,
    /// UIDs allowed to connect over IPC besides root and the collector's own (default none).
    pub ipc_allowed_uids: Vec<u32>,
    /// GIDs allowed to connect over IPC (default none).
    pub ipc_allowed_gids: Vec<u32>,
    /// Group (name or numeric gid) that owns the IPC socket (default none: the socket is
    /// 0600, owner only). When set, the socket is chowned to it and made 0660, and a socket
    /// directory the collector creates is 0750 with that group, so members can reach the
    /// socket; the peer checks (`ipc_allowed_uids` / `ipc_allowed_gids`) still decide who
    /// is served.
    #[serde(deserialize_with = "group_name_or_gid")]
    pub socket_group: Option<String>,
    /// Batches queued per IPC subscriber before its batches are dropped (default 256).
    pub subscriber_queue_batches: usize,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            max_event_sources: 16,
            event_buffer_size: 1000,
            shutdown_timeout: Duration::from_secs(30),
            health_check_interval: Duration::from_secs(60),
            startup_timeout: Duration::from_secs(10),
            enable_debug_logging: false,
            max_batch_size: 100,
            batch_timeout: Duration::from_millis(100),
            backpressure_threshold: 0.8,
            max_backpressure_wait: Duration::from_millis(500),
            enable_telemetry: true,
            telemetry_interval: Duration::from_secs(30),
            component_name: "collector".to_owned(),
            socket_path: PathBuf::from("/run/collector/collector.sock"),
            data_dir: PathBuf::from("/var/lib/collector"),
            max_ipc_connections: 64,
            max_frame_bytes: 1024 * 1024,
            ipc_allowed_uids: Vec::new(),
            ipc_allowed_gids: Vec::new(),
            socket_group: None,
            subscriber_queue_batches: 256,
        }
    }
}

/// Why a configuration could not be loaded or is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A field holds a value outside its allowed range.
    #[error("invalid config: `{field}` is {value}, but {rule}; fix it in the config file or `COLLECTOR_{env}`", env = field.to_ascii_uppercase())]
    Invalid {
        /// The field's key.
        field: &'static str,
        /// The rule it breaks.
        rule: &'static str,
        /// The offending value, rendered.
        value: String,
    },
    /// The explicitly requested configuration file does not exist.
    #[error("config file {} does not exist; pass an existing file or drop the option", path.display())]
    FileNotFound {
        /// The requested path.
        path: PathBuf,
    },
    /// A file or variable could not be parsed, or holds an unknown key. figment's message
    /// names the key and where it came from.
    #[error("cannot load config: {source}")]
    Load {
        /// The parse error.
        #[source]
        source: Box<figment::Error>,
    },
}

impl From<figment::Error> for ConfigError {
    fn from(source: figment::Error) -> Self {
        ConfigError::Load {
            source: Box::new(source),
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $setter:ident => $field:ident: $ty:ty;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $setter(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}

impl CollectorConfig {
    setters! {
        /// Sets `max_event_sources`.
        with_max_event_sources => max_event_sources: usize;
        /// Sets `event_buffer_size`.
        with_event_buffer_size => event_buffer_size: usize;
        /// Sets `shutdown_timeout`.
        with_shutdown_timeout => shutdown_timeout: Duration;
        /// Sets `health_check_interval`.
        with_health_check_interval => health_check_interval: Duration;
        /// Sets `startup_timeout`.
        with_startup_timeout => startup_timeout: Duration;
        /// Sets `enable_debug_logging`.
        with_debug_logging => enable_debug_logging: bool;
        /// Sets `max_batch_size`.
        with_max_batch_size => max_batch_size: usize;
        /// Sets `batch_timeout`.
        with_batch_timeout => batch_timeout: Duration;
        /// Sets `backpressure_threshold` (a fill ratio, `0 < r <= 1`).
        with_backpressure_threshold => backpressure_threshold: f64;
        /// Sets `max_backpressure_wait`.
        with_max_backpressure_wait => max_backpressure_wait: Duration;
        /// Sets `enable_telemetry`.
        with_telemetry => enable_telemetry: bool;
        /// Sets `telemetry_interval`.
        with_telemetry_interval => telemetry_interval: Duration;
        /// Sets `max_ipc_connections`.
        with_max_ipc_connections => max_ipc_connections: usize;
        /// Sets `max_frame_bytes`.
        with_max_frame_bytes => max_frame_bytes: usize;
        /// Sets `ipc_allowed_uids`.
        with_ipc_allowed_uids => ipc_allowed_uids: Vec<u32>;
        /// Sets `ipc_allowed_gids`.
        with_ipc_allowed_gids => ipc_allowed_gids: Vec<u32>;
        /// Sets `subscriber_queue_batches`.
        with_subscriber_queue_batches => subscriber_queue_batches: usize;
    }

    /// Sets `component_name`.
    #[must_use]
    pub fn with_component_name(mut self, value: impl Into<String>) -> Self {
        self.component_name = value.into();
        self
    }

    /// Sets `socket_path`.
    #[must_use]
    pub fn with_socket_path(mut self, value: impl Into<PathBuf>) -> Self {
        self.socket_path = value.into();
        self
    }

    /// Sets `socket_group` (a group name or a numeric gid).
    #[must_use]
    pub fn with_socket_group(mut self, value: impl Into<String>) -> Self {
        self.socket_group = Some(value.into());
        self
    }

    /// Sets `data_dir`.
    #[must_use]
    pub fn with_data_dir(mut self, value: impl Into<PathBuf>) -> Self {
        self.data_dir = value.into();
        self
    }

    /// Checks every field against its rule; the error names the first field that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(
            field: &'static str,
            rule: &'static str,
            value: impl std::fmt::Debug,
        ) -> ConfigError {
            ConfigError::Invalid {
                field,
                rule,
                value: format!("{value:?}"),
            }
        }
        let at_least_one = [
            ("max_event_sources", self.max_event_sources),
            ("event_buffer_size", self.event_buffer_size),
            ("max_batch_size", self.max_batch_size),
            ("max_ipc_connections", self.max_ipc_connections),
            ("subscriber_queue_batches", self.subscriber_queue_batches),
        ];
        for (field, value) in at_least_one {
            if value == 0 {
                return Err(invalid(field, "it must be at least 1", value));
            }
        }
        if self.max_batch_size > self.event_buffer_size {
            return Err(invalid(
                "max_batch_size",
                "it must not exceed event_buffer_size (a batch has to fit in the queue)",
                self.max_batch_size,
            ));
        }
        let positive = [
            ("shutdown_timeout", self.shutdown_timeout),
            ("health_check_interval", self.health_check_interval),
            ("startup_timeout", self.startup_timeout),
            ("batch_timeout", self.batch_timeout),
        ];
        for (field, value) in positive {
            if value.is_zero() {
                return Err(invalid(field, "it must be longer than zero", value));
            }
        }
        if self.enable_telemetry && self.telemetry_interval.is_zero() {
            return Err(invalid(
                "telemetry_interval",
                "it must be longer than zero while enable_telemetry is true",
                self.telemetry_interval,
            ));
        }
        if !(self.backpressure_threshold > 0.0 && self.backpressure_threshold <= 1.0) {
            return Err(invalid(
                "backpressure_threshold",
                "it must be a fill ratio above 0 and at most 1 (0.8 = 80% of the buffer)",
                self.backpressure_threshold,
            ));
        }
        if self.max_backpressure_wait > self.shutdown_timeout {
            return Err(invalid(
                "max_backpressure_wait",
                "it must not exceed shutdown_timeout",
                self.max_backpressure_wait,
            ));
        }
        if self.component_name.trim().is_empty() {
            return Err(invalid(
                "component_name",
                "it must not be empty",
                &self.component_name,
            ));
        }
        if self.socket_path.as_os_str().is_empty() {
            return Err(invalid(
                "socket_path",
                "it must not be empty",
                &self.socket_path,
            ));
        }
        if let Some(group) = &self.socket_group {
            if !is_group_name_or_gid(group) {
                return Err(invalid(
                    "socket_group",
                    "it must be a group name (letters, digits, `_`, `.`, `-`, not starting \
                     with `-`, at most 32 characters) or a numeric gid",
                    group,
                ));
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "it must not be empty", &self.data_dir));
        }
        if self.max_frame_bytes < MIN_FRAME_BYTES {
            return Err(invalid(
                "max_frame_bytes",
                "it must be at least 1024",
                self.max_frame_bytes,
            ));
        }
        Ok(())
    }

    /// Number of queued events at which a queue of `event_buffer_size` is under pressure.
    pub fn backpressure_threshold_events(&self) -> usize {
        let events = (self.event_buffer_size as f64 * self.backpressure_threshold).ceil();
        (events as usize).clamp(1, self.event_buffer_size.max(1))
    }

    /// The user configuration file: `$XDG_CONFIG_HOME/collector/config.toml`, or
    /// `$HOME/.config/collector/config.toml`; `None` when neither variable is set.
    pub fn user_config_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|home| PathBuf::from(home).join(".config"))
            })?;
        Some(base.join("collector").join("config.toml"))
    }

    /// The layered configuration: defaults < each of `files` in order (missing files are
    /// skipped) < `COLLECTOR_<FIELD>` environment variables.
    ///
    /// [`load`](Self::load) calls this with the standard paths; tests pass their own.
    pub fn figment_from<P: AsRef<Path>>(files: &[P]) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(CollectorConfig::default()));
        // A missing layer is normal (most hosts have no system file); an unreadable or
        // malformed one is an error, reported by `extract`.
        for file in files.iter().map(AsRef::as_ref).filter(|f| f.exists()) {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment.merge(Env::prefixed(ENV_PREFIX).only(FIELD_NAMES))
    }

    /// Extracts and validates a configuration from `figment`.
    pub fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let config: CollectorConfig = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Loads the configuration from the system file, the user file, `explicit_file` (which
    /// must exist when given) and the environment, then validates it. Apply programmatic
    /// overrides with the `with_*` setters and call [`validate`](Self::validate) again.
    pub fn load(explicit_file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut files = vec![PathBuf::from(SYSTEM_CONFIG_PATH)];
        files.extend(Self::user_config_path());
        if let Some(path) = explicit_file {
            if !path.is_file() {
                return Err(ConfigError::FileNotFound {
                    path: path.to_owned(),
                });
            }
            files.push(path.to_owned());
        }
        Self::from_figment(&Self::figment_from(&files))
    }
}

#[cfg(test)]
// figment's `Jail` closures must return `figment::Error`, which is large; not ours to shrink.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn defaults_are_the_documented_ones_and_valid() {
        let c = CollectorConfig::default();
        assert_eq!(c.max_event_sources, 16);
        assert_eq!(c.event_buffer_size, 1000);
        assert_eq!(c.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(c.health_check_interval, Duration::from_secs(60));
        assert_eq!(c.startup_timeout, Duration::from_secs(10));
        assert!(!c.enable_debug_logging);
        assert_eq!(c.max_batch_size, 100);
        assert_eq!(c.batch_timeout, Duration::from_millis(100));
        assert_eq!(c.backpressure_threshold_events(), 800);
        assert_eq!(c.max_backpressure_wait, Duration::from_millis(500));
        assert!(c.enable_telemetry);
        assert_eq!(c.telemetry_interval, Duration::from_secs(30));
        assert_eq!(c.max_frame_bytes, 1 << 20);
        assert_eq!(c.subscriber_queue_batches, 256);
        c.validate().unwrap();
    }

    #[test]
    fn field_names_cover_every_serialized_field() {
        let value = serde_json::to_value(CollectorConfig::default()).unwrap();
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut names = FIELD_NAMES.to_vec();
        keys.sort_unstable();
        names.sort_unstable();
        assert_eq!(keys, names);
    }

    #[test]
    fn socket_group_loads_from_files_and_the_environment() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "socket_group = \"collector\"")?;
            let figment = CollectorConfig::figment_from(&["c.toml"]);
            let config = CollectorConfig::from_figment(&figment).unwrap();
            assert_eq!(config.socket_group.as_deref(), Some("collector"));
            // A numeric gid from the environment parses as a number; it must still load.
            jail.set_env("COLLECTOR_SOCKET_GROUP", "4242");
            let figment = CollectorConfig::figment_from(&["c.toml"]);
            let config = CollectorConfig::from_figment(&figment).unwrap();
            assert_eq!(config.socket_group.as_deref(), Some("4242"));
            Ok(())
        });
    }

    #[test]
    fn precedence_is_system_then_user_then_explicit_then_env_then_setters() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "system.toml",
                "event_buffer_size = 2000\nmax_batch_size = 50\nbatch_timeout = \"1s\"\ncomponent_name = \"sys\"",
            )?;
            jail.create_file(
                "user.toml",
                "max_batch_size = 60\nbatch_timeout = \"250ms\"",
            )?;
            jail.create_file(
                "explicit.toml",
                "batch_timeout = \"300ms\"\nshutdown_timeout = \"5s\"",
            )?;
            jail.set_env("COLLECTOR_SHUTDOWN_TIMEOUT", "7s");
            jail.set_env("COLLECTOR_IPC_ALLOWED_UIDS", "[1000, 1001]");
            // Not a config field: must be ignored, not rejected.
            jail.set_env("COLLECTOR_REQUIRE_KERNEL", "1");

            let figment = CollectorConfig::figment_from(&[
                "system.toml",
                "missing.toml",
                "user.toml",
                "explicit.toml",
            ]);
            let config = CollectorConfig::from_figment(&figment).unwrap();
            assert_eq!(config.event_buffer_size, 2000, "system file");
            assert_eq!(config.component_name, "sys", "system file");
            assert_eq!(config.max_batch_size, 60, "user overrides system");
            assert_eq!(
                config.batch_timeout,
                Duration::from_millis(300),
                "explicit overrides user"
            );
            assert_eq!(
                config.shutdown_timeout,
                Duration::from_secs(7),
                "env overrides files"
            );
            assert_eq!(config.ipc_allowed_uids, vec![1000, 1001]);
            assert_eq!(config.max_event_sources, 16, "default kept");

            let config = config.with_shutdown_timeout(Duration::from_secs(9));
            assert_eq!(
                config.shutdown_timeout,
                Duration::from_secs(9),
                "setter overrides env"
            );
            Ok(())
        });
    }

    #[test]
    fn load_uses_xdg_user_file_and_rejects_missing_explicit_file() {
        Jail::expect_with(|jail| {
            let dir = jail.directory().to_owned();
            jail.create_dir("xdg/collector")?;
            jail.create_file("xdg/collector/config.toml", "max_event_sources = 3")?;
            jail.set_env("XDG_CONFIG_HOME", dir.join("xdg").display());
            jail.set_env("COLLECTOR_BATCH_TIMEOUT", "100ms");
            jail.set_env("COLLECTOR_EVENT_BUFFER_SIZE", "4096");
            // /etc/collector/config.toml does not exist on a build machine; skip the
            // assertion on user-file values if an administrator installed one.
            let system_exists = Path::new(SYSTEM_CONFIG_PATH).exists();
            let config = CollectorConfig::load(None).unwrap();
            if !system_exists {
                assert_eq!(config.max_event_sources, 3);
            }
            assert_eq!(config.event_buffer_size, 4096);

            jail.create_file("explicit.toml", "max_event_sources = 4")?;
            let config = CollectorConfig::load(Some(&dir.join("explicit.toml"))).unwrap();
            assert_eq!(config.max_event_sources, 4);

            let err = CollectorConfig::load(Some(&dir.join("nope.toml"))).unwrap_err();
            assert!(matches!(err, ConfigError::FileNotFound { .. }), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        Jail::expect_with(|jail| {
            jail.create_file("c.toml", "event_bufer_size = 10")?;
            let err = CollectorConfig::from_figment(&CollectorConfig::figment_from(&["c.toml"]))
                .unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("event_bufer_size"), "{msg}");
            Ok(())
        });
    }

    #[test]
    fn bad_duration_in_env_is_an_error_naming_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("COLLECTOR_BATCH_TIMEOUT", "soon");
            let err = CollectorConfig::from_figment(&CollectorConfig::figment_from::<&str>(&[]))
                .unwrap_err();
            let msg = err.to_string().to_ascii_lowercase();
            assert!(
                msg.contains("batch_timeout") && msg.contains("soon"),
                "{msg}"
            );
            Ok(())
        });
    }

    #[test]
    fn validation_errors_name_field_and_rule() {
        let base = CollectorConfig::default;
        let cases: Vec<(CollectorConfig, &str)> = vec![
            (base().with_max_event_sources(0), "max_event_sources"),
            (base().with_event_buffer_size(0), "event_buffer_size"),
            (base().with_max_batch_size(0), "max_batch_size"),
            (base().with_max_batch_size(1001), "max_batch_size"),
            (base().with_max_ipc_connections(0), "max_ipc_connections"),
            (
                base().with_subscriber_queue_batches(0),
                "subscriber_queue_batches",
            ),
            (
                base().with_shutdown_timeout(Duration::ZERO),
                "shutdown_timeout",
            ),
            (
                base().with_health_check_interval(Duration::ZERO),
                "health_check_interval",
            ),
            (
                base().with_startup_timeout(Duration::ZERO),
                "startup_timeout",
            ),
            (base().with_batch_timeout(Duration::ZERO), "batch_timeout"),
            (
                base().with_telemetry_interval(Duration::ZERO),
                "telemetry_interval",
            ),
            (
                base().with_backpressure_threshold(0.0),
                "backpressure_threshold",
            ),
            (
                base().with_backpressure_threshold(1.5),
                "backpressure_threshold",
            ),
            (
                base().with_backpressure_threshold(f64::NAN),
                "backpressure_threshold",
            ),
            (
                base().with_max_backpressure_wait(Duration::from_secs(31)),
                "max_backpressure_wait",
            ),
            (base().with_component_name(" "), "component_name"),
            (base().with_socket_path(""), "socket_path"),
            (base().with_data_dir(""), "data_dir"),
            (base().with_socket_group(""), "socket_group"),
            (base().with_socket_group("-wheel"), "socket_group"),
            (base().with_socket_group("a b"), "socket_group"),
            (base().with_socket_group("x".repeat(33)), "socket_group"),
            (base().with_socket_group("99999999999"), "socket_group"),
            (base().with_max_frame_bytes(100), "max_frame_bytes"),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(ConfigError::Invalid { field: f, rule, .. }) => {
                    assert_eq!(f, field);
                    assert!(!rule.is_empty());
                    let msg = config.validate().unwrap_err().to_string();
                    assert!(msg.contains(field) && msg.contains(rule), "{msg}");
                }
                other => panic!("{field}: expected Invalid, got {other:?}"),
            }
        }
        for ok in ["collector", "svc_agents.v2", "4242", "0"] {
            base().with_socket_group(ok).validate().unwrap();
        }
        assert_eq!(CollectorConfig::default().socket_group, None);
        // Telemetry interval only matters while telemetry is on.
        base()
            .with_telemetry(false)
            .with_telemetry_interval(Duration::ZERO)
            .validate()
            .unwrap();
    }
}
