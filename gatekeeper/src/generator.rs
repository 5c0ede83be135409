//! The load test's traffic generator, for `cargo xtask loadtest` only:
//! `gatekeeper run` and the other commands never load it.
//!
//! The generator is an XDP program in an object of its own (built by
//! `build.rs` beside the datapath's, see `gatekeeper-ebpf/src/generator.rs`).
//! [`Generator::send`] runs it with `BPF_PROG_RUN` in live-frames mode
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`, Linux 5.18): the kernel runs the program
//! once per frame on a copy of a template and transmits every frame the
//! program returns `XDP_TX` for out of the interface named as the frame's
//! ingress interface.

use std::time::Duration;

use aya::{
    Ebpf, EbpfError, TestRun as _, TestRunOptions,
    maps::{Array, MapData, MapError, PerCpuArray},
    programs::{ProgramError, TestRunAttrs, Xdp},
};
use gatekeeper_common::generator::{
    GENERATOR_CONFIG_MAP, GENERATOR_COUNTERS_MAP, GENERATOR_PROGRAM_NAME, GeneratorConfig,
    GeneratorCounters, MAX_RANGES, SourceRange, generator_counter,
};
use ipnet::Ipv4Net;

/// The generator's object, built for this machine's byte order.
static OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gatekeeper-generator"));

/// Frames the kernel runs between two transmissions in live-frames mode
/// when the caller does not say: the kernel's own default.
pub const DEFAULT_BATCH: u32 = 64;

/// Errors from loading or running the generator.
#[derive(Debug, thiserror::Error)]
pub enum GeneratorError {
    /// The embedded object could not be parsed or its maps created.
    #[error("loading the generator's eBPF object")]
    Object(#[source] EbpfError),
    /// The object lacks the program or a map; the build is broken.
    #[error("the generator's object has no {0}")]
    Missing(&'static str),
    /// The kernel refused the program.
    #[error("loading the generator's XDP program into the kernel")]
    Load(#[source] ProgramError),
    /// A map's layout differs from what this side expects.
    #[error("map {name} does not have the expected layout")]
    MapLayout {
        /// The map.
        name: &'static str,
        /// What aya found.
        #[source]
        source: MapError,
    },
    /// More ranges than [`MAX_RANGES`], or no range for a share that is
    /// drawn from.
    #[error(
        "{allowed} allowed and {denied} denied source ranges: at most {MAX_RANGES} in all, \
         and at least one for each share that is sent"
    )]
    Ranges {
        /// Allowed ranges given.
        allowed: usize,
        /// Denied ranges given.
        denied: usize,
    },
    /// A map update or read failed.
    #[error("{what} map {map}")]
    Map {
        /// Reading or writing.
        what: &'static str,
        /// The map.
        map: &'static str,
        /// The kernel's answer.
        #[source]
        source: MapError,
    },
    /// `BPF_PROG_RUN` refused the run.
    #[error("running the generator for {frames} frames out of interface {ifindex}")]
    Send {
        /// Frames asked for.
        frames: u32,
        /// The interface.
        ifindex: u32,
        /// The kernel's answer.
        #[source]
        source: ProgramError,
    },
}

/// What the generator sends: the share of frames from allowed sources and
/// the ranges both shares are drawn from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flood {
    /// Frames per thousand with an allowed source.
    pub allowed_per_mille: u32,
    /// Where allowed sources come from.
    pub allowed: Vec<Ipv4Net>,
    /// Where denied sources come from.
    pub denied: Vec<Ipv4Net>,
}

impl Flood {
    fn config(&self) -> Result<GeneratorConfig, GeneratorError> {
        let (allowed, denied) = (self.allowed.len(), self.denied.len());
        let needs_allowed = self.allowed_per_mille > 0;
        let needs_denied = self.allowed_per_mille < 1000;
        if allowed + denied > MAX_RANGES
            || (needs_allowed && allowed == 0)
            || (needs_denied && denied == 0)
        {
            return Err(GeneratorError::Ranges { allowed, denied });
        }
        let mut ranges = [SourceRange::default(); MAX_RANGES];
        for (slot, net) in ranges
            .iter_mut()
            .zip(self.allowed.iter().chain(&self.denied))
        {
            *slot = SourceRange {
                network: u32::from(net.network()),
                host_mask: u32::from(net.hostmask()),
            };
        }
        let count = |n: usize| u32::try_from(n).expect("at most MAX_RANGES");
        Ok(GeneratorConfig {
            allowed_per_mille: self.allowed_per_mille.min(1000),
            allowed_ranges: count(allowed),
            denied_ranges: count(denied),
            _pad: 0,
            ranges,
        })
    }
}

/// The generator's counters summed over every CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratorTotals {
    /// Frames sent with `XDP_TX`.
    pub sent: u64,
    /// Of those, from an allowed source.
    pub allowed: u64,
    /// Of those, from a denied source.
    pub denied: u64,
    /// Runs that sent nothing: a template of the wrong shape.
    pub aborted: u64,
}

impl GeneratorTotals {
    /// The counts that grew from `earlier` to `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            sent: self.sent.wrapping_sub(earlier.sent),
            allowed: self.allowed.wrapping_sub(earlier.allowed),
            denied: self.denied.wrapping_sub(earlier.denied),
            aborted: self.aborted.wrapping_sub(earlier.aborted),
        }
    }
}

/// `struct xdp_md` as `BPF_PROG_RUN` takes it in `ctx_in`.
#[repr(C)]
struct XdpMd {
    data: u32,
    data_end: u32,
    data_meta: u32,
    ingress_ifindex: u32,
    rx_queue_index: u32,
    egress_ifindex: u32,
}

impl XdpMd {
    fn to_bytes(&self) -> [u8; 24] {
        let fields = [
            self.data,
            self.data_end,
            self.data_meta,
            self.ingress_ifindex,
            self.rx_queue_index,
            self.egress_ifindex,
        ];
        let mut bytes = [0; 24];
        for (chunk, field) in bytes.chunks_exact_mut(4).zip(fields) {
            chunk.copy_from_slice(&field.to_ne_bytes());
        }
        bytes
    }
}

/// The loaded generator.
pub struct Generator {
    ebpf: Ebpf,
    counters: PerCpuArray<MapData, GeneratorCounters>,
}

impl std::fmt::Debug for Generator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generator").finish_non_exhaustive()
    }
}

impl Generator {
    /// Loads the generator into the kernel and configures it to send
    /// `flood`.
    ///
    /// # Errors
    ///
    /// Fails without `CAP_BPF`/`CAP_NET_ADMIN`, when the verifier rejects
    /// the program, or when `flood` has too many ranges or none for a share
    /// it draws from.
    pub fn load(flood: &Flood) -> Result<Self, GeneratorError> {
        let config = flood.config()?;
        let mut ebpf = Ebpf::load(OBJECT).map_err(GeneratorError::Object)?;
        let program: &mut Xdp = ebpf
            .program_mut(GENERATOR_PROGRAM_NAME)
            .ok_or(GeneratorError::Missing("XDP program"))?
            .try_into()
            .map_err(GeneratorError::Load)?;
        program.load().map_err(GeneratorError::Load)?;

        let mut config_map: Array<MapData, GeneratorConfig> =
            typed(&mut ebpf, GENERATOR_CONFIG_MAP)?;
        config_map
            .set(0, config, 0)
            .map_err(|source| GeneratorError::Map {
                what: "writing",
                map: GENERATOR_CONFIG_MAP,
                source,
            })?;
        let counters = typed(&mut ebpf, GENERATOR_COUNTERS_MAP)?;
        Ok(Self { ebpf, counters })
    }

    /// The loaded program, for its id and run statistics.
    pub fn program(&self) -> &Xdp {
        self.ebpf
            .program(GENERATOR_PROGRAM_NAME)
            .expect("`load` checked that the program exists")
            .try_into()
            .expect("`load` checked that the program is XDP")
    }

    /// Sends `frames` frames built from `template` out of the interface
    /// `ifindex`, `batch` at a time, and returns the kernel's time per frame.
    ///
    /// The interface index is resolved in the network namespace of the
    /// calling thread. The kernel transmits after every batch; a frame the
    /// interface cannot take is dropped and counted by the interface, not
    /// here.
    ///
    /// # Errors
    ///
    /// The kernel refused the run: no such interface, a template longer
    /// than a page allows, or a signal arrived during it (`EINTR`).
    pub fn send(
        &self,
        template: &[u8],
        ifindex: u32,
        frames: u32,
        batch: u32,
    ) -> Result<Duration, GeneratorError> {
        let ctx = XdpMd {
            data: 0,
            // The kernel requires the context to end where the frame does.
            data_end: u32::try_from(template.len()).unwrap_or(u32::MAX),
            data_meta: 0,
            ingress_ifindex: ifindex,
            rx_queue_index: 0,
            egress_ifindex: 0,
        }
        .to_bytes();
        let result = self
            .program()
            .test_run(TestRunOptions {
                data_in: Some(template),
                ctx_in: Some(&ctx),
                repeat: frames,
                attrs: TestRunAttrs::new().xdp_live_frames(batch),
                ..TestRunOptions::default()
            })
            .map_err(|source| GeneratorError::Send {
                frames,
                ifindex,
                source,
            })?;
        Ok(result.duration)
    }

    /// Runs the program once on `template` in `BPF_PROG_RUN`'s ordinary
    /// mode, which sends nothing, and returns its action and the frame it
    /// wrote: for tests of what the generator sends.
    ///
    /// # Errors
    ///
    /// The kernel refused the run.
    pub fn rewrite_once(&self, template: &[u8]) -> Result<(u32, Vec<u8>), GeneratorError> {
        // Room for a program that grows the frame, which this one does not.
        let mut frame = vec![0; template.len() + 256];
        let result = self
            .program()
            .test_run(TestRunOptions {
                data_in: Some(template),
                data_out: Some(&mut frame),
                ..TestRunOptions::default()
            })
            .map_err(|source| GeneratorError::Send {
                frames: 1,
                ifindex: 0,
                source,
            })?;
        frame.truncate(result.data_size_out as usize);
        Ok((result.return_value, frame))
    }

    /// The counters, summed over every CPU.
    ///
    /// # Errors
    ///
    /// The map read failed.
    pub fn totals(&self) -> Result<GeneratorTotals, GeneratorError> {
        let per_cpu = self
            .counters
            .get(&0, 0)
            .map_err(|source| GeneratorError::Map {
                what: "reading",
                map: GENERATOR_COUNTERS_MAP,
                source,
            })?;
        let mut totals = GeneratorTotals::default();
        for cpu in per_cpu.iter() {
            totals.sent += cpu.values[generator_counter::SENT];
            totals.allowed += cpu.values[generator_counter::ALLOWED];
            totals.denied += cpu.values[generator_counter::DENIED];
            totals.aborted += cpu.values[generator_counter::ABORTED];
        }
        Ok(totals)
    }
}

fn typed<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, GeneratorError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(GeneratorError::Missing(name))?;
    T::try_from(map).map_err(|source| GeneratorError::MapLayout { name, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(text: &str) -> Ipv4Net {
        text.parse().expect("a network")
    }

    #[test]
    fn ranges_become_network_and_host_mask() {
        let flood = Flood {
            allowed_per_mille: 100,
            allowed: vec![net("198.51.100.0/25")],
            denied: vec![net("203.0.113.0/24"), net("198.51.100.128/25")],
        };
        let config = flood.config().expect("a valid flood");
        assert_eq!(config.allowed_ranges, 1);
        assert_eq!(config.denied_ranges, 2);
        assert_eq!(
            config.ranges[0],
            SourceRange {
                network: 0xc633_6400,
                host_mask: 0x7f
            }
        );
        assert_eq!(config.ranges[1].host_mask, 0xff);
        assert_eq!(config.ranges[2].network, 0xc633_6480);
        assert_eq!(config.ranges[3], SourceRange::default());
    }

    #[test]
    fn a_share_without_ranges_is_refused() {
        let flood = Flood {
            allowed_per_mille: 100,
            allowed: Vec::new(),
            denied: vec![net("203.0.113.0/24")],
        };
        assert!(matches!(
            flood.config(),
            Err(GeneratorError::Ranges { allowed: 0, .. })
        ));
        let all_allowed = Flood {
            allowed_per_mille: 1000,
            allowed: vec![net("198.51.100.0/25")],
            denied: Vec::new(),
        };
        assert!(all_allowed.config().is_ok());
    }

    #[test]
    fn the_context_ends_where_the_frame_does() {
        let bytes = XdpMd {
            data: 0,
            data_end: 58,
            data_meta: 0,
            ingress_ifindex: 7,
            rx_queue_index: 0,
            egress_ifindex: 0,
        }
        .to_bytes();
        assert_eq!(bytes[4..8], 58u32.to_ne_bytes());
        assert_eq!(bytes[12..16], 7u32.to_ne_bytes());
    }
}
