//! The gatekeeper XDP program: drop (or, in monitor mode, count) TCP SYNs to
//! the gated ports from sources outside every connector, and pass everything
//! else untouched.
//!
//! The rules, in the order the program applies them:
//!
//! * Ethernet, then up to two VLAN tags (802.1Q or 802.1ad, in any order).
//! * IPv4: a header length below five words is malformed and passes (the
//!   stack drops it). A non-first fragment carries no port and passes.
//! * IPv6: extension headers (hop-by-hop, routing, destination options,
//!   fragment, AH) are followed for at most [`MAX_V6_EXTENSION_HEADERS`]
//!   headers. A chain still going after that cannot be followed to its TCP
//!   header, yet the stack would still deliver it, so it is judged like a
//!   gated SYN by its source (fail closed).
//! * Reads are bounded by the frame and by the IP datagram's own length, so
//!   Ethernet padding is never mistaken for header bytes.
//! * TCP: gated when SYN is set and ACK is clear, the destination port is in
//!   the policy's ports and, when the policy lists destinations, the
//!   destination address is one of them. A first fragment that reaches the
//!   destination port but ends before the flags byte is judged like a SYN
//!   (RFC 1858's tiny-fragment attack).
//! * A frame cut short before the decision can be made passes.
//!
//! A gated SYN is looked up by source address in the active slot's allowlist,
//! compiled by the controller into a table of byte-indexed chunks (see
//! `gatekeeper_common::table`): a handful of array reads whatever its size.
//! a match passes and is counted for the connector it names; no match is
//! dropped in enforce mode and passed but counted as would-deny in monitor
//! mode. Every gated SYN is then recorded in the source inventory (see
//! `gatekeeper_common::inventory`), and every deny or would-deny is sent to
//! the deny log's ring buffer when this CPU's token bucket has a token, or
//! counted as dropped.
//!
//! Time is read with `bpf_jiffies64()`, which the verifier turns into one
//! load; the hot path makes no helper call but the ring buffer's, which is
//! rate-limited.
#![no_std]
#![no_main]

use core::mem::size_of;

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::{bpf_jiffies64, bpf_ktime_get_ns},
    macros::{map, xdp},
    maps::{
        Array, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
    programs::XdpContext,
};
use aya_log_ebpf::debug;
use gatekeeper_common::{
    BPF_F_MMAPABLE, ClockReference, Config, ConnectorCounters, ConnectorName, Counters, DenyEvent,
    EVENTS_RING_BYTES, FAMILY_V4, FAMILY_V6, FLAG_HAS_DESTINATIONS, FLAG_TRIE_LOOKUP, InventorySet,
    Ipv4Key, Ipv6Key, LogSettings, MAX_CONNECTORS, MAX_DESTINATION_PREFIXES, MAX_SOURCE_PREFIXES,
    MAX_V6_EXTENSION_HEADERS, MODE_ENFORCE, MODE_MONITOR, PORT_WORDS, RateState, SLOT_PREFIX_BITS,
    SLOTS, SourceRecord, TableChunk, counter, inventory, table,
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr, ip::Ipv6Hdr, vlan::VlanHdr};

#[map]
static GK_ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
static GK_CONFIG: Array<Config> = Array::with_max_entries(SLOTS, 0);

#[map]
static GK_PORTS: Array<u64> = Array::with_max_entries(SLOTS * PORT_WORDS, 0);

// Every slot's region: root chunks, then its pool of child chunks. The
// controller sizes it when it loads the program and writes a slot's region
// through a memory mapping.
#[map]
static GK_TABLE: Array<TableChunk> = Array::with_max_entries(
    SLOTS * (table::ROOT_CHUNKS + table::DEFAULT_POOL_CHUNKS),
    BPF_F_MMAPABLE,
);

// The reference lookup (`FLAG_TRIE_LOOKUP`). LPM tries allocate per entry, so
// the capacity costs nothing until used. It holds two full policies: the live
// one and the one being written.
#[map]
static GK_ALLOW_V4: LpmTrie<Ipv4Key, u32> =
    LpmTrie::with_max_entries(SLOTS * MAX_SOURCE_PREFIXES, 0);

#[map]
static GK_ALLOW_V6: LpmTrie<Ipv6Key, u32> =
    LpmTrie::with_max_entries(SLOTS * MAX_SOURCE_PREFIXES, 0);

#[map]
static GK_DEST_V4: LpmTrie<Ipv4Key, u32> =
    LpmTrie::with_max_entries(SLOTS * MAX_DESTINATION_PREFIXES, 0);

#[map]
static GK_DEST_V6: LpmTrie<Ipv6Key, u32> =
    LpmTrie::with_max_entries(SLOTS * MAX_DESTINATION_PREFIXES, 0);

#[map]
static GK_COUNTERS: PerCpuArray<Counters> = PerCpuArray::with_max_entries(1, 0);

#[map]
static GK_CONNECTORS: PerCpuArray<ConnectorCounters> = PerCpuArray::with_max_entries(1, 0);

#[map]
static GK_INVENTORY: PerCpuArray<InventorySet> =
    PerCpuArray::with_max_entries(inventory::DEFAULT_SETS, 0);

// The inventory's set count minus one and its hash seed, set by the
// controller when it loads the program (read-only data: the verifier
// treats them as constants).
#[unsafe(no_mangle)]
static GK_INVENTORY_SET_MASK: u32 = inventory::DEFAULT_SETS - 1;
#[unsafe(no_mangle)]
static GK_INVENTORY_SEED: u64 = 0;

#[map]
static GK_EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
static GK_LOG_CFG: Array<LogSettings> = Array::with_max_entries(1, 0);

#[map]
static GK_LOG_RATE: PerCpuArray<RateState> = PerCpuArray::with_max_entries(1, 0);

// Read by user space only; see `gatekeeper_common::CLOCK_MAP`.
#[map]
static GK_CLOCK: Array<ClockReference> = Array::with_max_entries(1, 0);

// Read by user space only; see `gatekeeper_common::NAMES_MAP`.
#[map]
static GK_NAMES: Array<ConnectorName> = Array::with_max_entries(SLOTS * MAX_CONNECTORS as u32, 0);

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_DSTOPTS: u8 = 60;

/// IPv4 "more fragments" flag and offset mask, in the host-order frag field.
const IPV4_MF: u16 = 0x2000;
const IPV4_OFFSET_MASK: u16 = 0x1fff;

/// TCP header byte offsets used before the whole header is known to be there.
const TCP_DEST_PORT_END: usize = 4;
const TCP_DOFF_AT: usize = 12;
const TCP_FLAGS_AT: usize = 13;
const TCP_MIN_HEADER: usize = 20;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// Longest quiet spell, in jiffies, the deny-log bucket refills for: the
/// bucket is full long before, and the cap keeps the product of elapsed
/// jiffies and the rate far from overflowing.
const MAX_REFILL_JIFFIES: u64 = 1 << 32;

/// No header the program reads starts beyond this offset. XDP frames without
/// multi-buffer support fit in one page, so a larger offset is past the end
/// anyway; the bound lets the verifier prove packet reads safe.
const MAX_HEADER_OFFSET: usize = 4096;

#[xdp]
pub fn gatekeeper(ctx: XdpContext) -> u32 {
    let Some(counters) = GK_COUNTERS.get_ptr_mut(0) else {
        return XDP_PASS;
    };
    // SAFETY: the per-CPU entry is only touched by this CPU, and a program
    // run is not preempted by another run on the same CPU.
    let counters = unsafe { &mut (*counters).values };
    counters[counter::SEEN] += 1;

    let Some(gated) = classify(&ctx) else {
        counters[counter::PASS] += 1;
        return XDP_PASS;
    };
    if gated.tiny_fragment {
        counters[counter::TINY_FRAGMENT] += 1;
    }
    if gated.long_chain {
        counters[counter::LONG_V6_CHAIN] += 1;
    }
    judge(&ctx, &gated, counters)
}

/// A gated SYN (or a frame judged like one), ready for the allowlist.
struct Gated {
    slot: u32,
    mode: u32,
    flags: u32,
    table_base: u32,
    flow: Flow,
    tiny_fragment: bool,
    long_chain: bool,
}

/// Addresses and ports of a gated SYN. IPv4 addresses fill the first four
/// bytes; ports the program could not read are 0.
struct Flow {
    family: u32,
    source: Addr,
    destination: Addr,
    source_port: u16,
    destination_port: u16,
}

/// An address in the bytes the maps and events use, held as one integer:
/// the compiler fills and copies it two words at a time, where a byte array
/// was zeroed by a call to a byte loop.
#[derive(Clone, Copy)]
struct Addr(u128);

impl Addr {
    /// An IPv4 address in the first four bytes, the rest zero.
    fn v4(addr: [u8; 4]) -> Self {
        Self(u128::from(u32::from_ne_bytes(addr)))
    }

    fn v6(addr: [u8; 16]) -> Self {
        Self(u128::from_ne_bytes(addr))
    }

    fn bytes(self) -> [u8; 16] {
        self.0.to_ne_bytes()
    }

    fn v4_bytes(self) -> [u8; 4] {
        // Truncation keeps the first four bytes: the target is little-endian.
        (self.0 as u32).to_ne_bytes()
    }

    /// The bytes as two native-endian words, first eight bytes first.
    fn words(self) -> [u64; 2] {
        // Little-endian: the low half holds the first eight bytes.
        [self.0 as u64, (self.0 >> 64) as u64]
    }
}

/// The active slot's policy, read once per frame that could be gated.
struct Policy {
    slot: u32,
    config: &'static Config,
}

fn judge(ctx: &XdpContext, gated: &Gated, counters: &mut [u64; counter::COUNT]) -> u32 {
    let flow = &gated.flow;
    let (connector, allow_at, deny_at, would_deny_at) = if flow.family == FAMILY_V4 {
        let addr = flow.source.v4_bytes();
        let connector = if gated.flags & FLAG_TRIE_LOOKUP == 0 {
            table_v4(gated.table_base, addr)
        } else {
            let key = Key::new(
                SLOT_PREFIX_BITS + 32,
                Ipv4Key {
                    slot: gated.slot,
                    addr,
                },
            );
            GK_ALLOW_V4.get(&key).copied()
        };
        (
            connector,
            counter::ALLOW_V4,
            counter::DENY_V4,
            counter::WOULD_DENY_V4,
        )
    } else {
        let connector = if gated.flags & FLAG_TRIE_LOOKUP == 0 {
            table_v6(gated.table_base, &flow.source.bytes())
        } else {
            let key = Key::new(
                SLOT_PREFIX_BITS + 128,
                Ipv6Key {
                    slot: gated.slot,
                    addr: flow.source.bytes(),
                },
            );
            GK_ALLOW_V6.get(&key).copied()
        };
        (
            connector,
            counter::ALLOW_V6,
            counter::DENY_V6,
            counter::WOULD_DENY_V6,
        )
    };
    // One tick of resolution is enough for the inventory and the token
    // bucket, and the verifier inlines this helper to a load of the tick
    // counter, where a clock read is a call that costs as much as the rest
    // of a gated SYN together.
    // SAFETY: a helper without arguments or preconditions.
    let now = unsafe { bpf_jiffies64() };
    record_source(flow, now);
    // Off unless the controller loads the program with `--ebpf-log debug`;
    // then the verifier keeps it, and it costs a ring-buffer write per
    // gated SYN.
    let connector_id = connector.unwrap_or(u32::MAX);
    if flow.family == FAMILY_V4 {
        let source = u32::from_be_bytes(flow.source.v4_bytes());
        debug!(
            ctx,
            "gated SYN from {:i} to port {}, connector id {}",
            source,
            flow.destination_port,
            connector_id
        );
    } else {
        debug!(
            ctx,
            "gated SYN from {:i} to port {}, connector id {}",
            flow.source.bytes(),
            flow.destination_port,
            connector_id
        );
    }

    if let Some(connector) = connector {
        counters[allow_at] += 1;
        count_connector(connector);
        return XDP_PASS;
    }
    log_deny(ctx, flow, gated.mode, now, counters);
    if gated.mode == MODE_MONITOR {
        counters[would_deny_at] += 1;
        return XDP_PASS;
    }
    counters[deny_at] += 1;
    XDP_DROP
}

/// The entry for `byte` in chunk `chunk` of the table; a chunk index past
/// the map (which the controller never writes) reads as no connector.
#[inline(always)]
fn table_entry(chunk: u32, byte: u8) -> u32 {
    match GK_TABLE.get(chunk) {
        Some(chunk) => chunk.entries[usize::from(byte)],
        None => table::NO_CONNECTOR,
    }
}

/// The connector id a leaf entry names.
#[inline(always)]
fn leaf_connector(entry: u32) -> Option<u32> {
    if entry == table::NO_CONNECTOR || entry & table::CHILD != 0 {
        return None;
    }
    Some(entry - 1)
}

/// The connector whose longest prefix covers `addr`, from the slot's table
/// at `base`: one read for the first two bytes, then one per further byte
/// that a longer prefix needs, at most three in all.
#[inline(always)]
fn table_v4(base: u32, addr: [u8; 4]) -> Option<u32> {
    let mut entry = table_entry(base + u32::from(addr[0]), addr[1]);
    if entry & table::CHILD != 0 {
        entry = table_entry(entry & !table::CHILD, addr[2]);
        if entry & table::CHILD != 0 {
            entry = table_entry(entry & !table::CHILD, addr[3]);
        }
    }
    leaf_connector(entry)
}

/// As [`table_v4`] for an IPv6 address: at most fifteen reads.
#[inline(always)]
fn table_v6(base: u32, addr: &[u8; 16]) -> Option<u32> {
    let mut entry = table_entry(base + table::V6_ROOTS + u32::from(addr[0]), addr[1]);
    for &byte in &addr[2..] {
        if entry & table::CHILD == 0 {
            break;
        }
        entry = table_entry(entry & !table::CHILD, byte);
    }
    leaf_connector(entry)
}

/// Counts the SYN in this CPU's inventory: in its source's record when the
/// source's set has one, or else in the set's least recently seen record,
/// which is replaced.
#[inline(always)]
fn record_source(flow: &Flow, now: u64) {
    let addr = flow.source.words();
    // SAFETY: plain reads of globals; volatile so that the compiler reads
    // the value the controller set at load rather than the default here.
    let (seed, mask) = unsafe {
        (
            core::ptr::read_volatile(&raw const GK_INVENTORY_SEED),
            core::ptr::read_volatile(&raw const GK_INVENTORY_SET_MASK),
        )
    };
    let Some(set) = GK_INVENTORY.get_ptr_mut(inventory::set_of(addr, seed, mask)) else {
        return;
    };
    // SAFETY: per-CPU entry, only this CPU touches it; a program run is not
    // preempted by another run on the same CPU.
    let ways = unsafe { &mut (*set).ways };
    // Truncation is exact: families are 4 and 6.
    let family = flow.family as u16;
    let mut victim = 0;
    let mut oldest = u64::MAX;
    for (way, record) in ways.iter_mut().enumerate() {
        if record.addr == addr && record.family == family {
            record.attempts += 1;
            record.last_seen = now;
            record.last_port = flow.destination_port;
            return;
        }
        // An empty record was last seen at 0, before any tick.
        if record.last_seen < oldest {
            oldest = record.last_seen;
            victim = way;
        }
    }
    if let Some(record) = ways.get_mut(victim) {
        *record = SourceRecord {
            addr,
            attempts: 1,
            first_seen: now,
            last_seen: now,
            last_port: flow.destination_port,
            family,
            _pad: 0,
        };
    }
}

/// Sends a deny event when this CPU's token bucket allows, and counts it as
/// sent or dropped either way.
fn log_deny(
    ctx: &XdpContext,
    flow: &Flow,
    mode: u32,
    now: u64,
    counters: &mut [u64; counter::COUNT],
) {
    if !take_token(now) {
        counters[counter::EVENTS_DROPPED] += 1;
        return;
    }
    let Some(mut entry) = GK_EVENTS.reserve::<DenyEvent>(0) else {
        counters[counter::EVENTS_DROPPED] += 1;
        return;
    };
    entry.write(DenyEvent {
        family: flow.family,
        ifindex: ctx.ingress_ifindex() as u32,
        source: flow.source.bytes(),
        destination: flow.destination.bytes(),
        source_port: flow.source_port,
        destination_port: flow.destination_port,
        mode,
    });
    entry.submit(0);
    counters[counter::EVENTS_SENT] += 1;
}

/// Refills this CPU's bucket for the time since the last refill and takes
/// one token if there is one.
fn take_token(now: u64) -> bool {
    let Some(settings) = GK_LOG_CFG.get(0) else {
        return false;
    };
    let Some(state) = GK_LOG_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: per-CPU entry, only this CPU touches it.
    let state = unsafe { &mut *state };
    // Between two ticks nothing is added: under a flood most frames skip
    // the refill.
    let elapsed = now.saturating_sub(state.refilled);
    if elapsed > 0 {
        // At most 2^32 jiffies times at most 10^9 milli-tokens a jiffy
        // (a million events a second at 1 Hz) cannot overflow.
        let refill = elapsed.min(MAX_REFILL_JIFFIES) * settings.milli_tokens_per_jiffy;
        let capacity = settings.burst * 1000;
        state.milli_tokens = (state.milli_tokens + refill).min(capacity);
        state.refilled = now;
    }
    if state.milli_tokens < 1000 {
        return false;
    }
    state.milli_tokens -= 1000;
    true
}

fn count_connector(connector: u32) {
    let index = connector as usize;
    if index >= MAX_CONNECTORS {
        return;
    }
    let Some(per_connector) = GK_CONNECTORS.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU entry, as in `gatekeeper`; the index is checked above.
    unsafe { (*per_connector).allowed[index] += 1 };
}

/// Returns the gated SYN this frame is, or `None` when it is not gated.
fn classify(ctx: &XdpContext) -> Option<Gated> {
    let mut offset = 0;
    let eth: *const EthHdr = ptr_at(ctx, offset)?;
    // SAFETY: `ptr_at` checked that the header lies inside the frame.
    let mut ether_type = u16::from_be(unsafe { (*eth).ether_type });
    offset += EthHdr::LEN;

    for _ in 0..2 {
        if ether_type != ETH_P_8021Q && ether_type != ETH_P_8021AD {
            break;
        }
        let vlan: *const VlanHdr = ptr_at(ctx, offset)?;
        // SAFETY: checked by `ptr_at`.
        ether_type = u16::from_be(unsafe { (*vlan).ether_type });
        offset += VlanHdr::LEN;
    }

    match ether_type {
        ETH_P_IP => classify_v4(ctx, offset),
        ETH_P_IPV6 => classify_v6(ctx, offset),
        _ => None,
    }
}

fn classify_v4(ctx: &XdpContext, ip_at: usize) -> Option<Gated> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, ip_at)?;
    // SAFETY: checked by `ptr_at`; the header is copied out once.
    let ip = unsafe { ip.read_unaligned() };
    if ip.vihl >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(ip.vihl & 0x0f) * 4;
    if header_len < Ipv4Hdr::LEN {
        return None;
    }
    if ip.proto != IPPROTO_TCP {
        return None;
    }
    let frags = u16::from_be_bytes(ip.frags);
    if frags & IPV4_OFFSET_MASK != 0 {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes(ip.tot_len));
    let tcp_len = total_len.checked_sub(header_len)?;

    let segment = Segment {
        at: ip_at + header_len,
        len: tcp_len,
        first_fragment: frags & IPV4_MF != 0,
    };
    let (sport, dport) = segment.ports(ctx)?;
    let tiny_fragment = match segment.syn_state(ctx)? {
        SynState::NotSyn => return None,
        SynState::Syn => false,
        SynState::FlagsCutOff => true,
    };

    let slot = active_slot()?;
    if !port_is_gated(slot, dport) {
        return None;
    }
    let policy = policy_of(slot)?;
    if policy.config.flags & FLAG_HAS_DESTINATIONS != 0 {
        let key = Key::new(
            SLOT_PREFIX_BITS + 32,
            Ipv4Key {
                slot: policy.slot,
                addr: ip.dst_addr,
            },
        );
        GK_DEST_V4.get(&key)?;
    }
    Some(Gated {
        slot: policy.slot,
        mode: policy.config.mode,
        flags: policy.config.flags,
        table_base: policy.config.table_base,
        flow: Flow {
            family: FAMILY_V4,
            source: Addr::v4(ip.src_addr),
            destination: Addr::v4(ip.dst_addr),
            source_port: sport,
            destination_port: dport,
        },
        tiny_fragment,
        long_chain: false,
    })
}

fn classify_v6(ctx: &XdpContext, ip_at: usize) -> Option<Gated> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, ip_at)?;
    // SAFETY: checked by `ptr_at`; the header is copied out once.
    let ip = unsafe { ip.read_unaligned() };
    if ip.vcf[0] >> 4 != 6 {
        return None;
    }
    let payload_end = ip_at + Ipv6Hdr::LEN + usize::from(u16::from_be_bytes(ip.payload_len));

    let mut next = ip.next_hdr;
    let mut offset = ip_at + Ipv6Hdr::LEN;
    let mut first_fragment = false;
    let mut reached_tcp = false;
    for _ in 0..MAX_V6_EXTENSION_HEADERS {
        if next == IPPROTO_TCP {
            reached_tcp = true;
            break;
        }
        let header_len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS => {
                let header: *const [u8; 2] = ptr_in(ctx, offset, payload_end)?;
                // SAFETY: checked by `ptr_in`.
                let [next_header, len] = unsafe { header.read_unaligned() };
                next = next_header;
                (usize::from(len) + 1) * 8
            }
            IPPROTO_FRAGMENT => {
                let header: *const [u8; 4] = ptr_in(ctx, offset, payload_end)?;
                // SAFETY: checked by `ptr_in`.
                let [next_header, _, frag_hi, frag_lo] = unsafe { header.read_unaligned() };
                let frag = u16::from_be_bytes([frag_hi, frag_lo]);
                if frag >> 3 != 0 {
                    return None;
                }
                // The stack reassembles by the first fragment header with M
                // set and skips a later atomic one (offset 0, M clear), so
                // one M set anywhere in the chain makes a first fragment.
                first_fragment |= frag & 1 != 0;
                next = next_header;
                8
            }
            IPPROTO_AH => {
                let header: *const [u8; 2] = ptr_in(ctx, offset, payload_end)?;
                // SAFETY: checked by `ptr_in`.
                let [next_header, len] = unsafe { header.read_unaligned() };
                next = next_header;
                (usize::from(len) + 2) * 4
            }
            _ => return None,
        };
        offset += header_len;
    }
    if !reached_tcp && next == IPPROTO_TCP {
        reached_tcp = true;
    }

    // Past the bound the chain cannot be followed to a port or flags: such
    // a frame is judged like a gated SYN (fail closed).
    let long_chain = !reached_tcp;
    if long_chain && !is_v6_extension(next) {
        return None;
    }
    let mut sport = 0;
    let mut dport = 0;
    let mut tiny_fragment = false;
    if reached_tcp {
        let segment = Segment {
            at: offset,
            len: payload_end.checked_sub(offset)?,
            first_fragment,
        };
        (sport, dport) = segment.ports(ctx)?;
        tiny_fragment = match segment.syn_state(ctx)? {
            SynState::NotSyn => return None,
            SynState::Syn => false,
            SynState::FlagsCutOff => true,
        };
    }

    let slot = active_slot()?;
    if reached_tcp && !port_is_gated(slot, dport) {
        return None;
    }
    let policy = policy_of(slot)?;
    if policy.config.flags & FLAG_HAS_DESTINATIONS != 0 {
        let key = Key::new(
            SLOT_PREFIX_BITS + 128,
            Ipv6Key {
                slot: policy.slot,
                addr: ip.dst_addr,
            },
        );
        GK_DEST_V6.get(&key)?;
    }
    Some(Gated {
        slot: policy.slot,
        mode: policy.config.mode,
        flags: policy.config.flags,
        table_base: policy.config.table_base,
        flow: Flow {
            family: FAMILY_V6,
            source: Addr::v6(ip.src_addr),
            destination: Addr::v6(ip.dst_addr),
            source_port: sport,
            destination_port: dport,
        },
        tiny_fragment,
        long_chain,
    })
}

fn is_v6_extension(next: u8) -> bool {
    matches!(
        next,
        IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_FRAGMENT | IPPROTO_AH
    )
}

/// The TCP part of an IP datagram: where it starts in the frame, how many
/// bytes of it the datagram carries, and whether it is a first fragment.
struct Segment {
    at: usize,
    len: usize,
    first_fragment: bool,
}

enum SynState {
    NotSyn,
    Syn,
    /// A first fragment that ends before the flags byte.
    FlagsCutOff,
}

impl Segment {
    /// Source and destination port.
    fn ports(&self, ctx: &XdpContext) -> Option<(u16, u16)> {
        if self.len < TCP_DEST_PORT_END {
            return None;
        }
        let ports: *const [u8; 4] = ptr_at(ctx, self.at)?;
        // SAFETY: checked by `ptr_at`.
        let [source_hi, source_lo, hi, lo] = unsafe { ports.read_unaligned() };
        Some((
            u16::from_be_bytes([source_hi, source_lo]),
            u16::from_be_bytes([hi, lo]),
        ))
    }

    /// `None` when the segment is malformed or cut short: it passes.
    fn syn_state(&self, ctx: &XdpContext) -> Option<SynState> {
        if self.len <= TCP_FLAGS_AT {
            return self.first_fragment.then_some(SynState::FlagsCutOff);
        }
        let header: *const [u8; 2] = ptr_at(ctx, self.at + TCP_DOFF_AT)?;
        // SAFETY: checked by `ptr_at`.
        let [doff, flags] = unsafe { header.read_unaligned() };
        if !self.first_fragment {
            // The whole header must be in the datagram, or the stack drops it.
            let header_len = usize::from(doff >> 4) * 4;
            if header_len < TCP_MIN_HEADER || header_len > self.len {
                return None;
            }
        }
        if flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            Some(SynState::Syn)
        } else {
            Some(SynState::NotSyn)
        }
    }
}

fn active_slot() -> Option<u32> {
    GK_ACTIVE.get(0).copied()
}

/// The policy in `slot`, when it holds one. Read after the port check, so
/// that traffic to other ports never reads it.
fn policy_of(slot: u32) -> Option<Policy> {
    let config = GK_CONFIG.get(slot)?;
    if config.mode != MODE_ENFORCE && config.mode != MODE_MONITOR {
        return None;
    }
    Some(Policy { slot, config })
}

fn port_is_gated(slot: u32, port: u16) -> bool {
    let index = slot * PORT_WORDS + u32::from(port / 64);
    match GK_PORTS.get(index) {
        Some(word) => word & (1u64 << (port % 64)) != 0,
        None => false,
    }
}

/// A pointer to a `T` at `offset` bytes into the frame, when the frame holds
/// all of it.
#[inline(always)]
fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    if offset > MAX_HEADER_OFFSET {
        return None;
    }
    let start = ctx.data() + offset;
    if start + size_of::<T>() > ctx.data_end() {
        return None;
    }
    Some(start as *const T)
}

/// Like [`ptr_at`], and the `T` must also end at or before `limit`, the end of
/// the IP datagram.
#[inline(always)]
fn ptr_in<T>(ctx: &XdpContext, offset: usize, limit: usize) -> Option<*const T> {
    if offset + size_of::<T>() > limit {
        return None;
    }
    ptr_at(ctx, offset)
}

/// The floor of the benchmarks: the cheapest XDP program there is, which
/// drops everything. Loaded only by `cargo xtask bench` and `loadtest`.
#[xdp]
pub fn gatekeeper_floor(_ctx: XdpContext) -> u32 {
    XDP_DROP
}

/// No filter at all, for the load test's baseline. Loaded only by
/// `cargo xtask loadtest`.
#[xdp]
pub fn gatekeeper_pass(_ctx: XdpContext) -> u32 {
    XDP_PASS
}

/// Never attached: the controller runs it with `BPF_PROG_RUN` on a scratch
/// buffer to read jiffies and `CLOCK_MONOTONIC` at the same moment (see
/// `gatekeeper_common::ClockReference`). It writes them, native-endian,
/// into the buffer's first 16 bytes.
#[xdp]
pub fn gatekeeper_clock(ctx: XdpContext) -> u32 {
    let Some(out) = ptr_at::<[u64; 2]>(&ctx, 0) else {
        return XDP_PASS;
    };
    // SAFETY: helpers without arguments or preconditions.
    let reading = unsafe { [bpf_jiffies64(), bpf_ktime_get_ns()] };
    // SAFETY: `ptr_at` checked that the 16 bytes lie inside the buffer.
    unsafe { out.cast_mut().write_unaligned(reading) };
    XDP_PASS
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program that could reach a panic, so
    // this is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
