//! The XDP program's clock: jiffies, turned into wall-clock time here.
//!
//! The program stamps the inventory and paces the deny log with
//! `bpf_jiffies64()`, a single load once the verifier has inlined it. The
//! kernel advances jiffies from `CLOCK_MONOTONIC`, one every
//! [`tick_ns`]`(hz)` nanoseconds, so one [`ClockReference`] (jiffies and
//! `CLOCK_MONOTONIC` read at the same moment, in the kernel, by the
//! program named [`gatekeeper_common::CLOCK_PROGRAM_NAME`]) and the tick
//! rate convert any later stamp without drifting.
//!
//! The tick rate (`CONFIG_HZ`) is not published anywhere a program can
//! read without kernel headers or the kernel's configuration file, so it
//! is measured: two readings [`CALIBRATION`] apart, snapped to the nearest
//! rate the kernel's configuration offers.

use std::{
    sync::OnceLock,
    time::{Duration, SystemTime},
};

use aya::{TestRun as _, TestRunOptions, programs::Xdp};
use gatekeeper_common::ClockReference;

use crate::datapath::DatapathError;

/// The tick rates Linux's `CONFIG_HZ` choice offers.
pub const KERNEL_HZ: [u64; 4] = [100, 250, 300, 1000];

/// Time between the two readings that measure the tick rate: long enough
/// that one tick of error in each cannot confuse 250 with 300 Hz.
pub const CALIBRATION: Duration = Duration::from_millis(120);

/// Nanoseconds of `CLOCK_MONOTONIC` per jiffy, as the kernel rounds them
/// (its `TICK_NSEC`).
pub const fn tick_ns(hz: u64) -> u64 {
    (1_000_000_000 + hz / 2) / hz
}

/// One reading of jiffies and `CLOCK_MONOTONIC`, taken in the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// Jiffies.
    pub jiffies: u64,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub monotonic_ns: u64,
}

/// Runs the clock program once.
///
/// # Errors
///
/// The kernel refused the run.
pub fn read(program: &Xdp) -> Result<Reading, DatapathError> {
    // Large enough for an Ethernet header, which BPF_PROG_RUN insists on.
    let input = [0u8; 64];
    let mut output = [0u8; 64];
    program
        .test_run(TestRunOptions {
            data_in: Some(&input),
            data_out: Some(&mut output),
            ..TestRunOptions::default()
        })
        .map_err(|source| DatapathError::TestRun {
            len: input.len(),
            source,
        })?;
    let word = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&output[at..at + 8]);
        u64::from_ne_bytes(bytes)
    };
    Ok(Reading {
        jiffies: word(0),
        monotonic_ns: word(8),
    })
}

/// The tick rate the kernel rounds a measured one to: the configurable
/// rate nearest to `jiffies` ticks in `elapsed_ns`.
pub fn snap_hz(jiffies: u64, elapsed_ns: u64) -> u64 {
    let measured = jiffies as f64 * 1e9 / elapsed_ns.max(1) as f64;
    KERNEL_HZ
        .into_iter()
        .min_by(|a, b| {
            let distance = |hz: u64| (hz as f64 - measured).abs();
            distance(*a).total_cmp(&distance(*b))
        })
        .unwrap_or(KERNEL_HZ[0])
}

/// The kernel's tick rate, measured the first time it is asked for in this
/// process (which takes [`CALIBRATION`]); it cannot change while the
/// kernel runs.
///
/// # Errors
///
/// A run of the clock program failed.
pub fn kernel_hz(program: &Xdp) -> Result<u64, DatapathError> {
    static HZ: OnceLock<u64> = OnceLock::new();
    if let Some(&hz) = HZ.get() {
        return Ok(hz);
    }
    let first = read(program)?;
    std::thread::sleep(CALIBRATION);
    let second = read(program)?;
    let hz = snap_hz(
        second.jiffies.wrapping_sub(first.jiffies),
        second.monotonic_ns.saturating_sub(first.monotonic_ns),
    );
    Ok(*HZ.get_or_init(|| hz))
}

/// A reference for the program's stamps: the tick rate and a reading taken
/// now.
///
/// # Errors
///
/// A run of the clock program failed.
pub fn reference(program: &Xdp) -> Result<ClockReference, DatapathError> {
    let hz = kernel_hz(program)?;
    let now = read(program)?;
    Ok(ClockReference {
        jiffies: now.jiffies,
        monotonic_ns: now.monotonic_ns,
        hz,
    })
}

/// Thousandths of a deny event per jiffy for `rate_per_sec` events a
/// second: what the program's token bucket adds each tick. At least 1 for
/// any rate above 0, so that a low rate at a high tick rate still refills.
pub fn milli_tokens_per_jiffy(rate_per_sec: u64, hz: u64) -> u64 {
    if rate_per_sec == 0 {
        return 0;
    }
    (rate_per_sec.saturating_mul(1000) / hz.max(1)).max(1)
}

/// Turns jiffies into wall-clock time, from a [`ClockReference`] and the
/// clocks read now.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    reference: ClockReference,
    monotonic_now_ns: u64,
    wall_now: SystemTime,
}

impl WallClock {
    /// A converter for stamps taken against `reference`, anchored at this
    /// moment. `None` when the reference holds no tick rate (the
    /// controller never wrote it).
    pub fn now(reference: ClockReference) -> Option<Self> {
        if reference.hz == 0 {
            return None;
        }
        Some(Self {
            reference,
            monotonic_now_ns: monotonic_ns(),
            wall_now: SystemTime::now(),
        })
    }

    /// The wall-clock time of `jiffies`.
    pub fn wall(&self, jiffies: u64) -> SystemTime {
        let tick = i128::from(tick_ns(self.reference.hz));
        let since_reference = (i128::from(jiffies) - i128::from(self.reference.jiffies)) * tick;
        let monotonic = i128::from(self.reference.monotonic_ns) + since_reference;
        let ago = i128::from(self.monotonic_now_ns) - monotonic;
        let magnitude = Duration::from_nanos(u64::try_from(ago.unsigned_abs()).unwrap_or(u64::MAX));
        if ago >= 0 {
            self.wall_now - magnitude
        } else {
            self.wall_now + magnitude
        }
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; with a valid
    // clock id it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_lengths_are_the_kernels() {
        assert_eq!(tick_ns(100), 10_000_000);
        assert_eq!(tick_ns(250), 4_000_000);
        assert_eq!(tick_ns(300), 3_333_333);
        assert_eq!(tick_ns(1000), 1_000_000);
    }

    #[test]
    fn a_measured_rate_snaps_to_the_configured_one_despite_a_tick_of_error() {
        let window = CALIBRATION.as_nanos() as u64;
        for hz in KERNEL_HZ {
            let ticks = window * hz / 1_000_000_000;
            for error in [-1i64, 0, 1] {
                let counted = ticks.saturating_add_signed(error);
                assert_eq!(snap_hz(counted, window), hz, "{counted} ticks at {hz} Hz");
            }
        }
    }

    #[test]
    fn the_bucket_refills_at_the_rate_asked_for() {
        assert_eq!(milli_tokens_per_jiffy(0, 250), 0);
        assert_eq!(milli_tokens_per_jiffy(100, 250), 400);
        assert_eq!(milli_tokens_per_jiffy(100, 1000), 100);
        assert_eq!(milli_tokens_per_jiffy(1, 1000), 1);
        // Below a thousandth of an event a tick, it still refills.
        assert_eq!(milli_tokens_per_jiffy(1, 2000), 1);
        assert_eq!(milli_tokens_per_jiffy(1_000_000, 100), 10_000_000);
    }

    #[test]
    fn stamps_convert_through_the_reference() {
        let reference = ClockReference {
            jiffies: 5_000,
            monotonic_ns: 20_000_000_000,
            hz: 250,
        };
        let wall_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let clock = WallClock {
            reference,
            // Ten seconds after the reference.
            monotonic_now_ns: 30_000_000_000,
            wall_now,
        };
        // The reference itself was ten seconds ago.
        assert_eq!(clock.wall(5_000), wall_now - Duration::from_secs(10));
        // 250 ticks later is one second later.
        assert_eq!(clock.wall(5_250), wall_now - Duration::from_secs(9));
        // Stamps before the reference and after "now" work too.
        assert_eq!(clock.wall(4_750), wall_now - Duration::from_secs(11));
        assert_eq!(clock.wall(8_000), wall_now + Duration::from_secs(2));
        assert!(WallClock::now(ClockReference::default()).is_none());
    }
}
