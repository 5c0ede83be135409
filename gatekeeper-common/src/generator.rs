//! The boundary between the load test's traffic generator (an XDP program of
//! its own object, run with `BPF_PROG_RUN` in live-frames mode) and the load
//! test that drives it. Nothing here is used by `gatekeeper run`.
//!
//! User space hands the generator a template frame: Ethernet, a 20-byte
//! IPv4 header and a TCP SYN to the gated port. For every frame the program
//! draws a source address from [`GeneratorConfig::ranges`] (an allowed range
//! for [`GeneratorConfig::allowed_per_mille`] of the frames, a denied one for
//! the rest), a source port and a sequence number, recomputes both
//! checksums and sends the frame with `XDP_TX`.

/// Name of the generator's XDP function in its object.
pub const GENERATOR_PROGRAM_NAME: &str = "gatekeeper_generator";
/// Map holding the [`GeneratorConfig`]: one entry.
pub const GENERATOR_CONFIG_MAP: &str = "GEN_CONFIG";
/// Per-CPU [`GeneratorCounters`], one entry.
pub const GENERATOR_COUNTERS_MAP: &str = "GEN_COUNTERS";

/// Most source ranges, allowed and denied together.
pub const MAX_RANGES: usize = 8;

/// The only frame layout the generator rewrites: Ethernet (14 bytes), IPv4
/// without options (20), TCP with one MSS option (24). A template of any
/// other shape is returned with `XDP_ABORTED`.
pub const FRAME_LEN: usize = 14 + 20 + 24;
/// Where the IPv4 header starts in the frame.
pub const IP_AT: usize = 14;
/// Where the TCP header starts in the frame.
pub const TCP_AT: usize = IP_AT + 20;
/// The TCP header's length, options included.
pub const TCP_LEN: usize = 24;

/// Source addresses `network | (random & host_mask)`, in host byte order:
/// `198.51.100.0/25` is network `0xc633_6400`, host mask `0x7f`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceRange {
    /// The first address of the range.
    pub network: u32,
    /// The host bits drawn at random.
    pub host_mask: u32,
}

/// What the generator sends.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Frames per thousand whose source is drawn from an allowed range.
    pub allowed_per_mille: u32,
    /// The allowed ranges are `ranges[..allowed_ranges]`.
    pub allowed_ranges: u32,
    /// The denied ranges follow them: `denied_ranges` of them.
    pub denied_ranges: u32,
    /// Padding, zero.
    pub _pad: u32,
    /// Allowed ranges, then denied ranges; each drawn with equal weight
    /// within its share.
    pub ranges: [SourceRange; MAX_RANGES],
}

/// Indices into [`GeneratorCounters::values`].
pub mod generator_counter {
    /// Frames sent with `XDP_TX`.
    pub const SENT: usize = 0;
    /// Of those, frames with a source from an allowed range.
    pub const ALLOWED: usize = 1;
    /// Of those, frames with a source from a denied range.
    pub const DENIED: usize = 2;
    /// Runs that found no config, no range or a template of another shape.
    pub const ABORTED: usize = 3;
    /// Number of counters.
    pub const COUNT: usize = 4;
}

/// The generator's counters, one set per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GeneratorCounters {
    /// Indexed by the constants in [`generator_counter`].
    pub values: [u64; generator_counter::COUNT],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and
    // integer arrays, and has no padding bytes (sizes asserted in the tests).
    unsafe impl aya::Pod for super::GeneratorConfig {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::GeneratorCounters {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn map_types_have_no_padding() {
        assert_eq!(size_of::<SourceRange>(), 8);
        assert_eq!(size_of::<GeneratorConfig>(), 16 + 8 * MAX_RANGES);
        assert_eq!(size_of::<GeneratorCounters>(), 8 * generator_counter::COUNT);
    }

    #[test]
    fn map_names_fit_the_kernel_limit() {
        for name in [GENERATOR_CONFIG_MAP, GENERATOR_COUNTERS_MAP] {
            assert!(name.len() <= 15, "{name} is too long for a map name");
        }
    }
}
