//! The load test's traffic generator: an XDP program run by `BPF_PROG_RUN`
//! in live-frames mode. Loaded only by `cargo xtask loadtest`.
//!
//! It is an object of its own (a second binary of this crate), so the
//! object `gatekeeper run` loads has neither its program nor its maps.
//!
//! The kernel hands every run a frame initialised from the template user
//! space passed in `data_in` (see `gatekeeper_common::generator`); since
//! pages are recycled, a run may also see the frame a previous run rewrote.
//! Either way the program writes every field that varies (source address,
//! source port, sequence number) and computes both checksums from scratch,
//! then returns `XDP_TX`, which live-frames mode turns into a transmission
//! out of the interface named in the context's `ingress_ifindex`.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::xdp_action::{XDP_ABORTED, XDP_TX},
    helpers::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use gatekeeper_common::generator::{
    FRAME_LEN, GeneratorConfig, GeneratorCounters, IP_AT, MAX_RANGES, TCP_AT, TCP_LEN,
    generator_counter,
};

#[map]
static GEN_CONFIG: Array<GeneratorConfig> = Array::with_max_entries(1, 0);

#[map]
static GEN_COUNTERS: PerCpuArray<GeneratorCounters> = PerCpuArray::with_max_entries(1, 0);

const ETH_P_IP: [u8; 2] = [0x08, 0x00];
/// Version 4, five words of header: no options.
const IPV4_VIHL: u8 = 0x45;
const IPPROTO_TCP: u8 = 6;
/// TCP data offset byte: six words (one MSS option), reserved bits clear.
const TCP_DOFF: u8 = ((TCP_LEN / 4) as u8) << 4;
const TCP_SYN: u8 = 0x02;

/// Offsets in the IPv4 header.
const IP_CHECKSUM_AT: usize = 10;
const IP_SOURCE_AT: usize = 12;
const IP_HEADER_LEN: usize = 20;
/// Offsets in the TCP header.
const TCP_SEQ_AT: usize = 4;
const TCP_DOFF_AT: usize = 12;
const TCP_FLAGS_AT: usize = 13;
const TCP_CHECKSUM_AT: usize = 16;

/// Source ports are drawn from 1024 up.
const FIRST_PORT: u32 = 1024;

/// Which share a frame's source was drawn from.
enum Share {
    Allowed,
    Denied,
}

#[xdp]
pub fn gatekeeper_generator(ctx: XdpContext) -> u32 {
    let Some(counters) = GEN_COUNTERS.get_ptr_mut(0) else {
        return XDP_ABORTED;
    };
    // SAFETY: the per-CPU entry is only touched by this CPU, and a program
    // run is not preempted by another run on the same CPU.
    let counters = unsafe { &mut (*counters).values };

    let share = match rewrite(&ctx) {
        Some(share) => share,
        None => {
            counters[generator_counter::ABORTED] += 1;
            return XDP_ABORTED;
        }
    };
    counters[generator_counter::SENT] += 1;
    match share {
        Share::Allowed => counters[generator_counter::ALLOWED] += 1,
        Share::Denied => counters[generator_counter::DENIED] += 1,
    }
    XDP_TX
}

/// Turns the frame into the next SYN of the flood; `None` when the template
/// has another shape or the config holds no range for the drawn share.
fn rewrite(ctx: &XdpContext) -> Option<Share> {
    let config = GEN_CONFIG.get(0)?;
    let start = ctx.data();
    if start + FRAME_LEN > ctx.data_end() {
        return None;
    }
    // SAFETY: the frame holds at least FRAME_LEN bytes, checked above, and
    // nothing else writes to it during this run.
    let frame = unsafe { &mut *(start as *mut [u8; FRAME_LEN]) };
    if frame[12..14] != ETH_P_IP
        || frame[IP_AT] != IPV4_VIHL
        || frame[IP_AT + 9] != IPPROTO_TCP
        || frame[TCP_AT + TCP_DOFF_AT] != TCP_DOFF
    {
        return None;
    }

    // SAFETY: helpers without arguments or preconditions.
    let (pick, host, port, seq) = unsafe {
        (
            bpf_get_prandom_u32(),
            bpf_get_prandom_u32(),
            bpf_get_prandom_u32(),
            bpf_get_prandom_u32(),
        )
    };
    let (share, first, count) = if pick % 1000 < config.allowed_per_mille {
        (Share::Allowed, 0, config.allowed_ranges)
    } else {
        (Share::Denied, config.allowed_ranges, config.denied_ranges)
    };
    if count == 0 {
        return None;
    }
    let index = (first + (pick / 1000) % count) as usize;
    if index >= MAX_RANGES {
        return None;
    }
    let range = config.ranges.get(index)?;
    let source = range.network | (host & range.host_mask);
    let port = (FIRST_PORT + port % (65536 - FIRST_PORT)) as u16;

    frame[IP_AT + IP_SOURCE_AT..IP_AT + IP_SOURCE_AT + 4].copy_from_slice(&source.to_be_bytes());
    frame[TCP_AT..TCP_AT + 2].copy_from_slice(&port.to_be_bytes());
    frame[TCP_AT + TCP_SEQ_AT..TCP_AT + TCP_SEQ_AT + 4].copy_from_slice(&seq.to_be_bytes());
    frame[TCP_AT + TCP_FLAGS_AT] = TCP_SYN;

    frame[IP_AT + IP_CHECKSUM_AT..IP_AT + IP_CHECKSUM_AT + 2].copy_from_slice(&[0, 0]);
    let ip_sum = sum_words(&frame[IP_AT..IP_AT + IP_HEADER_LEN]);
    frame[IP_AT + IP_CHECKSUM_AT..IP_AT + IP_CHECKSUM_AT + 2]
        .copy_from_slice(&fold(ip_sum).to_be_bytes());

    // The pseudo-header: both addresses, the protocol, the segment length.
    frame[TCP_AT + TCP_CHECKSUM_AT..TCP_AT + TCP_CHECKSUM_AT + 2].copy_from_slice(&[0, 0]);
    let pseudo = sum_words(&frame[IP_AT + IP_SOURCE_AT..IP_AT + IP_HEADER_LEN])
        + u32::from(IPPROTO_TCP)
        + TCP_LEN as u32;
    let tcp_sum = pseudo + sum_words(&frame[TCP_AT..TCP_AT + TCP_LEN]);
    frame[TCP_AT + TCP_CHECKSUM_AT..TCP_AT + TCP_CHECKSUM_AT + 2]
        .copy_from_slice(&fold(tcp_sum).to_be_bytes());
    Some(share)
}

/// The sum of `bytes` read as big-endian 16-bit words; an even length.
#[inline(always)]
fn sum_words(bytes: &[u8]) -> u32 {
    let mut sum = 0;
    for pair in bytes.chunks_exact(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    sum
}

/// The Internet checksum of a sum of words: its carries folded back in,
/// then complemented. Two folds suffice for the few words summed here.
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let once = (sum & 0xffff) + (sum >> 16);
    let twice = (once & 0xffff) + (once >> 16);
    !(twice as u16)
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
