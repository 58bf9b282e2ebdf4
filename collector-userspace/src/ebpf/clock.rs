//! Converts kernel timestamps (`bpf_ktime_get_boot_ns`, CLOCK_BOOTTIME) to wall-clock time.

use chrono::{DateTime, Utc};

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clocks exist on every Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// Maps CLOCK_BOOTTIME nanoseconds to UTC. Re-synchronize now and then ([`BootClock::resync`])
/// so wall-clock steps (NTP) are followed.
#[derive(Debug, Clone, Copy)]
pub struct BootClock {
    realtime_minus_boot_ns: i128,
}

impl BootClock {
    /// Reads both clocks now.
    pub fn new() -> Self {
        let boot = clock_ns(libc::CLOCK_BOOTTIME);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Self {
            realtime_minus_boot_ns: real - boot,
        }
    }

    /// Re-reads both clocks.
    pub fn resync(&mut self) {
        *self = Self::new();
    }

    /// Boot-time ns -> UTC.
    pub fn to_utc(&self, boot_ns: u64) -> DateTime<Utc> {
        let ns = i128::from(boot_ns) + self.realtime_minus_boot_ns;
        let secs = ns.div_euclid(1_000_000_000) as i64;
        let nanos = ns.rem_euclid(1_000_000_000) as u32;
        DateTime::from_timestamp(secs, nanos).unwrap_or_default()
    }
}

impl Default for BootClock {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_now_maps_to_wall_now() {
        let clock = BootClock::new();
        let boot = clock_ns(libc::CLOCK_BOOTTIME) as u64;
        let diff = (Utc::now() - clock.to_utc(boot)).num_milliseconds().abs();
        assert!(diff < 1000, "boot->wall conversion off by {diff} ms");
    }
}
