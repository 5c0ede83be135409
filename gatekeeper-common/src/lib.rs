//! The boundary between the gatekeeper XDP program and its controller.
//!
//! Every map key and value crosses the kernel boundary as raw bytes, so each
//! type here is `#[repr(C)]` with its padding spelled out as named fields:
//! the kernel and user space must agree on every byte, and a hidden hole
//! would leak stack garbage into map keys (an LPM trie compares key bytes).
//!
//! # The two policy slots
//!
//! A policy lives in one of [`SLOTS`] slots. Every key of the per-policy maps
//! carries its slot, and [`ACTIVE_MAP`] names the slot that packets are judged
//! by. The program reads the active slot once per frame and makes every
//! lookup for that frame in that slot, so a frame is judged by one whole
//! policy. The controller writes a new policy into the idle slot, flips the
//! active index with a single map update, waits for every program run that
//! might still be using the old slot to finish (an RCU grace period), and only
//! then clears the old slot.
#![no_std]

pub mod generator;

/// Name of the XDP function in the object file.
pub const PROGRAM_NAME: &str = "gatekeeper";
/// An XDP program in the same object that drops every frame: the floor the
/// benchmarks measure against. The controller never loads it.
pub const FLOOR_PROGRAM_NAME: &str = "gatekeeper_floor";
/// An XDP program in the same object that passes every frame.
pub const PASS_PROGRAM_NAME: &str = "gatekeeper_pass";

/// Map holding the active slot: one `u32` at index 0.
pub const ACTIVE_MAP: &str = "GK_ACTIVE";
/// Map of [`Config`], one per slot.
pub const CONFIG_MAP: &str = "GK_CONFIG";
/// Bitmap of gated ports: `u64` words, [`PORT_WORDS`] per slot.
pub const PORTS_MAP: &str = "GK_PORTS";
/// The allowlists of every slot compiled into [`TableChunk`]s; see [`table`].
pub const TABLE_MAP: &str = "GK_TABLE";
/// LPM trie of allowed IPv4 source prefixes, [`Ipv4Key`] to connector id.
/// Used instead of [`TABLE_MAP`] only by a slot whose config has
/// [`FLAG_TRIE_LOOKUP`]: the reference the table is tested and benchmarked
/// against.
pub const ALLOW_V4_MAP: &str = "GK_ALLOW_V4";
/// LPM trie of allowed IPv6 source prefixes, [`Ipv6Key`] to connector id;
/// see [`ALLOW_V4_MAP`].
pub const ALLOW_V6_MAP: &str = "GK_ALLOW_V6";
/// LPM trie of gated IPv4 destinations, [`Ipv4Key`] to [`DESTINATION_PRESENT`].
pub const DEST_V4_MAP: &str = "GK_DEST_V4";
/// LPM trie of gated IPv6 destinations, [`Ipv6Key`] to [`DESTINATION_PRESENT`].
pub const DEST_V6_MAP: &str = "GK_DEST_V6";
/// Per-CPU [`Counters`], one entry.
pub const COUNTERS_MAP: &str = "GK_COUNTERS";
/// Per-CPU [`ConnectorCounters`], one entry.
pub const CONNECTORS_MAP: &str = "GK_CONNECTORS";
/// [`ConnectorName`] per slot and connector id (`slot * MAX_CONNECTORS +
/// id`). Only user space reads it: it lets `gatekeeper status` name the
/// connectors of the live policy from the pinned maps alone.
pub const NAMES_MAP: &str = "GK_NAMES";
/// LRU hash of every source that sent a gated SYN: [`SourceKey`] to
/// [`SourceRecord`]. Its size is set when the program is loaded.
pub const INVENTORY_MAP: &str = "GK_INVENTORY";
/// Ring buffer of [`DenyEvent`]s.
pub const EVENTS_MAP: &str = "GK_EVENTS";
/// [`LogSettings`], one entry.
pub const LOG_SETTINGS_MAP: &str = "GK_LOG_CFG";
/// Per-CPU [`RateState`] of the deny-log token bucket, one entry.
pub const LOG_RATE_MAP: &str = "GK_LOG_RATE";

/// Default size of the source inventory.
pub const DEFAULT_INVENTORY_SIZE: u32 = 65536;
/// Size of the deny-event ring buffer in bytes (a power of two).
pub const EVENTS_RING_BYTES: u32 = 1 << 18;

/// Every map the program defines, for checks that the object and the
/// controller agree.
pub const MAP_NAMES: [&str; 15] = [
    ACTIVE_MAP,
    CONFIG_MAP,
    PORTS_MAP,
    TABLE_MAP,
    ALLOW_V4_MAP,
    ALLOW_V6_MAP,
    DEST_V4_MAP,
    DEST_V6_MAP,
    COUNTERS_MAP,
    CONNECTORS_MAP,
    NAMES_MAP,
    INVENTORY_MAP,
    EVENTS_MAP,
    LOG_SETTINGS_MAP,
    LOG_RATE_MAP,
];

/// Number of policy slots: the live one and the one being written.
pub const SLOTS: u32 = 2;

/// Most gated ports a policy may list.
pub const MAX_PORTS: usize = 16;
/// Most connectors a policy may name; also the size of [`ConnectorCounters`].
pub const MAX_CONNECTORS: usize = 1024;
/// Most source prefixes per address family in one policy.
pub const MAX_SOURCE_PREFIXES: u32 = 1 << 20;
/// Most destination prefixes per address family in one policy.
pub const MAX_DESTINATION_PREFIXES: u32 = 4096;

/// `u64` words in one slot's port bitmap (65536 ports, one bit each).
pub const PORT_WORDS: u32 = 65536 / 64;

/// Bits of an LPM key taken by the slot, before the address.
pub const SLOT_PREFIX_BITS: u32 = 32;

/// The slot's config holds no policy: everything passes.
pub const MODE_NONE: u32 = 0;
/// Gated SYNs from sources outside every connector are dropped.
pub const MODE_ENFORCE: u32 = 1;
/// Gated SYNs from sources outside every connector pass, counted as would-deny.
pub const MODE_MONITOR: u32 = 2;

/// [`Config::flags`]: only SYNs to the slot's destination tries are gated.
pub const FLAG_HAS_DESTINATIONS: u32 = 1;

/// [`Config::flags`]: look sources up in the LPM tries ([`ALLOW_V4_MAP`],
/// [`ALLOW_V6_MAP`]) instead of the table. For tests and benchmarks.
pub const FLAG_TRIE_LOOKUP: u32 = 2;

/// `BPF_F_MMAPABLE`: the controller writes a slot's table through a shared
/// memory mapping instead of one system call per chunk.
pub const BPF_F_MMAPABLE: u32 = 1 << 10;

/// The source allowlist as the program looks it up: a multibit trie in one
/// BPF array of [`TableChunk`]s, compiled by the controller.
///
/// An address is resolved a byte at a time. Each slot owns a region of the
/// array starting at its [`Config::table_base`]: first [`ROOT_CHUNKS`] root
/// chunks, 256 for IPv4 and then 256 for IPv6, indexed by the address's
/// first byte, so that the first two bytes cost one read; then the slot's
/// pool of child chunks, one per further byte that some prefix needs. An
/// entry is either a leaf ([`NO_CONNECTOR`] or a connector id plus one) or
/// [`CHILD`] with the index of the chunk that resolves the next byte.
/// Shorter prefixes are copied into the entries of every chunk below them
/// that a longer prefix does not claim (leaf pushing), so the walk stops at
/// the first leaf: at most 3 reads for IPv4 and 15 for IPv6, whatever the
/// number of prefixes.
pub mod table {
    /// Entries per chunk: one per value of an address byte.
    pub const CHUNK_ENTRIES: usize = 256;
    /// Root chunks at the start of each slot's region.
    pub const ROOT_CHUNKS: u32 = 512;
    /// The first IPv6 root chunk, relative to the slot's region.
    pub const V6_ROOTS: u32 = 256;
    /// Entry bit: the rest of the entry is the index of a child chunk.
    pub const CHILD: u32 = 1 << 31;
    /// Leaf entry: no connector covers the address.
    pub const NO_CONNECTOR: u32 = 0;
    /// Default pool of child chunks per slot, besides the roots.
    pub const DEFAULT_POOL_CHUNKS: u32 = 4096;
}

/// 256 table entries, one per value of an address byte; see [`table`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableChunk {
    /// Leaf or child entries.
    pub entries: [u32; table::CHUNK_ENTRIES],
}

impl Default for TableChunk {
    fn default() -> Self {
        Self {
            entries: [table::NO_CONNECTOR; table::CHUNK_ENTRIES],
        }
    }
}

/// Value stored for each destination prefix.
pub const DESTINATION_PRESENT: u32 = 1;

/// One slot's settings. The program reads `mode` and `flags`; the rest
/// describes the policy for `gatekeeper status`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// The policy generation this slot holds; 0 when empty.
    pub generation: u64,
    /// When the controller installed it, in nanoseconds since the Unix epoch.
    pub loaded_at_ns: u64,
    /// [`MODE_NONE`], [`MODE_ENFORCE`] or [`MODE_MONITOR`].
    pub mode: u32,
    /// Bit set of `FLAG_*`.
    pub flags: u32,
    /// One more than the highest connector id the slot uses. Ids are kept
    /// across reloads, so some below it may be unused: their names are
    /// empty.
    pub connector_ids: u32,
    /// IPv4 source prefixes in the policy.
    pub sources_v4: u32,
    /// IPv6 source prefixes in the policy.
    pub sources_v6: u32,
    /// Destination prefixes in the policy, both families.
    pub destinations: u32,
    /// Index of the slot's first chunk in [`TABLE_MAP`].
    pub table_base: u32,
    /// Child chunks the slot's table uses, besides the roots.
    pub table_chunks: u32,
}

/// Longest connector name, in bytes.
pub const CONNECTOR_NAME_LEN: usize = 32;

/// A connector's name, NUL-padded.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnectorName {
    /// The name's bytes, then zeros.
    pub bytes: [u8; CONNECTOR_NAME_LEN],
}

/// The data part of an IPv4 LPM key: the slot, then the address in network
/// byte order. Its prefix length is [`SLOT_PREFIX_BITS`] plus the network's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Key {
    /// The slot, compared in full by every key.
    pub slot: u32,
    /// Address bytes, most significant first.
    pub addr: [u8; 4],
}

/// The data part of an IPv6 LPM key; see [`Ipv4Key`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Key {
    /// The slot, compared in full by every key.
    pub slot: u32,
    /// Address bytes, most significant first.
    pub addr: [u8; 16],
}

/// Indices into [`Counters::values`].
pub mod counter {
    /// Every frame the program saw.
    pub const SEEN: usize = 0;
    /// Frames that were not gated (passed untouched).
    pub const PASS: usize = 1;
    /// Gated IPv4 SYNs from a connector.
    pub const ALLOW_V4: usize = 2;
    /// Gated IPv6 SYNs from a connector.
    pub const ALLOW_V6: usize = 3;
    /// Gated IPv4 SYNs dropped in enforce mode.
    pub const DENY_V4: usize = 4;
    /// Gated IPv6 SYNs dropped in enforce mode.
    pub const DENY_V6: usize = 5;
    /// Gated IPv4 SYNs that enforce mode would have dropped.
    pub const WOULD_DENY_V4: usize = 6;
    /// Gated IPv6 SYNs that enforce mode would have dropped.
    pub const WOULD_DENY_V6: usize = 7;
    /// First fragments judged as SYNs because their flags were cut off
    /// (also counted under their verdict).
    pub const TINY_FRAGMENT: usize = 8;
    /// IPv6 frames judged as SYNs because their extension-header chain was
    /// longer than the program follows (also counted under their verdict).
    pub const LONG_V6_CHAIN: usize = 9;
    /// Deny and would-deny events sent to the ring buffer.
    pub const EVENTS_SENT: usize = 10;
    /// Deny and would-deny events not sent: over the rate, or the ring full.
    pub const EVENTS_DROPPED: usize = 11;
    /// Number of counters.
    pub const COUNT: usize = 12;
}

/// The program's frame counters, one set per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Indexed by the constants in [`counter`].
    pub values: [u64; counter::COUNT],
}

/// Allowed gated SYNs per connector id, one set per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectorCounters {
    /// Indexed by connector id.
    pub allowed: [u64; MAX_CONNECTORS],
}

impl Default for ConnectorCounters {
    fn default() -> Self {
        Self {
            allowed: [0; MAX_CONNECTORS],
        }
    }
}

/// Address family codes in [`SourceKey`] and [`DenyEvent`].
pub const FAMILY_V4: u32 = 4;
/// See [`FAMILY_V4`].
pub const FAMILY_V6: u32 = 6;

/// A source address in the inventory; IPv4 addresses fill the first four
/// bytes and leave the rest zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
    /// Address bytes, most significant first.
    pub addr: [u8; 16],
}

/// What the inventory knows of one source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceRecord {
    /// Gated SYNs seen from the source.
    pub attempts: u64,
    /// First and last of them, in `bpf_ktime_get_coarse_ns` time
    /// (`CLOCK_MONOTONIC_COARSE`: one timer tick of resolution, a few
    /// milliseconds, for a fraction of the precise clock's cost).
    pub first_seen_ns: u64,
    /// See `first_seen_ns`.
    pub last_seen_ns: u64,
    /// Destination port of the last one.
    pub last_port: u16,
    /// 1 when the policy of the time admitted the last one.
    pub admitted: u8,
    /// Padding, zero. Two fields rather than one byte array, which the
    /// eBPF target would zero with a call to a byte loop.
    pub _pad: u8,
    /// Padding, zero.
    pub _pad_word: u32,
}

/// The deny log's settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// Events per second each CPU may send; 0 sends none.
    pub rate_per_sec: u64,
    /// Events a CPU may send at once after a quiet spell.
    pub burst: u64,
}

/// One CPU's token bucket for the deny log.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Tokens in thousandths of an event.
    pub milli_tokens: u64,
    /// When tokens were last added, in `bpf_ktime_get_coarse_ns` time.
    pub refilled_ns: u64,
}

/// A deny or would-deny, as the program reports it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DenyEvent {
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
    /// The interface the SYN arrived on.
    pub ifindex: u32,
    /// Source address; IPv4 in the first four bytes.
    pub source: [u8; 16],
    /// Destination address, laid out like `source`.
    pub destination: [u8; 16],
    /// Source port; 0 when the frame carried none the program could read.
    pub source_port: u16,
    /// Destination port; 0 likewise.
    pub destination_port: u16,
    /// [`MODE_ENFORCE`] (dropped) or [`MODE_MONITOR`] (would-deny).
    pub mode: u32,
    /// When, in `bpf_ktime_get_coarse_ns` time.
    pub at_ns: u64,
}

/// Largest IPv6 extension-header chain the program follows. A chain that
/// is still going after this many headers is judged like a gated SYN.
pub const MAX_V6_EXTENSION_HEADERS: usize = 8;

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is `#[repr(C)]`, `Copy`, made only of integers and
    // integer arrays, and has no padding bytes (sizes asserted in the tests).
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Ipv4Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Ipv6Key {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnectorCounters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnectorName {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SourceRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LogSettings {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RateState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenyEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TableChunk {}
}

#[cfg(test)]
mod tests {
    use core::mem::size_of;

    use super::*;

    #[test]
    fn map_types_have_no_padding() {
        assert_eq!(size_of::<Config>(), 48);
        assert_eq!(size_of::<TableChunk>(), 4 * table::CHUNK_ENTRIES);
        assert_eq!(size_of::<ConnectorName>(), CONNECTOR_NAME_LEN);
        assert_eq!(size_of::<SourceKey>(), 20);
        assert_eq!(size_of::<SourceRecord>(), 32);
        assert_eq!(size_of::<LogSettings>(), 16);
        assert_eq!(size_of::<RateState>(), 16);
        assert_eq!(size_of::<DenyEvent>(), 56);
        assert_eq!(size_of::<Ipv4Key>(), 8);
        assert_eq!(size_of::<Ipv6Key>(), 20);
        assert_eq!(size_of::<Counters>(), 8 * counter::COUNT);
        assert_eq!(size_of::<ConnectorCounters>(), 8 * MAX_CONNECTORS);
    }

    #[test]
    fn map_names_fit_the_kernel_limit() {
        // BPF_OBJ_NAME_LEN is 16 including the terminating NUL.
        for name in MAP_NAMES {
            assert!(name.len() <= 15, "{name} is too long for a map name");
        }
    }
}
