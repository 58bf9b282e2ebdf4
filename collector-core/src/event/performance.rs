use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{rfc3339_nanos, SourceName};

/// Kind of a performance event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PerformanceEventKind {
    /// One sampled metric value.
    Metric,
}

impl PerformanceEventKind {
    /// JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metric => "metric",
        }
    }
}

/// A sampled metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerformanceEvent {
    /// Always `metric`.
    pub kind: PerformanceEventKind,
    /// When it was sampled.
    #[serde(with = "rfc3339_nanos")]
    pub timestamp: DateTime<Utc>,
    /// Process the metric is about (0 for host-wide).
    pub pid: u32,
    /// Source name.
    pub source: SourceName,
    /// Metric name (`cpu_usage`, `memory_rss`, ...).
    pub metric_name: String,
    /// Value.
    pub value: f64,
    /// Unit (`percent`, `bytes`, ...).
    pub unit: String,
    /// What was measured (`host`, a process name, ...).
    pub component: String,
}
