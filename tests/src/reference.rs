//! An independent classifier: what the XDP program should decide for a
//! frame, written from the rules in `docs/datapath.md` and nothing else.
//!
//! The differential test (`tests/tests/differential.rs`) runs the same
//! frames through the real program and through [`classify`] and compares the
//! two. For that comparison to mean anything, this module shares no code
//! with the XDP program, with `gatekeeper-common` or with
//! `gatekeeper::describe`: it parses bytes with slices and plain integer
//! arithmetic, matches prefixes with its own masks, and reads nothing from a
//! [`Policy`] but its fields. It is written for clarity, not speed.
//!
//! Where the documentation leaves a detail open, the choice made here is
//! named in a comment beginning "Reading:".

use std::net::IpAddr;

use gatekeeper::{
    datapath::Verdict,
    policy::{Mode, Policy},
};
use ipnet::IpNet;

/// How many VLAN tags are peeled off before the network type is read.
const VLAN_TAGS: usize = 2;
/// How many IPv6 extension headers are followed before a chain counts as
/// too long.
const V6_EXTENSION_HEADERS: usize = 8;

const ETHERNET_HEADER: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;

const IPV6_HEADER: usize = 40;
const PROTO_TCP: u8 = 6;
const EXT_HOP_BY_HOP: u8 = 0;
const EXT_ROUTING: u8 = 43;
const EXT_FRAGMENT: u8 = 44;
const EXT_AH: u8 = 51;
const EXT_DESTINATION: u8 = 60;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
/// Offset of the flags byte in the TCP header; a segment whose flags are
/// known carries at least this many bytes plus one.
const TCP_FLAGS_AT: usize = 13;
/// Bytes of TCP header needed to know the destination port.
const TCP_PORTS_LEN: usize = 4;

/// The rule of a frame judged as an IPv6 first fragment because of a
/// fragment header with M set that is followed, later in the chain, by
/// another fragment header (at offset 0) with M clear. The stack reassembles
/// by the first and skips the second as an atomic fragment, so the datagram
/// is fragmented whatever the last header says.
pub const RULE_EARLIER_FRAGMENT_HEADER: &str =
    "gated as an IPv6 first fragment marked by an earlier of several fragment headers";

/// What the program should do with one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// Pass, allow by a connector, deny or would-deny.
    pub verdict: Verdict,
    /// Judged as a SYN because it is a first fragment cut before the flags.
    pub tiny_fragment: bool,
    /// Judged as a SYN because its IPv6 extension-header chain is too long.
    pub long_chain: bool,
    /// The rule that decided, in words, for reports; not compared.
    pub rule: &'static str,
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.verdict)?;
        if self.tiny_fragment {
            f.write_str(" (tiny fragment)")?;
        }
        if self.long_chain {
            f.write_str(" (long chain)")?;
        }
        Ok(())
    }
}

/// Decides `frame` under `policy` by the documented rules.
pub fn classify(frame: &[u8], policy: &Policy) -> Expected {
    match parse(frame) {
        Parsed::Pass(rule) => pass(rule),
        Parsed::Candidate(candidate) => judge(&candidate, policy),
    }
}

fn pass(rule: &'static str) -> Expected {
    Expected {
        verdict: Verdict::Pass,
        tiny_fragment: false,
        long_chain: false,
        rule,
    }
}

/// How a frame came to be a candidate for gating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// A TCP segment whose flags byte was read.
    Flags { syn: bool, ack: bool },
    /// A first fragment that ends after the port but before the flags.
    TinyFragment,
    /// An IPv6 chain that is still going after the bound: no port known.
    LongChain,
}

/// What the parser learnt about a frame that might be gated.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    source: IpAddr,
    destination: IpAddr,
    /// `None` for a long chain, whose port is out of reach.
    port: Option<u16>,
    why: Why,
    /// A first fragment only by an earlier of several fragment headers.
    marked_early: bool,
}

enum Parsed {
    /// Cannot be gated, whatever the policy; the reason in words.
    Pass(&'static str),
    Candidate(Candidate),
}

fn judge(candidate: &Candidate, policy: &Policy) -> Expected {
    let gated_flags = match candidate.why {
        Why::Flags { syn, ack } => syn && !ack,
        Why::TinyFragment | Why::LongChain => true,
    };
    if !gated_flags {
        return pass("TCP flags are not SYN without ACK");
    }
    if let Some(port) = candidate.port
        && !policy.ports.contains(&port)
    {
        return pass("destination port not gated");
    }
    let destination_gated = policy.destinations.is_empty()
        || policy
            .destinations
            .iter()
            .any(|net| prefix_contains(net, candidate.destination));
    if !destination_gated {
        return pass("destination address not gated");
    }

    let connector = policy
        .connectors
        .iter()
        .flat_map(|connector| {
            connector
                .sources
                .iter()
                .map(move |net| (net.prefix_len(), &connector.name, net))
        })
        .filter(|(_, _, net)| prefix_contains(net, candidate.source))
        .max_by_key(|(len, _, _)| *len);
    let verdict = match (connector, policy.mode) {
        (Some((_, name, _)), _) => Verdict::Allow(name.clone()),
        (None, Mode::Enforce) => Verdict::Deny,
        (None, Mode::Monitor) => Verdict::WouldDeny,
    };
    Expected {
        verdict,
        tiny_fragment: candidate.why == Why::TinyFragment,
        long_chain: candidate.why == Why::LongChain,
        rule: match candidate.why {
            _ if candidate.marked_early => RULE_EARLIER_FRAGMENT_HEADER,
            Why::Flags { .. } => "gated SYN",
            Why::TinyFragment => "tiny first fragment judged as a SYN",
            Why::LongChain => "IPv6 chain past the bound judged as a SYN",
        },
    }
}

/// Whether `addr` lies in `net`, by comparing the first `prefix_len` bits.
fn prefix_contains(net: &IpNet, addr: IpAddr) -> bool {
    let bits = u32::from(net.prefix_len());
    match (net.addr(), addr) {
        (IpAddr::V4(net_addr), IpAddr::V4(addr)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(net_addr) & mask == u32::from(addr) & mask
        }
        (IpAddr::V6(net_addr), IpAddr::V6(addr)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(net_addr) & mask == u128::from(addr) & mask
        }
        _ => false,
    }
}

/// The bytes of a frame that may be read: those before `end`, which is the
/// end of the frame or of the IP datagram, whichever comes first.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    frame: &'a [u8],
    end: usize,
}

impl<'a> Bounded<'a> {
    fn whole(frame: &'a [u8]) -> Self {
        Self {
            frame,
            end: frame.len(),
        }
    }

    /// The same frame, readable only up to `datagram_end` as well.
    fn within(self, datagram_end: usize) -> Self {
        Self {
            frame: self.frame,
            end: self.end.min(datagram_end),
        }
    }

    fn bytes(&self, at: usize, len: usize) -> Option<&'a [u8]> {
        let stop = at.checked_add(len)?;
        (stop <= self.end).then(|| &self.frame[at..stop])
    }

    fn u8(&self, at: usize) -> Option<u8> {
        self.bytes(at, 1).map(|b| b[0])
    }

    fn u16(&self, at: usize) -> Option<u16> {
        self.bytes(at, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// Bytes readable from `at` on.
    fn available(&self, at: usize) -> usize {
        self.end.saturating_sub(at)
    }
}

fn parse(frame: &[u8]) -> Parsed {
    let bytes = Bounded::whole(frame);
    let Some(mut ethertype) = bytes.u16(12) else {
        return Parsed::Pass("shorter than an Ethernet header");
    };
    let mut at = ETHERNET_HEADER;
    for _ in 0..VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        // A tag is the TCI, then the type of what follows it.
        let Some(inner) = bytes.u16(at + 2) else {
            return Parsed::Pass("cut inside a VLAN tag");
        };
        ethertype = inner;
        at += 4;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(bytes, at),
        ETH_P_IPV6 => parse_ipv6(bytes, at),
        ETH_P_8021Q | ETH_P_8021AD => Parsed::Pass("more VLAN tags than the bound"),
        _ => Parsed::Pass("not IP"),
    }
}

fn parse_ipv4(bytes: Bounded<'_>, ip: usize) -> Parsed {
    let Some(header) = bytes.bytes(ip, 20) else {
        return Parsed::Pass("cut inside the IPv4 header");
    };
    if header[0] >> 4 != 4 {
        return Parsed::Pass("IPv4 ethertype without IP version 4");
    }
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if header_len < 20 {
        return Parsed::Pass("IPv4 header length below 5 words");
    }
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    if flags_offset & 0x1fff != 0 {
        return Parsed::Pass("IPv4 non-first fragment");
    }
    if header[9] != PROTO_TCP {
        return Parsed::Pass("IPv4 protocol not TCP");
    }
    let source = IpAddr::from([header[12], header[13], header[14], header[15]]);
    let destination = IpAddr::from([header[16], header[17], header[18], header[19]]);

    let datagram_end = ip + total_len;
    let tcp = Segment {
        bytes: bytes.within(datagram_end),
        at: ip + header_len,
        datagram_end,
        first_fragment: more_fragments,
        marked_early: false,
        source,
        destination,
    };
    tcp.parse()
}

fn parse_ipv6(bytes: Bounded<'_>, ip: usize) -> Parsed {
    let Some(header) = bytes.bytes(ip, IPV6_HEADER) else {
        return Parsed::Pass("cut inside the IPv6 header");
    };
    if header[0] >> 4 != 6 {
        return Parsed::Pass("IPv6 ethertype without IP version 6");
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let mut next = header[6];
    let source = IpAddr::from(<[u8; 16]>::try_from(&header[8..24]).expect("16 bytes"));
    let destination = IpAddr::from(<[u8; 16]>::try_from(&header[24..40]).expect("16 bytes"));

    let datagram_end = ip + IPV6_HEADER + payload_len;
    let bytes = bytes.within(datagram_end);
    let mut at = ip + IPV6_HEADER;
    let mut first_fragment = false;
    let mut last_fragment_more = false;
    for _ in 0..V6_EXTENSION_HEADERS {
        // Reading: a header is followed by reading only the fields the walk
        // needs (next header and length; the offset and M flag of a fragment
        // header). Whether the rest of it is there shows when what follows
        // is read.
        let header_len = match next {
            EXT_HOP_BY_HOP | EXT_ROUTING | EXT_DESTINATION => {
                let Some(units) = bytes.u8(at + 1) else {
                    return Parsed::Pass("cut inside an IPv6 extension header");
                };
                (usize::from(units) + 1) * 8
            }
            EXT_AH => {
                let Some(words) = bytes.u8(at + 1) else {
                    return Parsed::Pass("cut inside an IPv6 authentication header");
                };
                (usize::from(words) + 2) * 4
            }
            EXT_FRAGMENT => {
                let Some(offset_flags) = bytes.u16(at + 2) else {
                    return Parsed::Pass("cut inside an IPv6 fragment header");
                };
                if offset_flags >> 3 != 0 {
                    return Parsed::Pass("IPv6 non-first fragment");
                }
                // With several fragment headers (all at offset 0), the
                // datagram is a first fragment when any of them has M set.
                last_fragment_more = offset_flags & 1 != 0;
                first_fragment |= last_fragment_more;
                8
            }
            _ => break,
        };
        next = bytes.u8(at).expect("the walk read past this byte already");
        at += header_len;
    }

    if is_extension(next) {
        return Parsed::Candidate(Candidate {
            source,
            destination,
            port: None,
            why: Why::LongChain,
            marked_early: false,
        });
    }
    if next != PROTO_TCP {
        return Parsed::Pass("IPv6 chain ends in something other than TCP");
    }
    let tcp = Segment {
        bytes,
        at,
        datagram_end,
        first_fragment,
        marked_early: first_fragment && !last_fragment_more,
        source,
        destination,
    };
    tcp.parse()
}

fn is_extension(next: u8) -> bool {
    matches!(
        next,
        EXT_HOP_BY_HOP | EXT_ROUTING | EXT_FRAGMENT | EXT_AH | EXT_DESTINATION
    )
}

/// A TCP header at `at`, readable up to the end of frame and datagram.
struct Segment<'a> {
    bytes: Bounded<'a>,
    at: usize,
    /// The end of the datagram as its IP length field claims.
    datagram_end: usize,
    first_fragment: bool,
    marked_early: bool,
    source: IpAddr,
    destination: IpAddr,
}

impl Segment<'_> {
    fn parse(&self) -> Parsed {
        let Some(port) = self.bytes.u16(self.at + 2) else {
            return Parsed::Pass("cut before the TCP destination port");
        };
        let candidate = |why| {
            Parsed::Candidate(Candidate {
                source: self.source,
                destination: self.destination,
                port: Some(port),
                why,
                marked_early: self.marked_early,
            })
        };
        debug_assert!(self.bytes.available(self.at) >= TCP_PORTS_LEN);

        let Some(flags) = self.bytes.u8(self.at + TCP_FLAGS_AT) else {
            // A first fragment is tiny when its datagram, by the IP length
            // field, ends before the flags. When only the frame ends early,
            // the datagram claims more than arrived and the stack drops it:
            // cut short, like any other frame.
            let datagram_lacks_flags = self.datagram_end <= self.at + TCP_FLAGS_AT;
            return if self.first_fragment && datagram_lacks_flags {
                candidate(Why::TinyFragment)
            } else {
                Parsed::Pass("cut before the TCP flags")
            };
        };
        if !self.first_fragment {
            // The data offset is checked against the datagram the IP header
            // claims, not against what the frame carries: a frame cut after
            // the flags is judged by what it carries.
            let data_offset = usize::from(self.bytes.u8(self.at + 12).expect("before the flags"));
            let header_len = (data_offset >> 4) * 4;
            if header_len < 20 {
                return Parsed::Pass("TCP data offset below 5 words");
            }
            if self.at + header_len > self.datagram_end {
                return Parsed::Pass("TCP data offset past the datagram");
            }
        }
        candidate(Why::Flags {
            syn: flags & TCP_SYN != 0,
            ack: flags & TCP_ACK != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::{ACK, ETH_P_8021Q, Ext, Frame, SYN, TcpSeg};
    use gatekeeper::policy::LoadOptions;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const SRC: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
    const DST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
    const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 9);
    const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 25);

    fn policy() -> Policy {
        Policy::parse(
            r#"
            mode = "enforce"
            ports = [25]
            [[connector]]
            name = "wide"
            sources = ["203.0.113.0/24", "::/0"]
            [[connector]]
            name = "narrow"
            sources = ["203.0.113.8/29"]
            "#,
            "<reference test>",
            LoadOptions::default(),
        )
        .expect("a valid policy")
    }

    fn verdict(frame: &Frame) -> Verdict {
        classify(&frame.build(), &policy()).verdict
    }

    #[test]
    fn longest_prefix_names_the_connector() {
        let syn = |src| Frame::ipv4(src, DST).tcp(TcpSeg::syn(1, 25));
        assert_eq!(verdict(&syn(SRC)), Verdict::Allow("narrow".into()));
        let other = Ipv4Addr::new(203, 0, 113, 1);
        assert_eq!(verdict(&syn(other)), Verdict::Allow("wide".into()));
        let stranger = Ipv4Addr::new(198, 51, 100, 1);
        assert_eq!(verdict(&syn(stranger)), Verdict::Deny);
    }

    #[test]
    fn only_syn_without_ack_to_a_gated_port() {
        let frame = |flags, port| Frame::ipv4(SRC, DST).tcp(TcpSeg::new(1, port).flags(flags));
        assert_eq!(verdict(&frame(SYN | ACK, 25)), Verdict::Pass);
        assert_eq!(verdict(&frame(SYN, 26)), Verdict::Pass);
        assert_eq!(verdict(&frame(!ACK, 25)), Verdict::Allow("narrow".into()));
    }

    #[test]
    fn tags_beyond_two_pass() {
        let two = Frame::ipv4(SRC, DST)
            .vlan(ETH_P_8021Q, 1)
            .vlan(ETH_P_8021Q, 2)
            .tcp(TcpSeg::syn(1, 25));
        assert_eq!(verdict(&two), Verdict::Allow("narrow".into()));
        assert_eq!(verdict(&two.vlan(ETH_P_8021Q, 3)), Verdict::Pass);
    }

    #[test]
    fn tiny_fragments_and_long_chains_are_flagged() {
        let tiny = Frame::ipv4(SRC, DST)
            .fragment(0, true)
            .tcp(TcpSeg::syn(1, 25))
            .l4_truncate(8)
            .pad_to_min();
        let expected = classify(&tiny.build(), &policy());
        assert!(expected.tiny_fragment, "{expected:?}");

        let long = (0..9).fold(
            Frame::ipv6(SRC6, DST6).tcp(TcpSeg::new(1, 80)),
            |frame, _| frame.ext(Ext::destination_options(8)),
        );
        let expected = classify(&long.build(), &policy());
        assert_eq!(expected.verdict, Verdict::Allow("wide".into()));
        assert!(expected.long_chain, "{expected:?}");
    }

    #[test]
    fn padding_is_not_read_as_flags() {
        // An unfragmented segment of 13 bytes, padded: no flags to judge.
        let short = Frame::ipv4(SRC, DST)
            .tcp(TcpSeg::syn(1, 25))
            .l4_truncate(13)
            .pad_to_min();
        assert_eq!(verdict(&short), Verdict::Pass);
    }
}
