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
/// An XDP program in the same object that is never attached: run on a
/// scratch buffer with `BPF_PROG_RUN`, it writes the kernel's jiffies and
/// `CLOCK_MONOTONIC` time, read at the same moment, into the buffer's first
/// 16 bytes (see [`ClockReference`]).
pub const CLOCK_PROGRAM_NAME: &str = "gatekeeper_clock";

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
/// The source inventory: a per-CPU array of [`InventorySet`]s; see
/// [`inventory`]. Its size is set when the program is loaded.
pub const INVENTORY_MAP: &str = "GK_INVENTORY";
/// Ring buffer of [`DenyEvent`]s.
pub const EVENTS_MAP: &str = "GK_EVENTS";
/// [`LogSettings`], one entry.
pub const LOG_SETTINGS_MAP: &str = "GK_LOG_CFG";
/// Per-CPU [`RateState`] of the deny-log token bucket, one entry.
pub const LOG_RATE_MAP: &str = "GK_LOG_RATE";
/// [`ClockReference`], one entry, written by the controller: how to turn
/// the program's jiffies into time.
pub const CLOCK_MAP: &str = "GK_CLOCK";
/// Size of the deny-event ring buffer in bytes (a power of two).
pub const EVENTS_RING_BYTES: u32 = 1 << 18;

/// Every map the program defines, for checks that the object and the
/// controller agree.
pub const MAP_NAMES: [&str; 16] = [
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
    CLOCK_MAP,
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

/// Address family codes in [`SourceRecord`] and [`DenyEvent`].
pub const FAMILY_V4: u32 = 4;
/// See [`FAMILY_V4`].
pub const FAMILY_V6: u32 = 6;

/// The source inventory's layout: a set-associative cache of sources, like
/// a CPU's, kept per CPU so that no two CPUs ever write the same record.
///
/// A source's set is picked by a multiplicative hash of its address, salted
/// with a seed the controller draws when it loads the program (so that
/// nobody can aim spoofed sources at the set of a known sender). A gated
/// SYN updates the set's record of its source, or replaces the least
/// recently seen of the set's [`WAYS`](inventory::WAYS) records. That is a
/// fixed number of inlined array reads and no helper call, where a BPF
/// hash map costs a call and a hash of the key per SYN. The controller
/// merges what every CPU saw of a source.
pub mod inventory {
    /// Records per set.
    pub const WAYS: usize = 4;
    /// Default number of sets per CPU (16,384 sources, 768 KiB per CPU).
    pub const DEFAULT_SETS: u32 = 4096;
    /// Name of the program's global holding the number of sets minus one (a
    /// power of two minus one), set when the program is loaded.
    pub const SET_MASK_GLOBAL: &str = "GK_INVENTORY_SET_MASK";
    /// Name of the program's global holding the hash seed.
    pub const SEED_GLOBAL: &str = "GK_INVENTORY_SEED";
    /// The multiplier of the set hash (2^64 divided by the golden ratio).
    pub const HASH_MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

    /// The set of a source whose address, as [`super::SourceRecord::addr`]
    /// holds it, is `addr`.
    pub const fn set_of(addr: [u64; 2], seed: u64, mask: u32) -> u32 {
        let mixed = (addr[0] ^ addr[1] ^ seed).wrapping_mul(HASH_MULTIPLIER);
        // The high half of the product is the well-mixed one.
        (mixed >> 32) as u32 & mask
    }
}

/// What the inventory knows of one source, on one CPU. A record whose
/// `family` is 0 is empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceRecord {
    /// The address's bytes, most significant first, read as two
    /// native-endian words; IPv4 addresses fill the first four bytes and
    /// leave the rest zero.
    pub addr: [u64; 2],
    /// Gated SYNs seen from the source.
    pub attempts: u64,
    /// First and last of them, in jiffies (see [`ClockReference`]).
    pub first_seen: u64,
    /// See `first_seen`.
    pub last_seen: u64,
    /// Destination port of the last one.
    pub last_port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`] (which fit), or 0 for an empty record.
    pub family: u16,
    /// Padding, zero.
    pub _pad: u32,
}

/// One set of the inventory; see [`inventory`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InventorySet {
    /// The set's records.
    pub ways: [SourceRecord; inventory::WAYS],
}

/// How the controller turns the program's timestamps into time.
///
/// The program stamps with `bpf_jiffies64()`, which the verifier inlines to
/// a single load of the kernel's tick counter: one tick of resolution (1 to
/// 10 ms), without the cost of a helper call that a clock read has. The
/// kernel advances jiffies from `CLOCK_MONOTONIC`, one every
/// `(1e9 + hz / 2) / hz` nanoseconds, so one reading of both at the same
/// moment and the tick rate convert any later jiffies value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockReference {
    /// Jiffies at the reference moment.
    pub jiffies: u64,
    /// `CLOCK_MONOTONIC` nanoseconds at the same moment.
    pub monotonic_ns: u64,
    /// The kernel's tick rate (`CONFIG_HZ`); 0 before the controller has
    /// measured it.
    pub hz: u64,
}
/// The deny log's settings.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// Thousandths of an event each CPU may send per jiffy: the rate per
    /// second times 1000 over the tick rate. 0 sends none.
    pub milli_tokens_per_jiffy: u64,
    /// Events a CPU may send at once after a quiet spell.
    pub burst: u64,
}

/// One CPU's token bucket for the deny log.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Tokens in thousandths of an event.
    pub milli_tokens: u64,
    /// When tokens were last added, in jiffies.
    pub refilled: u64,
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
    unsafe impl aya::Pod for super::InventorySet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ClockReference {}
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
        assert_eq!(size_of::<SourceRecord>(), 48);
        assert_eq!(size_of::<InventorySet>(), 48 * inventory::WAYS);
        assert_eq!(size_of::<ClockReference>(), 24);
        assert_eq!(size_of::<LogSettings>(), 16);
        assert_eq!(size_of::<RateState>(), 16);
        assert_eq!(size_of::<DenyEvent>(), 48);
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
