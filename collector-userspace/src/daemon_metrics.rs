//! What `collector run` adds to the runtime's metrics: the collector's own CPU time and
//! resident memory, and what each kernel program costs the host (run count and run time
//! from the kernel's BPF statistics), so an operator sees the collector's whole bill.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use collector_core::metrics::{encode_classic, render_prometheus};
use collector_core::StatusSnapshot;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::ebpf::KernelPrograms;
use crate::metrics_server::MetricsSource;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProgramLabel {
    program: String,
}

/// The daemon's metrics: the runtime's status plus its own cost.
pub struct DaemonMetrics {
    status: crate::export::StatusWithExport,
    programs: Option<Arc<KernelPrograms>>,
}

impl DaemonMetrics {
    /// Metrics of the collector (and its exporter) behind `status`, with the cost of
    /// `programs` when the kernel programs run.
    pub fn new(
        status: crate::export::StatusWithExport,
        programs: Option<Arc<KernelPrograms>>,
    ) -> Self {
        Self { status, programs }
    }
}

impl MetricsSource for DaemonMetrics {
    fn status(&self) -> StatusSnapshot {
        self.status.snapshot()
    }

    fn render(&self, status: &StatusSnapshot) -> String {
        let mut text = render_prometheus(status);
        let mut registry = Registry::with_prefix("collector");
        if let Some((cpu, rss)) = crate::procfs::own_usage() {
            let cpu_seconds = Gauge::<f64, AtomicU64>::default();
            cpu_seconds.set(cpu);
            registry.register(
                "process_cpu_seconds",
                "CPU time (user + system) the collector process has used",
                cpu_seconds,
            );
            let resident = Gauge::<i64>::default();
            resident.set(i64::try_from(rss).unwrap_or(i64::MAX));
            registry.register(
                "process_resident_memory_bytes",
                "Resident memory of the collector process (includes mapped ring buffers)",
                resident,
            );
        }
        if let Some(programs) = &self.programs {
            let runs = Family::<ProgramLabel, Counter<u64, AtomicU64>>::default();
            let time = Family::<ProgramLabel, Counter<u64, AtomicU64>>::default();
            for cost in programs.program_costs() {
                let label = ProgramLabel {
                    program: cost.program,
                };
                runs.get_or_create(&label).inc_by(cost.run_count);
                time.get_or_create(&label).inc_by(cost.run_time_ns);
            }
            registry.register(
                "kernel_program_runs",
                "Times each kernel program ran (counted while BPF statistics are on: kernel_bpf_stats)",
                runs,
            );
            registry.register(
                "kernel_program_run_time_nanoseconds",
                "Nanoseconds each kernel program ran, in all (while BPF statistics are on)",
                time,
            );
        }
        text.push_str(&encode_classic(&registry));
        text
    }
}
