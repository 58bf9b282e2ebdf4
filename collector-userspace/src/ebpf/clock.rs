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
        // Every event's timestamp comes through here: 64-bit division when the sum fits
        // (it always does for real clocks, until 2262), 128-bit otherwise.
        let (secs, nanos) = match i64::try_from(boot_ns)
            .ok()
            .zip(i64::try_from(self.realtime_minus_boot_ns).ok())
            .and_then(|(boot, offset)| boot.checked_add(offset))
        {
            Some(ns) => (
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000) as u32,
            ),
            None => {
                let ns = i128::from(boot_ns) + self.realtime_minus_boot_ns;
                (
                    ns.div_euclid(1_000_000_000) as i64,
                    ns.rem_euclid(1_000_000_000) as u32,
                )
            }
        };
        collector_core::event::utc_from_unix(secs, nanos).unwrap_or_default()
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
    fn to_utc_matches_the_128_bit_conversion_everywhere() {
        let reference = |clock: &BootClock, boot_ns: u64| {
            let ns = i128::from(boot_ns) + clock.realtime_minus_boot_ns;
            DateTime::from_timestamp(
                ns.div_euclid(1_000_000_000) as i64,
                ns.rem_euclid(1_000_000_000) as u32,
            )
            .unwrap_or_default()
        };
        for offset in [
            1_700_000_000_000_000_000i128,
            -5,
            0,
            i128::from(i64::MAX),
            i128::from(i64::MIN) * 4,
        ] {
            let clock = BootClock {
                realtime_minus_boot_ns: offset,
            };
            for boot_ns in [
                0,
                1,
                999_999_999,
                1_000_000_000,
                86_400_000_000_123,
                u64::MAX,
            ] {
                assert_eq!(
                    clock.to_utc(boot_ns),
                    reference(&clock, boot_ns),
                    "{offset} + {boot_ns}"
                );
            }
        }
    }

    #[test]
    fn boot_now_maps_to_wall_now() {
        let clock = BootClock::new();
        let boot = clock_ns(libc::CLOCK_BOOTTIME) as u64;
        let diff = (Utc::now() - clock.to_utc(boot)).num_milliseconds().abs();
        assert!(diff < 1000, "boot->wall conversion off by {diff} ms");
    }
}
