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

use crate::ipc::DEFAULT_SUBSCRIBER_QUEUE_BATCHES;

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

/// Largest accepted `max_event_sources`.
pub const MAX_EVENT_SOURCES: usize = 1 << 16;
/// Largest accepted `event_buffer_size` (events): 16 Mi events is gigabytes of queue.
pub const MAX_EVENT_BUFFER_SIZE: usize = 1 << 24;
/// Largest accepted `max_batch_size`.
pub const MAX_BATCH_SIZE: usize = 1 << 20;
/// Largest accepted `max_ipc_connections` (each holds a descriptor and a task).
pub const MAX_IPC_CONNECTIONS: usize = 65_536;
/// Largest accepted `subscriber_queue_batches`.
pub const MAX_SUBSCRIBER_QUEUE_BATCHES: usize = 1 << 20;
/// Largest accepted `max_frame_bytes` (the wire format's length prefix allows more,
/// but a peer must not make the collector buffer more than this per frame).
pub const MAX_FRAME_BYTES: usize = 64 << 20;
/// Largest accepted timeout or interval: a day.
pub const MAX_LONG_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Largest accepted `batch_timeout`: events must not sit in a batch longer than this.
pub const MAX_BATCH_TIMEOUT: Duration = Duration::from_secs(60);

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
    "metrics_addr",
    "kernel_bpf_stats",
    "enable_process_store",
    "process_table_max_entries",
    "process_exited_retention",
    "process_history_max_records",
    "process_history_max_age",
    "compute_executable_hashes",
    "executable_hash_max_bytes",
    "kernel_domains",
    "process_ring_bytes",
    "process_wakeup_bytes",
    "network_ring_bytes",
    "network_wakeup_bytes",
    "file_ring_bytes",
    "file_wakeup_bytes",
    "syscall_hooks",
    "kernel_poll_interval",
    "excluded_pids",
    "excluded_comms",
    "excluded_path_prefixes",
    "source_restart_limit",
    "source_restart_backoff",
    "export",
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
    /// Batches queued per IPC subscriber before its batches are dropped (default 1024).
    /// The queue absorbs a burst the subscriber cannot keep up with: 1024 batches of
    /// `max_batch_size` (100) events is about 100,000 events, 150 ms of a 650,000
    /// opens/s storm, at a few hundred bytes each, held only while a subscriber lags.
    /// Batches are shared, so lagging subscribers do not multiply it.
    pub subscriber_queue_batches: usize,
    /// Serve Prometheus metrics at `http://<metrics_addr>/metrics` and health at
    /// `/healthz` (default none; e.g. `127.0.0.1:9464`).
    pub metrics_addr: Option<String>,
    /// Turn on the kernel's BPF run-time statistics while the collector runs, so the
    /// metrics show what each kernel program costs (run count and time). Costs a few
    /// nanoseconds per program run, for every BPF program on the host (default false).
    pub kernel_bpf_stats: bool,
    /// Keep the process table in an embedded database under `data_dir` (default true).
    /// When on, a store that cannot be opened (a read-only or missing directory, a file
    /// in its place, another daemon holding it) stops the collector at start; turn it off
    /// to run without one.
    pub enable_process_store: bool,
    /// Rows of the live process table, live and exited together (default 65536;
    /// 1024..=4194304). Past it the oldest exited rows go first, counted.
    pub process_table_max_entries: usize,
    /// How long the process table keeps an exited process for `collector processes
    /// --exited` (default 10m; 1s..=24h).
    #[serde(with = "humantime_serde")]
    pub process_exited_retention: Duration,
    /// History rows (exec, exit) the process store keeps; the oldest go first (default
    /// 100000; 1000..=100000000).
    pub process_history_max_records: u64,
    /// Age past which the process store drops history rows (default 7days; 1m..=3650days).
    #[serde(with = "humantime_serde")]
    pub process_history_max_age: Duration,
    /// Fill `executable_hash` (SHA-256) of exec and snapshot events and of the process
    /// table and store (default false). Computed off the hot path by a bounded worker
    /// pool, cached per file version (device, inode, size, mtime, ctime): an event whose
    /// executable is not cached yet is sent without waiting, and its hash follows in the
    /// process table and the store.
    pub compute_executable_hashes: bool,
    /// Executables larger than this are not hashed (counted as failures; default 256 MiB,
    /// 4096..=17179869184).
    pub executable_hash_max_bytes: u64,
    /// Kernel domains to collect: `process`, `network`, `filesystem` (default all).
    pub kernel_domains: Vec<String>,
    /// Bytes of the process ring buffer: a power of two, at least the page size, at most
    /// 1 GiB (default 8 MiB).
    pub process_ring_bytes: u32,
    /// Pending bytes at which fork and exit records wake the process ring's reader (execs,
    /// credential changes and failed execs always wake it at once); 0 wakes on every
    /// record (default 256 KiB: a wakeup per record was most of the programs' cost).
    pub process_wakeup_bytes: u64,
    /// Bytes of the network ring buffer (default 8 MiB).
    pub network_ring_bytes: u32,
    /// Wakeup watermark of the network ring (default 64 KiB: a wakeup per connection cost
    /// a connect storm a third of its rate).
    pub network_wakeup_bytes: u64,
    /// Bytes of the filesystem ring buffer (default 32 MiB).
    pub file_ring_bytes: u32,
    /// Wakeup watermark of the filesystem ring: file events come in storms, so the reader
    /// wakes per 256 KiB and drains on its own timer below that (default 262144).
    pub file_wakeup_bytes: u64,
    /// Hooks of the syscall-based programs: `auto` (per-syscall tracepoints, raw
    /// sys_enter/sys_exit when tracefs cannot be had), `tracepoints`, `raw`, or `portable`
    /// (no reads of x86_64 saved registers, as on other architectures) (default auto).
    pub syscall_hooks: String,
    /// How often ring readers drain without a wakeup (default 10ms; at most 10s). A reader
    /// whose ring stayed empty for 10 of these parks: the programs then wake it at the
    /// next record, and it checks every 200 ms meanwhile.
    #[serde(with = "humantime_serde")]
    pub kernel_poll_interval: Duration,
    /// Process ids whose events the kernel drops (the collector is always excluded).
    pub excluded_pids: Vec<u32>,
    /// Task names (comm) whose events the kernel drops (1..=15 bytes each).
    pub excluded_comms: Vec<String>,
    /// Absolute path prefixes (at most 128 bytes) whose file events the kernel drops.
    pub excluded_path_prefixes: Vec<String>,
    /// Times a source that fails (start error or panic, or failing health checks) is
    /// restarted before it is left failed (default 5; 0 never restarts; at most 1000).
    pub source_restart_limit: u32,
    /// Wait before the first restart of a failed source, doubled for each next one up to
    /// 5 minutes (default 1s; at most 5 minutes).
    #[serde(with = "humantime_serde")]
    pub source_restart_backoff: Duration,
    /// Fleet export to NATS JetStream (default off); see [`ExportConfig`].
    pub export: ExportConfig,
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
            subscriber_queue_batches: DEFAULT_SUBSCRIBER_QUEUE_BATCHES,
            metrics_addr: None,
            kernel_bpf_stats: false,
            enable_process_store: true,
            compute_executable_hashes: false,
            executable_hash_max_bytes: 256 << 20,
            process_table_max_entries: 65_536,
            process_exited_retention: Duration::from_secs(600),
            process_history_max_records: 100_000,
            process_history_max_age: Duration::from_secs(7 * 24 * 3600),
            kernel_domains: vec!["process".into(), "network".into(), "filesystem".into()],
            process_ring_bytes: 8 << 20,
            process_wakeup_bytes: 256 << 10,
            network_ring_bytes: 8 << 20,
            network_wakeup_bytes: 64 << 10,
            file_ring_bytes: 32 << 20,
            file_wakeup_bytes: 256 << 10,
            syscall_hooks: "auto".into(),
            kernel_poll_interval: Duration::from_millis(10),
            excluded_pids: Vec::new(),
            excluded_comms: Vec::new(),
            excluded_path_prefixes: Vec::new(),
            source_restart_limit: 5,
            source_restart_backoff: Duration::from_secs(1),
            export: ExportConfig::default(),
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
    #[error("cannot load config")]
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
        /// Sets `source_restart_limit`.
        with_source_restart_limit => source_restart_limit: u32;
        /// Sets `source_restart_backoff`.
        with_source_restart_backoff => source_restart_backoff: Duration;
        /// Sets `compute_executable_hashes`.
        with_executable_hashes => compute_executable_hashes: bool;
        /// Sets `executable_hash_max_bytes`.
        with_executable_hash_max_bytes => executable_hash_max_bytes: u64;
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
        // Upper bounds: a value near the integer maximum must be refused here, naming the
        // field, not panic deep in the runtime (a semaphore's permit limit, an overflowing
        // `Instant + timeout` at shutdown). The bounds are far above any useful setting.
        let at_most = [
            (
                "max_event_sources",
                self.max_event_sources,
                MAX_EVENT_SOURCES,
            ),
            (
                "event_buffer_size",
                self.event_buffer_size,
                MAX_EVENT_BUFFER_SIZE,
            ),
            ("max_batch_size", self.max_batch_size, MAX_BATCH_SIZE),
            (
                "max_ipc_connections",
                self.max_ipc_connections,
                MAX_IPC_CONNECTIONS,
            ),
            (
                "subscriber_queue_batches",
                self.subscriber_queue_batches,
                MAX_SUBSCRIBER_QUEUE_BATCHES,
            ),
            ("max_frame_bytes", self.max_frame_bytes, MAX_FRAME_BYTES),
        ];
        for (field, value, max) in at_most {
            if value > max {
                return Err(ConfigError::Invalid {
                    field,
                    rule: "it must not exceed its upper bound",
                    value: format!("{value} (at most {max})"),
                });
            }
        }
        let durations = [
            ("shutdown_timeout", self.shutdown_timeout, MAX_LONG_DURATION),
            (
                "health_check_interval",
                self.health_check_interval,
                MAX_LONG_DURATION,
            ),
            ("startup_timeout", self.startup_timeout, MAX_LONG_DURATION),
            (
                "telemetry_interval",
                self.telemetry_interval,
                MAX_LONG_DURATION,
            ),
            ("batch_timeout", self.batch_timeout, MAX_BATCH_TIMEOUT),
            (
                "max_backpressure_wait",
                self.max_backpressure_wait,
                MAX_LONG_DURATION,
            ),
        ];
        for (field, value, max) in durations {
            if value > max {
                return Err(ConfigError::Invalid {
                    field,
                    rule: "it must not exceed its upper bound",
                    value: format!(
                        "{} (at most {})",
                        humantime_serde::re::humantime::format_duration(value),
                        humantime_serde::re::humantime::format_duration(max)
                    ),
                });
            }
        }
        if !(4096..=16 << 30).contains(&self.executable_hash_max_bytes) {
            return Err(invalid(
                "executable_hash_max_bytes",
                "it must be between 4096 and 17179869184",
                self.executable_hash_max_bytes,
            ));
        }
        if !(1024..=4 << 20).contains(&self.process_table_max_entries) {
            return Err(invalid(
                "process_table_max_entries",
                "it must be between 1024 and 4194304",
                self.process_table_max_entries,
            ));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600))
            .contains(&self.process_exited_retention)
        {
            return Err(invalid(
                "process_exited_retention",
                "it must be between 1s and 24h",
                self.process_exited_retention,
            ));
        }
        if !(1000..=100_000_000).contains(&self.process_history_max_records) {
            return Err(invalid(
                "process_history_max_records",
                "it must be between 1000 and 100000000",
                self.process_history_max_records,
            ));
        }
        if !(Duration::from_secs(60)..=Duration::from_secs(3650 * 24 * 3600))
            .contains(&self.process_history_max_age)
        {
            return Err(invalid(
                "process_history_max_age",
                "it must be between 1m and 3650days",
                self.process_history_max_age,
            ));
        }
        if self.source_restart_limit > 1000 {
            return Err(invalid(
                "source_restart_limit",
                "it must be at most 1000",
                self.source_restart_limit,
            ));
        }
        if self.source_restart_backoff.is_zero()
            || self.source_restart_backoff > Duration::from_secs(300)
        {
            return Err(invalid(
                "source_restart_backoff",
                "it must be above zero and at most 5m",
                self.source_restart_backoff,
            ));
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
        if let Some(addr) = &self.metrics_addr {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(invalid(
                    "metrics_addr",
                    "it must be an address and port, like 127.0.0.1:9464 or [::1]:9464",
                    addr,
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
        self.export.validate()?;
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
    ///
    /// `component_name` chooses the system and user files (`/etc/<component_name>/config.toml`,
    /// `$XDG_CONFIG_HOME/<component_name>/config.toml`), as the design says; it is read from
    /// the explicit file and the environment only, since it decides which other files count.
    pub fn load(explicit_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::from_figment(&Self::layered_figment(explicit_file)?)
    }

    /// The figment [`load`](Self::load) extracts from: use it with [`explain`](Self::explain)
    /// to say where each value came from.
    pub fn layered_figment(explicit_file: Option<&Path>) -> Result<Figment, ConfigError> {
        let explicit: Vec<PathBuf> = match explicit_file {
            Some(path) if !path.is_file() => {
                return Err(ConfigError::FileNotFound {
                    path: path.to_owned(),
                })
            }
            Some(path) => vec![path.to_owned()],
            None => Vec::new(),
        };
        let component: String = Self::figment_from(&explicit)
            .extract_inner("component_name")
            .unwrap_or_else(|_| CollectorConfig::default().component_name);
        if component.is_empty()
            || component == "."
            || component == ".."
            || component.contains('/')
            || component.contains('\0')
        {
            return Err(ConfigError::Invalid {
                field: "component_name",
                rule: "it must be usable as a directory name (it chooses /etc/<component_name>/)",
                value: format!("{component:?}"),
            });
        }
        let mut files = vec![Path::new("/etc").join(&component).join("config.toml")];
        files.extend(Self::user_config_path_for(&component));
        files.extend(explicit);
        Ok(Self::figment_from(&files))
    }

    /// The user file for `component`: `$XDG_CONFIG_HOME/<component>/config.toml`, or under
    /// `$HOME/.config`.
    pub fn user_config_path_for(component: &str) -> Option<PathBuf> {
        Self::user_config_path()
            .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
            .map(|base| base.join(component).join("config.toml"))
    }

    /// Every key of the effective configuration with its value (as TOML text) and where it
    /// came from (`default`, a file's path, or the environment variable), in key order.
    pub fn explain(figment: &Figment) -> Result<Vec<ConfigValueSource>, ConfigError> {
        let config = Self::from_figment(figment)?;
        let value = toml_value(&config);
        let mut rows = Vec::new();
        for key in FIELD_NAMES {
            let origin = match figment.find_metadata(key) {
                Some(meta) => match &meta.source {
                    Some(figment::Source::File(path)) => path.display().to_string(),
                    Some(_) | None if meta.name.contains("environment") => {
                        format!("environment {ENV_PREFIX}{}", key.to_ascii_uppercase())
                    }
                    // The only other layer is the built-in defaults (`Serialized`).
                    _ => "default".to_owned(),
                },
                None => "default".to_owned(),
            };
            let shown = value
                .get(*key)
                .map(|v| v.to_string())
                .unwrap_or_else(|| "(unset)".to_owned());
            rows.push(ConfigValueSource {
                key,
                value: shown,
                origin,
            });
        }
        Ok(rows)
    }
}

/// One row of [`CollectorConfig::explain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigValueSource {
    /// The key.
    pub key: &'static str,
    /// Its effective value, as TOML.
    pub value: String,
    /// Where it came from.
    pub origin: String,
}

fn toml_value(config: &CollectorConfig) -> std::collections::BTreeMap<String, toml::Value> {
    toml::Value::try_from(config)
        .ok()
        .and_then(|v| v.as_table().cloned())
        .map(|t| t.into_iter().collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Fleet export (issue 13): the `[export]` section, read by the `collector-export` crate.

/// Default subject template: one subject per host, domain and event kind.
pub const DEFAULT_EXPORT_SUBJECT: &str = "collector.{hostname}.{domain}.{kind}";

/// Placeholders a subject template may use.
pub const EXPORT_SUBJECT_PLACEHOLDERS: &[&str] =
    &["{hostname}", "{host_id}", "{domain}", "{kind}", "{source}"];

/// How each event is encoded in its NATS message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportPayload {
    /// One `collector.v1.Event` message of the IPC schema (`proto/collector.proto`).
    #[default]
    Protobuf,
    /// One JSON object, as `collector events` prints it (`docs/events.md`).
    Json,
}

/// The `[export]` section: where and how events leave the host for NATS JetStream.
///
/// Export is off while `nats_servers` is empty. Events go to an on-disk spool under
/// `data_dir/export-spool` first and leave it only once JetStream acknowledges them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportConfig {
    /// Server URLs (`nats://host:4222`, `tls://host:4222`); empty turns export off.
    pub nats_servers: Vec<String>,
    /// A `.creds` file (JWT and nkey seed), for decentralized auth.
    pub creds_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU...`).
    pub nkey_seed_file: Option<PathBuf>,
    /// User name, with `password`.
    pub user: Option<String>,
    /// Password of `user`.
    pub password: Option<String>,
    /// PEM file of the CA that signed the servers' certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate, with `tls_key_file`, for servers that verify clients.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: Option<PathBuf>,
    /// Refuse servers that do not speak TLS (default false; implied by a `tls://` URL).
    pub tls_required: bool,
    /// Subject of each message; placeholders `{hostname}`, `{host_id}`, `{domain}`,
    /// `{kind}`, `{source}` (default `collector.{hostname}.{domain}.{kind}`).
    pub subject_template: String,
    /// JetStream stream that stores the events (default `COLLECTOR`); created at start
    /// when missing.
    pub stream: String,
    /// Subjects the stream is created with (default `collector.>`).
    pub stream_subjects: Vec<String>,
    /// Payload encoding (default protobuf).
    pub payload: ExportPayload,
    /// Largest size of the spool on disk (default 1 GiB); when full, the oldest events
    /// are dropped and counted as `export_spool_full`.
    pub spool_max_bytes: u64,
    /// Most messages published and not yet acknowledged (default 8192).
    pub max_in_flight: usize,
    /// Most events packed into one message (default 1: one event per message). Above
    /// 1, the events of one pipeline batch that share a subject travel together (header
    /// `Collector-Events: N`, payload a `collector.v1.EventBatch` or JSON lines), which
    /// cuts the per-message cost on both ends; ids stay stable across resends.
    pub max_events_per_message: usize,
    /// JetStream's duplicate window of a stream this collector creates (default 2m):
    /// a message resent within it under the same id is stored once.
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long a publish waits for its acknowledgement (default 5s).
    #[serde(with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// This host's id in message ids (default: /etc/machine-id, else the hostname).
    pub host_id: Option<String>,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            nats_servers: Vec::new(),
            creds_file: None,
            nkey_seed_file: None,
            user: None,
            password: None,
            tls_ca_file: None,
            tls_cert_file: None,
            tls_key_file: None,
            tls_required: false,
            subject_template: DEFAULT_EXPORT_SUBJECT.to_owned(),
            stream: "COLLECTOR".to_owned(),
            stream_subjects: vec!["collector.>".to_owned()],
            payload: ExportPayload::Protobuf,
            spool_max_bytes: 1 << 30,
            max_in_flight: 8192,
            max_events_per_message: 1,
            duplicate_window: Duration::from_secs(120),
            ack_timeout: Duration::from_secs(5),
            host_id: None,
        }
    }
}

/// Largest accepted `export.max_events_per_message`.
pub const MAX_EVENTS_PER_MESSAGE: usize = 1000;

/// Smallest accepted `export.spool_max_bytes`.
pub const MIN_EXPORT_SPOOL_BYTES: u64 = 1 << 20;

impl ExportConfig {
    /// Whether export is configured at all.
    pub fn enabled(&self) -> bool {
        !self.nats_servers.is_empty()
    }

    /// Checks the section; the error names the field (`export.<field>`) and its rule.
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
        for url in &self.nats_servers {
            let scheme_ok = ["nats://", "tls://", "ws://", "wss://"]
                .iter()
                .any(|s| url.starts_with(s));
            let rest = url.split_once("://").map_or("", |(_, r)| r);
            if !scheme_ok || rest.is_empty() || rest.contains(char::is_whitespace) {
                return Err(invalid(
                    "export.nats_servers",
                    "each must be a URL like nats://host:4222 or tls://host:4222",
                    url,
                ));
            }
        }
        let auth = [
            self.creds_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.user.is_some(),
        ];
        if auth.iter().filter(|&&a| a).count() > 1 {
            return Err(invalid(
                "export.creds_file",
                "only one of creds_file, nkey_seed_file and user/password may be set",
                (&self.creds_file, &self.nkey_seed_file, &self.user),
            ));
        }
        if self.password.is_some() != self.user.is_some() {
            return Err(invalid(
                "export.password",
                "user and password must be set together",
                self.user.as_deref().unwrap_or("<no user>"),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(invalid(
                "export.tls_cert_file",
                "tls_cert_file and tls_key_file must be set together",
                (&self.tls_cert_file, &self.tls_key_file),
            ));
        }
        validate_subject_template(&self.subject_template)
            .map_err(|rule| invalid("export.subject_template", rule, &self.subject_template))?;
        let name_ok = !self.stream.is_empty()
            && self.stream.len() <= 255
            && !self
                .stream
                .contains(|c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'));
        if !name_ok {
            return Err(invalid(
                "export.stream",
                "it must be a JetStream stream name: 1-255 characters, no spaces, `.`, `*`, `>`, `/` or `\\`",
                &self.stream,
            ));
        }
        if self.stream_subjects.is_empty()
            || self
                .stream_subjects
                .iter()
                .any(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(invalid(
                "export.stream_subjects",
                "it must list at least one subject without spaces (e.g. collector.>)",
                &self.stream_subjects,
            ));
        }
        if self.spool_max_bytes < MIN_EXPORT_SPOOL_BYTES {
            return Err(invalid(
                "export.spool_max_bytes",
                "it must be at least 1 MiB (1048576)",
                self.spool_max_bytes,
            ));
        }
        if self.max_in_flight == 0 {
            return Err(invalid(
                "export.max_in_flight",
                "it must be at least 1",
                self.max_in_flight,
            ));
        }
        if !(1..=MAX_EVENTS_PER_MESSAGE).contains(&self.max_events_per_message) {
            return Err(invalid(
                "export.max_events_per_message",
                "it must be from 1 to 1000",
                self.max_events_per_message,
            ));
        }
        if self.duplicate_window.is_zero() || self.ack_timeout.is_zero() {
            return Err(invalid(
                "export.duplicate_window",
                "duplicate_window and ack_timeout must be longer than zero",
                (self.duplicate_window, self.ack_timeout),
            ));
        }
        if let Some(id) = &self.host_id {
            if id.is_empty() || id.contains(|c: char| c.is_whitespace() || c.is_control()) {
                return Err(invalid(
                    "export.host_id",
                    "it must be non-empty, without spaces",
                    id,
                ));
            }
        }
        Ok(())
    }
}

/// Why a subject template is unusable, or `Ok` when every `.`-separated token is a
/// literal NATS token or one of [`EXPORT_SUBJECT_PLACEHOLDERS`].
fn validate_subject_template(template: &str) -> Result<(), &'static str> {
    if template.is_empty() {
        return Err("it must not be empty");
    }
    for token in template.split('.') {
        if token.is_empty() {
            return Err("it must not have empty tokens (`..` or a leading/trailing `.`)");
        }
        if token.contains(['*', '>']) || token.contains(char::is_whitespace) {
            return Err("a published subject cannot hold wildcards (`*`, `>`) or spaces");
        }
        if token.contains('{') || token.contains('}') {
            let mut rest = token;
            while let Some(open) = rest.find('{') {
                let close = rest[open..].find('}').ok_or("a `{` has no closing `}`")?;
                let name = &rest[open..open + close + 1];
                if !EXPORT_SUBJECT_PLACEHOLDERS.contains(&name) {
                    return Err(
                        "placeholders are {hostname}, {host_id}, {domain}, {kind} and {source}",
                    );
                }
                rest = &rest[open + close + 1..];
            }
            if rest.contains('}') {
                return Err("a `}` has no opening `{`");
            }
        }
    }
    Ok(())
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
        assert_eq!(c.subscriber_queue_batches, 1024);
        c.validate().unwrap();
    }

    #[test]
    fn export_section_loads_from_a_file_and_each_rule_names_its_field() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[export]\nnats_servers = [\"nats://a:4222\", \"tls://b:4222\"]\nstream = \"FLEET\"\npayload = \"json\"\nduplicate_window = \"5m\"\n",
            )?;
            let config =
                CollectorConfig::from_figment(&CollectorConfig::figment_from(&["c.toml"])).unwrap();
            assert!(config.export.enabled());
            assert_eq!(config.export.stream, "FLEET");
            assert_eq!(config.export.payload, ExportPayload::Json);
            assert_eq!(config.export.duplicate_window, Duration::from_secs(300));
            assert_eq!(config.export.subject_template, DEFAULT_EXPORT_SUBJECT);
            jail.create_file("bad.toml", "[export]\nservers = [\"nats://a\"]\n")?;
            let err = CollectorConfig::from_figment(&CollectorConfig::figment_from(&["bad.toml"]))
                .unwrap_err();
            let err = crate::report(&err);
            assert!(err.contains("servers"), "{err}");
            Ok(())
        });
        assert!(!CollectorConfig::default().export.enabled());
        let base = ExportConfig {
            nats_servers: vec!["nats://127.0.0.1:4222".into()],
            ..ExportConfig::default()
        };
        base.validate().unwrap();
        let cases: Vec<(ExportConfig, &str)> = vec![
            (
                ExportConfig {
                    nats_servers: vec!["localhost:4222".into()],
                    ..base.clone()
                },
                "export.nats_servers",
            ),
            (
                ExportConfig {
                    user: Some("u".into()),
                    ..base.clone()
                },
                "export.password",
            ),
            (
                ExportConfig {
                    user: Some("u".into()),
                    password: Some("p".into()),
                    creds_file: Some("/c".into()),
                    ..base.clone()
                },
                "export.creds_file",
            ),
            (
                ExportConfig {
                    tls_cert_file: Some("/c.pem".into()),
                    ..base.clone()
                },
                "export.tls_cert_file",
            ),
            (
                ExportConfig {
                    subject_template: "collector.>".into(),
                    ..base.clone()
                },
                "export.subject_template",
            ),
            (
                ExportConfig {
                    subject_template: "a..b".into(),
                    ..base.clone()
                },
                "export.subject_template",
            ),
            (
                ExportConfig {
                    subject_template: "a.{host}.b".into(),
                    ..base.clone()
                },
                "export.subject_template",
            ),
            (
                ExportConfig {
                    subject_template: "a.{kind".into(),
                    ..base.clone()
                },
                "export.subject_template",
            ),
            (
                ExportConfig {
                    stream: "my.stream".into(),
                    ..base.clone()
                },
                "export.stream",
            ),
            (
                ExportConfig {
                    stream_subjects: vec![],
                    ..base.clone()
                },
                "export.stream_subjects",
            ),
            (
                ExportConfig {
                    spool_max_bytes: 1000,
                    ..base.clone()
                },
                "export.spool_max_bytes",
            ),
            (
                ExportConfig {
                    max_in_flight: 0,
                    ..base.clone()
                },
                "export.max_in_flight",
            ),
            (
                ExportConfig {
                    duplicate_window: Duration::ZERO,
                    ..base.clone()
                },
                "export.duplicate_window",
            ),
            (
                ExportConfig {
                    host_id: Some("a b".into()),
                    ..base.clone()
                },
                "export.host_id",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{field}: {err}");
            // Through the whole configuration too.
            let whole = CollectorConfig {
                export: config,
                ..CollectorConfig::default()
            };
            assert!(whole.validate().unwrap_err().to_string().contains(field));
        }
        let ok = ExportConfig {
            subject_template: "fleet.{host_id}.{source}-{kind}".into(),
            ..base
        };
        ok.validate().unwrap();
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
            // What an operator sees: the message and its cause, once each.
            let msg = crate::report(&err);
            assert!(msg.contains("event_bufer_size"), "{msg}");
            assert_eq!(msg.matches("unknown field").count(), 1, "{msg}");
            Ok(())
        });
    }

    #[test]
    fn bad_duration_in_env_is_an_error_naming_the_key() {
        Jail::expect_with(|jail| {
            jail.set_env("COLLECTOR_BATCH_TIMEOUT", "soon");
            let err = CollectorConfig::from_figment(&CollectorConfig::figment_from::<&str>(&[]))
                .unwrap_err();
            let msg = crate::report(&err).to_ascii_lowercase();
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

    /// Operator mistakes found by trying values near the integer maximum: each is refused
    /// at load with the field named, instead of panicking the daemon later.
    #[test]
    fn values_near_the_integer_maximum_are_refused_naming_the_field() {
        let cases = [
            (
                "event_buffer_size = 9223372036854775807",
                "event_buffer_size",
            ),
            (
                "max_ipc_connections = 9223372036854775807",
                "max_ipc_connections",
            ),
            (
                "max_event_sources = 9223372036854775807",
                "max_event_sources",
            ),
            (
                "subscriber_queue_batches = 9223372036854775807",
                "subscriber_queue_batches",
            ),
            ("max_frame_bytes = 9223372036854775807", "max_frame_bytes"),
            ("max_batch_size = 2000000", "max_batch_size"),
            ("shutdown_timeout = \"300000000000y\"", "shutdown_timeout"),
            ("health_check_interval = \"1000y\"", "health_check_interval"),
            ("startup_timeout = \"2d\"", "startup_timeout"),
            ("telemetry_interval = \"100y\"", "telemetry_interval"),
            ("batch_timeout = \"1h\"", "batch_timeout"),
        ];
        for (toml, field) in cases {
            Jail::expect_with(|jail| {
                jail.create_file("c.toml", toml)?;
                let err =
                    CollectorConfig::from_figment(&CollectorConfig::figment_from(&["c.toml"]))
                        .expect_err(toml);
                let text = err.to_string();
                assert!(text.contains(field), "{toml}: error `{text}` names {field}");
                Ok(())
            });
        }
        // The bounds themselves are accepted.
        let at_bounds = CollectorConfig {
            event_buffer_size: MAX_EVENT_BUFFER_SIZE,
            max_batch_size: MAX_BATCH_SIZE,
            max_ipc_connections: MAX_IPC_CONNECTIONS,
            shutdown_timeout: MAX_LONG_DURATION,
            ..CollectorConfig::default()
        };
        at_bounds.validate().unwrap();
    }

    /// Every key, set to a value other than its default, is written to a TOML file and
    /// loads back the same. The export credentials are exclusive, so the three kinds go
    /// through in three files.
    #[test]
    fn every_key_round_trips_through_a_file() {
        let export = ExportConfig {
            nats_servers: vec!["nats://a:4222".into(), "tls://b:4222".into()],
            creds_file: Some("/etc/collector/fleet.creds".into()),
            nkey_seed_file: None,
            user: None,
            password: None,
            tls_ca_file: Some("/etc/collector/ca.pem".into()),
            tls_cert_file: Some("/etc/collector/cert.pem".into()),
            tls_key_file: Some("/etc/collector/key.pem".into()),
            tls_required: true,
            subject_template: "fleet.{host_id}.{domain}.{kind}".into(),
            stream: "FLEET".into(),
            stream_subjects: vec!["fleet.>".into()],
            payload: ExportPayload::Json,
            spool_max_bytes: 2 << 20,
            max_in_flight: 7,
            max_events_per_message: 50,
            duplicate_window: Duration::from_secs(300),
            ack_timeout: Duration::from_millis(2500),
            host_id: Some("host-7".into()),
        };
        let config = CollectorConfig {
            max_event_sources: 9,
            event_buffer_size: 4096,
            shutdown_timeout: Duration::from_secs(12),
            health_check_interval: Duration::from_secs(7),
            startup_timeout: Duration::from_millis(2500),
            enable_debug_logging: true,
            max_batch_size: 250,
            batch_timeout: Duration::from_millis(40),
            backpressure_threshold: 0.5,
            max_backpressure_wait: Duration::from_millis(250),
            enable_telemetry: false,
            telemetry_interval: Duration::from_secs(5),
            component_name: "edr".into(),
            socket_path: "/run/edr/edr.sock".into(),
            data_dir: "/var/lib/edr".into(),
            max_ipc_connections: 8,
            max_frame_bytes: 65536,
            ipc_allowed_uids: vec![1000, 1001],
            ipc_allowed_gids: vec![27],
            socket_group: Some("4242".into()),
            subscriber_queue_batches: 32,
            metrics_addr: Some("127.0.0.1:9464".into()),
            kernel_bpf_stats: true,
            enable_process_store: false,
            kernel_domains: vec!["process".into()],
            process_ring_bytes: 1 << 20,
            process_wakeup_bytes: 0,
            network_ring_bytes: 1 << 21,
            network_wakeup_bytes: 4096,
            file_ring_bytes: 1 << 22,
            file_wakeup_bytes: 8192,
            syscall_hooks: "raw".into(),
            kernel_poll_interval: Duration::from_millis(25),
            excluded_pids: vec![1, 2],
            excluded_comms: vec!["sshd".into()],
            excluded_path_prefixes: vec!["/proc/".into(), "/sys/".into()],
            source_restart_limit: 2,
            source_restart_backoff: Duration::from_millis(1500),
            compute_executable_hashes: true,
            executable_hash_max_bytes: 1 << 20,
            process_table_max_entries: 4096,
            process_exited_retention: Duration::from_secs(90),
            process_history_max_records: 5000,
            process_history_max_age: Duration::from_secs(3600),
            export: export.clone(),
        };
        config.validate().expect("the test values are valid");
        let json = |c: &CollectorConfig| serde_json::to_value(c).unwrap();
        let (set, default) = (json(&config), json(&CollectorConfig::default()));
        for key in FIELD_NAMES {
            assert_ne!(
                set[key], default[key],
                "`{key}` must differ from its default"
            );
        }
        let nkey = CollectorConfig {
            export: ExportConfig {
                creds_file: None,
                nkey_seed_file: Some("/etc/collector/fleet.nk".into()),
                ..export.clone()
            },
            ..config.clone()
        };
        let password = CollectorConfig {
            export: ExportConfig {
                creds_file: None,
                user: Some("collector".into()),
                password: Some("secret".into()),
                ..export.clone()
            },
            ..config.clone()
        };
        let (e, d) = (
            serde_json::to_value(&export).unwrap(),
            serde_json::to_value(ExportConfig::default()).unwrap(),
        );
        for (key, value) in e.as_object().unwrap() {
            let elsewhere = [&nkey, &password]
                .iter()
                .any(|c| serde_json::to_value(&c.export).unwrap()[key] != d[key]);
            assert!(
                *value != d[key] || elsewhere,
                "`export.{key}` must differ from its default in one of the files"
            );
        }
        for config in [config, nkey, password] {
            let text = toml::to_string(&config).unwrap();
            Jail::expect_with(|jail| {
                jail.create_file("all.toml", &text)?;
                let loaded =
                    CollectorConfig::from_figment(&CollectorConfig::figment_from(&["all.toml"]))
                        .expect("the written file loads");
                assert_eq!(loaded, config, "{text}");
                Ok(())
            });
        }
    }

    /// The shipped example (`collector.example.toml`) loads, equals the defaults, and
    /// names every key, so an operator finds every setting in it.
    #[test]
    fn the_example_file_loads_and_covers_every_key() {
        const EXAMPLE: &str = include_str!("../../collector.example.toml");
        Jail::expect_with(|jail| {
            jail.create_file("example.toml", EXAMPLE)?;
            let loaded =
                CollectorConfig::from_figment(&CollectorConfig::figment_from(&["example.toml"]))
                    .expect("the example loads");
            assert_eq!(loaded, CollectorConfig::default());
            Ok(())
        });
        for key in FIELD_NAMES {
            assert!(
                EXAMPLE.lines().any(|l| {
                    l.trim_start_matches("# ").starts_with(&format!("{key} ="))
                        || l == format!("[{key}]")
                }),
                "collector.example.toml documents `{key}`"
            );
        }
    }

    /// `component_name` chooses the configuration files, and `explain` says where each
    /// value came from.
    #[test]
    fn component_name_chooses_the_files_and_explain_names_each_origin() {
        Jail::expect_with(|jail| {
            let dir = jail.directory().to_owned();
            jail.create_dir("xdg/edr")?;
            jail.create_file("xdg/edr/config.toml", "max_event_sources = 5")?;
            jail.create_dir("xdg/collector")?;
            jail.create_file("xdg/collector/config.toml", "max_event_sources = 7")?;
            jail.set_env("XDG_CONFIG_HOME", dir.join("xdg").display());
            jail.set_env("COLLECTOR_COMPONENT_NAME", "edr");
            jail.set_env("COLLECTOR_BATCH_TIMEOUT", "10ms");
            let figment = CollectorConfig::layered_figment(None).unwrap();
            let config = CollectorConfig::from_figment(&figment).unwrap();
            assert_eq!(
                config.max_event_sources, 5,
                "the edr user file, not collector's"
            );
            let rows = CollectorConfig::explain(&figment).unwrap();
            let row = |k: &str| rows.iter().find(|r| r.key == k).unwrap().clone();
            assert!(row("max_event_sources")
                .origin
                .ends_with("xdg/edr/config.toml"));
            assert_eq!(row("max_event_sources").value, "5");
            assert_eq!(
                row("batch_timeout").origin,
                "environment COLLECTOR_BATCH_TIMEOUT"
            );
            assert_eq!(row("event_buffer_size").origin, "default");
            assert_eq!(rows.len(), FIELD_NAMES.len());

            jail.set_env("COLLECTOR_COMPONENT_NAME", "../etc");
            let err = CollectorConfig::layered_figment(None).unwrap_err();
            assert!(err.to_string().contains("component_name"), "{err}");
            Ok(())
        });
    }
}
