//! Crafted Ethernet frames for running the XDP program through BPF_PROG_RUN.
//!
//! A [`Frame`] describes one frame from the outside in: the Ethernet header,
//! any number of VLAN tags, a network header, then at most one upper-layer
//! message. Lengths and checksums are derived from the bytes actually
//! included unless a test overrides them, so a malformed frame is only ever
//! malformed on purpose.
//!
//! ```
//! use std::net::{Ipv4Addr, Ipv6Addr};
//! use gatekeeper_tests::frames::{Ext, Frame, TcpSeg, CWR, ECE, ETH_P_8021Q, SYN};
//!
//! let src = Ipv4Addr::new(192, 0, 2, 1);
//! let dst = Ipv4Addr::new(198, 51, 100, 25);
//! let syn = Frame::ipv4(src, dst)
//!     .vlan(ETH_P_8021Q, 100)
//!     .tcp(TcpSeg::syn(40000, 25))
//!     .build();
//! assert_eq!(syn.len(), 14 + 4 + 20 + 20);
//!
//! // A first fragment whose datagram ends after 8 bytes of TCP header, hidden
//! // in the Ethernet padding.
//! let tiny = Frame::ipv4(src, dst)
//!     .fragment(0, true)
//!     .tcp(TcpSeg::syn(40000, 25))
//!     .l4_truncate(8)
//!     .pad_to_min()
//!     .build();
//! assert_eq!(tiny.len(), 60);
//!
//! let v6 = Frame::ipv6("2001:db8::1".parse().unwrap(), "2001:db8::25".parse().unwrap())
//!     .ext(Ext::hop_by_hop(8))
//!     .ext(Ext::fragment(0, true, 7))
//!     .tcp(TcpSeg::new(1234, 25).flags(SYN | ECE | CWR))
//!     .build();
//! assert_eq!(v6.len(), 14 + 40 + 8 + 8 + 20);
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};
use std::ops::Range;

/// Source MAC of every built frame unless overridden: 00:00:5e:00:53:01, from
/// the block RFC 7042 reserves for documentation.
pub const SRC_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x53, 0x01];
/// Destination MAC of IP and unknown-ethertype frames unless overridden:
/// 00:00:5e:00:53:02 (RFC 7042 documentation block).
pub const DST_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x53, 0x02];
/// Destination MAC of ARP requests.
pub const BROADCAST_MAC: [u8; 6] = [0xff; 6];

/// TCP flag bits, as they sit in byte 13 of the TCP header.
pub const FIN: u8 = 0x01;
pub const SYN: u8 = 0x02;
pub const RST: u8 = 0x04;
pub const PSH: u8 = 0x08;
pub const ACK: u8 = 0x10;
pub const URG: u8 = 0x20;
pub const ECE: u8 = 0x40;
pub const CWR: u8 = 0x80;

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q customer VLAN tag.
pub const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service VLAN tag (the outer tag of QinQ).
pub const ETH_P_8021AD: u16 = 0x88a8;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ROUTING: u8 = 43;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;
/// IPv6 "no next header"; also what an IP frame without a message carries.
pub const IPPROTO_NONE: u8 = 59;
pub const IPPROTO_DSTOPTS: u8 = 60;

/// Shortest Ethernet frame without its FCS; [`Frame::pad_to_min`] pads to it.
pub const ETH_MIN_LEN: usize = 60;

const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
const TCP_HEADER_LEN: usize = 20;
const UDP_HEADER_LEN: usize = 8;

/// One Ethernet frame to build. Setters consume and return the frame, so a
/// frame reads as a chain; [`Frame::build`] borrows it, so one description can
/// be built, truncated and varied many times.
///
/// Setters that only make sense for one network layer (IPv4 options, IPv6
/// extension headers...) panic when called on a frame of another kind: that
/// is a mistake in the test, not a frame worth sending.
#[derive(Clone, Debug)]
pub struct Frame {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    /// (TPID, TCI), outermost first.
    tags: Vec<(u16, u16)>,
    network: Network,
    pad_to_min: bool,
}

#[derive(Clone, Debug)]
enum Network {
    Ipv4(Ipv4Packet),
    Ipv6(Ipv6Packet),
    Arp { sender: Ipv4Addr, target: Ipv4Addr },
    Other { ethertype: u16, payload: Vec<u8> },
}

#[derive(Clone, Debug)]
struct Ipv4Packet {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    tos: u8,
    ident: u16,
    dont_fragment: bool,
    more_fragments: bool,
    /// In 8-byte units, as on the wire.
    fragment_offset: u16,
    ttl: u8,
    options: Vec<u8>,
    ihl: Option<u8>,
    total_len: Option<u16>,
    upper: Upper,
}

#[derive(Clone, Debug)]
struct Ipv6Packet {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    hop_limit: u8,
    exts: Vec<Ext>,
    payload_len: Option<u16>,
    upper: Upper,
}

/// The upper-layer message of an IP packet and how much of it is carried.
#[derive(Clone, Debug, Default)]
struct Upper {
    message: Option<L4>,
    keep: Option<usize>,
}

#[derive(Clone, Debug)]
enum L4 {
    Tcp(TcpSeg),
    Udp(UdpDgram),
    Icmp(Icmp),
    Raw { protocol: u8, bytes: Vec<u8> },
}

impl Frame {
    fn new(dst_mac: [u8; 6], network: Network) -> Self {
        Self {
            dst_mac,
            src_mac: SRC_MAC,
            tags: Vec::new(),
            network,
            pad_to_min: false,
        }
    }

    /// An IPv4 packet: no options, not fragmented, identification 0, TTL 64
    /// and, until a message is added, protocol [`IPPROTO_NONE`] and no payload.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self::new(
            DST_MAC,
            Network::Ipv4(Ipv4Packet {
                src,
                dst,
                tos: 0,
                ident: 0,
                dont_fragment: false,
                more_fragments: false,
                fragment_offset: 0,
                ttl: 64,
                options: Vec::new(),
                ihl: None,
                total_len: None,
                upper: Upper::default(),
            }),
        )
    }

    /// An IPv6 packet: hop limit 64, traffic class and flow label 0, no
    /// extension headers and, until a message is added, next header
    /// [`IPPROTO_NONE`].
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Self::new(
            DST_MAC,
            Network::Ipv6(Ipv6Packet {
                src,
                dst,
                hop_limit: 64,
                exts: Vec::new(),
                payload_len: None,
                upper: Upper::default(),
            }),
        )
    }

    /// A broadcast ARP request: who has `target`, tell `sender` (at the
    /// frame's source MAC).
    pub fn arp(sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        Self::new(BROADCAST_MAC, Network::Arp { sender, target })
    }

    /// Any ethertype followed by `payload` verbatim, e.g. LLDP (0x88cc), or
    /// an IPv4 ethertype carrying bytes that are not an IPv4 header.
    pub fn ethertype(ethertype: u16, payload: &[u8]) -> Self {
        let payload = payload.to_vec();
        Self::new(DST_MAC, Network::Other { ethertype, payload })
    }

    pub fn src_mac(mut self, mac: [u8; 6]) -> Self {
        self.src_mac = mac;
        self
    }

    pub fn dst_mac(mut self, mac: [u8; 6]) -> Self {
        self.dst_mac = mac;
        self
    }

    /// Pushes a VLAN tag inside those already pushed: the first call gives
    /// the outermost tag. `tpid` is any ethertype ([`ETH_P_8021Q`],
    /// [`ETH_P_8021AD`] or something stranger); `tci` is written as given, so
    /// the VLAN ID is its low 12 bits and a plain `100` means VLAN 100,
    /// priority 0.
    pub fn vlan(mut self, tpid: u16, tci: u16) -> Self {
        self.tags.push((tpid, tci));
        self
    }

    /// Appends zero bytes after the network packet until the frame is
    /// [`ETH_MIN_LEN`] bytes long, as a NIC does. IP length fields still count
    /// only the packet, so the padding is not part of the datagram.
    pub fn pad_to_min(mut self) -> Self {
        self.pad_to_min = true;
        self
    }

    /// Carries a TCP segment, checksummed over the pseudo-header of the
    /// frame's IP family.
    ///
    /// # Panics
    ///
    /// If the frame is not IPv4 or IPv6, here and for every other setter of
    /// the upper layer.
    pub fn tcp(mut self, segment: TcpSeg) -> Self {
        self.upper_mut("tcp").message = Some(L4::Tcp(segment));
        self
    }

    /// Carries a UDP datagram, checksummed over the pseudo-header.
    pub fn udp(mut self, datagram: UdpDgram) -> Self {
        self.upper_mut("udp").message = Some(L4::Udp(datagram));
        self
    }

    /// Carries an ICMP message: protocol 1 in an IPv4 packet, ICMPv6 (58,
    /// checksummed over the pseudo-header) in an IPv6 one.
    pub fn icmp(mut self, message: Icmp) -> Self {
        self.upper_mut("icmp").message = Some(L4::Icmp(message));
        self
    }

    /// Carries `bytes` verbatim as protocol `protocol`: an unknown protocol,
    /// the middle of a fragmented datagram, or a "TCP" message too short to
    /// be one.
    pub fn l4_bytes(mut self, protocol: u8, bytes: &[u8]) -> Self {
        let bytes = bytes.to_vec();
        self.upper_mut("l4_bytes").message = Some(L4::Raw { protocol, bytes });
        self
    }

    /// Carries only the first `keep` bytes of the upper-layer message; the IP
    /// length fields count only what is carried. Checksums still cover the
    /// whole message, which is right for the first fragment of a datagram
    /// whose rest follows in later fragments.
    ///
    /// # Panics
    ///
    /// At build time, if `keep` exceeds the message.
    pub fn l4_truncate(mut self, keep: usize) -> Self {
        self.upper_mut("l4_truncate").keep = Some(keep);
        self
    }

    /// IPv4 TTL or IPv6 hop limit.
    pub fn ttl(mut self, ttl: u8) -> Self {
        match &mut self.network {
            Network::Ipv4(packet) => packet.ttl = ttl,
            Network::Ipv6(packet) => packet.hop_limit = ttl,
            _ => panic!("ttl() needs an IP frame"),
        }
        self
    }

    /// IPv4 options, padded with zeros (end of option list) to a multiple of
    /// 4 bytes; the IHL grows to match unless [`Frame::ihl`] overrides it.
    ///
    /// # Panics
    ///
    /// If the frame is not IPv4, or if the padded options exceed 40 bytes.
    pub fn options(mut self, options: &[u8]) -> Self {
        let mut options = options.to_vec();
        options.resize(options.len().next_multiple_of(4), 0);
        assert!(
            options.len() <= 40,
            "IPv4 options are at most 40 bytes, got {}",
            options.len()
        );
        self.ipv4_mut("options").options = options;
        self
    }

    /// Writes `ihl` (in 4-byte words, 0 to 15) into the header instead of the
    /// true length; the bytes of the header do not change, so `ihl(4)` gives
    /// a malformed packet with a full 20-byte header behind it.
    pub fn ihl(mut self, ihl: u8) -> Self {
        assert!(ihl <= 15, "the IHL is a 4-bit field, got {ihl}");
        self.ipv4_mut("ihl").ihl = Some(ihl);
        self
    }

    /// Makes the packet a fragment: `offset_units` is the fragment offset in
    /// 8-byte units (so the byte offset is `offset_units * 8`), `more` the MF
    /// flag. The message bytes still follow the header as given: for a
    /// non-first fragment they stand for the middle of the datagram.
    pub fn fragment(mut self, offset_units: u16, more: bool) -> Self {
        assert!(
            offset_units < 1 << 13,
            "the fragment offset is a 13-bit field, got {offset_units}"
        );
        let packet = self.ipv4_mut("fragment (IPv6 uses Ext::fragment)");
        packet.fragment_offset = offset_units;
        packet.more_fragments = more;
        self
    }

    /// Sets the DF flag.
    pub fn dont_fragment(mut self) -> Self {
        self.ipv4_mut("dont_fragment").dont_fragment = true;
        self
    }

    pub fn ident(mut self, ident: u16) -> Self {
        self.ipv4_mut("ident").ident = ident;
        self
    }

    pub fn tos(mut self, tos: u8) -> Self {
        self.ipv4_mut("tos").tos = tos;
        self
    }

    /// Writes `total_len` into the IPv4 header instead of the length of what
    /// is carried (the header checksum covers the written value).
    pub fn total_len(mut self, total_len: u16) -> Self {
        self.ipv4_mut("total_len").total_len = Some(total_len);
        self
    }

    /// Appends an IPv6 extension header after those already added. The
    /// next-header fields of the chain are filled in at build time.
    pub fn ext(mut self, ext: Ext) -> Self {
        self.ipv6_mut("ext").exts.push(ext);
        self
    }

    /// Writes `payload_len` into the IPv6 header instead of the length of
    /// the extension headers and message carried.
    pub fn payload_len(mut self, payload_len: u16) -> Self {
        self.ipv6_mut("payload_len").payload_len = Some(payload_len);
        self
    }

    fn upper_mut(&mut self, setter: &str) -> &mut Upper {
        match &mut self.network {
            Network::Ipv4(packet) => &mut packet.upper,
            Network::Ipv6(packet) => &mut packet.upper,
            _ => panic!("{setter}() needs an IP frame"),
        }
    }

    fn ipv4_mut(&mut self, setter: &str) -> &mut Ipv4Packet {
        let Network::Ipv4(packet) = &mut self.network else {
            panic!("{setter}() needs an IPv4 frame");
        };
        packet
    }

    fn ipv6_mut(&mut self, setter: &str) -> &mut Ipv6Packet {
        let Network::Ipv6(packet) = &mut self.network else {
            panic!("{setter}() needs an IPv6 frame");
        };
        packet
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        self.build_layout().bytes
    }

    /// The first `len` bytes of the frame.
    ///
    /// # Panics
    ///
    /// If `len` exceeds the frame.
    pub fn truncated(&self, len: usize) -> Vec<u8> {
        self.build_layout().truncated(len)
    }

    /// The frame's bytes together with where each header lies in them.
    pub fn build_layout(&self) -> Built {
        let (ethertype, mut network) = match &self.network {
            Network::Ipv4(packet) => (ETH_P_IPV4, packet.encode()),
            Network::Ipv6(packet) => (ETH_P_IPV6, packet.encode()),
            Network::Arp { sender, target } => {
                let arp = encode_arp(self.src_mac, *sender, *target);
                (ETH_P_ARP, Built::single(Layer::Arp, arp))
            }
            Network::Other { ethertype, payload } => {
                (*ethertype, Built::single(Layer::Payload, payload.clone()))
            }
        };

        let mut frame = Built::default();
        let mut ethernet = [self.dst_mac, self.src_mac].concat();
        let first_type = self.tags.first().map_or(ethertype, |&(tpid, _)| tpid);
        ethernet.extend_from_slice(&first_type.to_be_bytes());
        frame.push(Layer::Ethernet, &ethernet);

        // Seen as a parser sees it: each tag is the TCI followed by the type
        // of what comes next.
        for (i, &(_, tci)) in self.tags.iter().enumerate() {
            let next_type = self.tags.get(i + 1).map_or(ethertype, |&(tpid, _)| tpid);
            let tag = [tci.to_be_bytes(), next_type.to_be_bytes()].concat();
            frame.push(Layer::Vlan, &tag);
        }
        frame.append(&mut network);

        if self.pad_to_min && frame.bytes.len() < ETH_MIN_LEN {
            let padding = vec![0; ETH_MIN_LEN - frame.bytes.len()];
            frame.push(Layer::Padding, &padding);
        }
        frame
    }
}

impl Upper {
    fn protocol(&self, family: Family) -> u8 {
        match &self.message {
            None => IPPROTO_NONE,
            Some(L4::Tcp(_)) => IPPROTO_TCP,
            Some(L4::Udp(_)) => IPPROTO_UDP,
            Some(L4::Icmp(_)) if family == Family::V4 => IPPROTO_ICMP,
            Some(L4::Icmp(_)) => IPPROTO_ICMPV6,
            Some(L4::Raw { protocol, .. }) => *protocol,
        }
    }

    fn encode(&self, pseudo: &Pseudo) -> Built {
        let mut built = match &self.message {
            None => Built::default(),
            Some(L4::Tcp(segment)) => segment.encode(pseudo),
            Some(L4::Udp(datagram)) => datagram.encode(pseudo),
            Some(L4::Icmp(message)) => message.encode(pseudo),
            Some(L4::Raw { protocol, bytes }) => Built::single(Layer::L4(*protocol), bytes.clone()),
        };
        if let Some(keep) = self.keep {
            let len = built.bytes.len();
            assert!(
                keep <= len,
                "l4_truncate({keep}) exceeds the {len}-byte message"
            );
            built = built.cut(keep);
        }
        built
    }
}

impl Ipv4Packet {
    fn encode(&self) -> Built {
        let protocol = self.upper.protocol(Family::V4);
        let pseudo = Pseudo::V4 {
            src: self.src,
            dst: self.dst,
        };
        let mut upper = self.upper.encode(&pseudo);

        let header_len = IPV4_HEADER_LEN + self.options.len();
        let ihl = self.ihl.unwrap_or((header_len / 4) as u8);
        let carried = header_len + upper.bytes.len();
        let total_len = self
            .total_len
            .unwrap_or_else(|| wire_len(carried, "IPv4 total length"));
        let flags_offset = u16::from(self.dont_fragment) << 14
            | u16::from(self.more_fragments) << 13
            | self.fragment_offset;

        let mut header = Vec::with_capacity(header_len);
        header.push(0x40 | ihl);
        header.push(self.tos);
        header.extend_from_slice(&total_len.to_be_bytes());
        header.extend_from_slice(&self.ident.to_be_bytes());
        header.extend_from_slice(&flags_offset.to_be_bytes());
        header.push(self.ttl);
        header.push(protocol);
        header.extend_from_slice(&[0, 0]);
        header.extend_from_slice(&self.src.octets());
        header.extend_from_slice(&self.dst.octets());
        header.extend_from_slice(&self.options);
        let checksum = internet_checksum(&header);
        header[10..12].copy_from_slice(&checksum.to_be_bytes());

        let mut packet = Built::single(Layer::Ipv4, header);
        packet.append(&mut upper);
        packet
    }
}

impl Ipv6Packet {
    fn encode(&self) -> Built {
        let protocol = self.upper.protocol(Family::V6);
        let pseudo = Pseudo::V6 {
            src: self.src,
            dst: self.dst,
        };
        let mut payload = Built::default();
        for (i, ext) in self.exts.iter().enumerate() {
            let next = self.exts.get(i + 1).map_or(protocol, |ext| ext.kind);
            payload.push(Layer::Ext(ext.kind), &ext.encode(next));
        }
        payload.append(&mut self.upper.encode(&pseudo));

        let first = self.exts.first().map_or(protocol, |ext| ext.kind);
        let payload_len = self
            .payload_len
            .unwrap_or_else(|| wire_len(payload.bytes.len(), "IPv6 payload length"));

        let mut header = Vec::with_capacity(IPV6_HEADER_LEN);
        // Version 6, traffic class and flow label 0.
        header.extend_from_slice(&[0x60, 0, 0, 0]);
        header.extend_from_slice(&payload_len.to_be_bytes());
        header.push(first);
        header.push(self.hop_limit);
        header.extend_from_slice(&self.src.octets());
        header.extend_from_slice(&self.dst.octets());

        let mut packet = Built::single(Layer::Ipv6, header);
        packet.append(&mut payload);
        packet
    }
}

fn wire_len(len: usize, field: &str) -> u16 {
    u16::try_from(len).unwrap_or_else(|_| panic!("{len} bytes do not fit the {field} field"))
}

fn encode_arp(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut arp = Vec::with_capacity(28);
    // Hardware Ethernet (1), protocol IPv4, address lengths 6 and 4, request.
    arp.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    arp.extend_from_slice(&sender_mac);
    arp.extend_from_slice(&sender.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&target.octets());
    arp
}

/// One IPv6 extension header. Its next-header byte is filled in by the frame,
/// from the header or message that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ext {
    kind: u8,
    /// Everything after the next-header byte.
    body: Vec<u8>,
}

impl Ext {
    /// A hop-by-hop options header (type 0) of `len` bytes, filled with
    /// options a receiver skips.
    ///
    /// # Panics
    ///
    /// Unless `len` is a multiple of 8 from 8 to 2048; likewise for
    /// [`Ext::destination_options`] and [`Ext::routing`].
    pub fn hop_by_hop(len: usize) -> Self {
        Self::with_options(IPPROTO_HOPOPTS, len)
    }

    /// A destination options header (type 60) of `len` bytes.
    pub fn destination_options(len: usize) -> Self {
        Self::with_options(IPPROTO_DSTOPTS, len)
    }

    /// A routing header (type 43) of `len` bytes: routing type 253 (RFC 4727
    /// experiment) with no segments left, which a receiver ignores.
    pub fn routing(len: usize) -> Self {
        let mut body = vec![Self::eight_byte_units(len), 253, 0];
        body.resize(len - 1, 0);
        Self {
            kind: IPPROTO_ROUTING,
            body,
        }
    }

    /// A fragment header (type 44): `offset_units` in 8-byte units, `more`
    /// the M flag, `id` the identification.
    pub fn fragment(offset_units: u16, more: bool, id: u32) -> Self {
        assert!(
            offset_units < 1 << 13,
            "the fragment offset is a 13-bit field, got {offset_units}"
        );
        let offset_flags = offset_units << 3 | u16::from(more);
        let mut body = vec![0];
        body.extend_from_slice(&offset_flags.to_be_bytes());
        body.extend_from_slice(&id.to_be_bytes());
        Self {
            kind: IPPROTO_FRAGMENT,
            body,
        }
    }

    /// An authentication header (type 51) of `len` bytes: SPI 256, sequence
    /// number 1 and a zero ICV of `len - 12` bytes. Its length field counts
    /// 4-byte words, so `len` need only be a multiple of 4 (IPv6 expects a
    /// multiple of 8: a test may break that on purpose).
    ///
    /// # Panics
    ///
    /// Unless `len` is a multiple of 4 from 12 to 1028.
    pub fn authentication(len: usize) -> Self {
        assert!(
            len.is_multiple_of(4) && (12..=1028).contains(&len),
            "an authentication header is 12 to 1028 bytes in 4-byte words, got {len}"
        );
        let mut body = vec![(len / 4 - 2) as u8, 0, 0];
        body.extend_from_slice(&256u32.to_be_bytes());
        body.extend_from_slice(&1u32.to_be_bytes());
        body.resize(len - 1, 0);
        Self {
            kind: IPPROTO_AH,
            body,
        }
    }

    /// A header of type `kind` whose bytes after the next-header byte are
    /// `body`, verbatim: for unknown types and lying length fields.
    pub fn raw(kind: u8, body: &[u8]) -> Self {
        let body = body.to_vec();
        Self { kind, body }
    }

    /// The value that announces this header in the previous next-header field.
    pub fn kind(&self) -> u8 {
        self.kind
    }

    fn encode(&self, next: u8) -> Vec<u8> {
        [&[next], &self.body[..]].concat()
    }

    fn with_options(kind: u8, len: usize) -> Self {
        let mut body = vec![Self::eight_byte_units(len)];
        body.extend_from_slice(&skippable_options(len - 2));
        Self { kind, body }
    }

    /// The header extension length field: 8-byte units after the first 8.
    fn eight_byte_units(len: usize) -> u8 {
        assert!(
            len.is_multiple_of(8) && (8..=2048).contains(&len),
            "this extension header is 8 to 2048 bytes in 8-byte units, got {len}"
        );
        (len / 8 - 1) as u8
    }
}

/// `len` bytes of IPv6 options that any receiver skips.
///
/// Linux rejects more than 7 consecutive bytes of padding, so anything longer
/// is carried in RFC 4727 experimental options (type 0x1e, whose top bits say
/// "skip if unknown").
fn skippable_options(mut len: usize) -> Vec<u8> {
    const PAD1: u8 = 0;
    const PADN: u8 = 1;
    const EXPERIMENT: u8 = 0x1e;
    const MAX_OPTION: usize = 2 + 255;

    let mut out = Vec::with_capacity(len);
    while len > 0 {
        let (kind, take) = match len {
            1 => {
                out.push(PAD1);
                break;
            }
            2..=7 => (PADN, len),
            // Never leave a single byte that would need a Pad1 after it.
            _ if len - len.min(MAX_OPTION) == 1 => (EXPERIMENT, MAX_OPTION - 1),
            _ => (EXPERIMENT, len.min(MAX_OPTION)),
        };
        out.push(kind);
        out.push((take - 2) as u8);
        out.resize(out.len() + take - 2, 0);
        len -= take;
    }
    out
}

/// A TCP segment. Unless set otherwise: sequence number 1, acknowledgement
/// number 0, window 64240, no options, no payload, and a data offset that
/// matches the header.
///
/// ```
/// use gatekeeper_tests::frames::{TcpSeg, FIN, SYN};
///
/// let odd = TcpSeg::new(40000, 25).flags(FIN | SYN).doff(15).payload(b"EHLO");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcpSeg {
    src_port: u16,
    dst_port: u16,
    seq: u32,
    ack_number: u32,
    flags: u8,
    doff: Option<u8>,
    window: u16,
    urgent_pointer: u16,
    options: Vec<u8>,
    payload: Vec<u8>,
}

impl TcpSeg {
    /// A segment with no flag set.
    pub fn new(src_port: u16, dst_port: u16) -> Self {
        Self {
            src_port,
            dst_port,
            seq: 1,
            ack_number: 0,
            flags: 0,
            doff: None,
            window: 64240,
            urgent_pointer: 0,
            options: Vec::new(),
            payload: Vec::new(),
        }
    }

    /// A segment with only SYN set.
    pub fn syn(src_port: u16, dst_port: u16) -> Self {
        Self::new(src_port, dst_port).flags(SYN)
    }

    /// The whole flags byte: combine [`SYN`], [`ACK`] and the others with `|`.
    pub fn flags(mut self, flags: u8) -> Self {
        self.flags = flags;
        self
    }

    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }

    /// The acknowledgement number field; the [`ACK`] flag is set by `flags`.
    pub fn ack_number(mut self, ack_number: u32) -> Self {
        self.ack_number = ack_number;
        self
    }

    pub fn window(mut self, window: u16) -> Self {
        self.window = window;
        self
    }

    pub fn urgent_pointer(mut self, urgent_pointer: u16) -> Self {
        self.urgent_pointer = urgent_pointer;
        self
    }

    /// Writes `doff` (in 4-byte words, 0 to 15) as the data offset instead of
    /// the true header length; the bytes of the segment do not change, so
    /// `doff(4)` or `doff(15)` on a bare 20-byte segment lies in either
    /// direction.
    pub fn doff(mut self, doff: u8) -> Self {
        assert!(doff <= 15, "the data offset is a 4-bit field, got {doff}");
        self.doff = Some(doff);
        self
    }

    /// TCP options, padded with zeros (end of option list) to a multiple of
    /// 4 bytes.
    ///
    /// # Panics
    ///
    /// If the padded options exceed 40 bytes.
    pub fn options(mut self, options: &[u8]) -> Self {
        let mut options = options.to_vec();
        options.resize(options.len().next_multiple_of(4), 0);
        assert!(
            options.len() <= 40,
            "TCP options are at most 40 bytes, got {}",
            options.len()
        );
        self.options = options;
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    fn encode(&self, pseudo: &Pseudo) -> Built {
        let header_len = TCP_HEADER_LEN + self.options.len();
        let doff = self.doff.unwrap_or((header_len / 4) as u8);

        let mut header = Vec::with_capacity(header_len);
        header.extend_from_slice(&self.src_port.to_be_bytes());
        header.extend_from_slice(&self.dst_port.to_be_bytes());
        header.extend_from_slice(&self.seq.to_be_bytes());
        header.extend_from_slice(&self.ack_number.to_be_bytes());
        header.push(doff << 4);
        header.push(self.flags);
        header.extend_from_slice(&self.window.to_be_bytes());
        header.extend_from_slice(&[0, 0]);
        header.extend_from_slice(&self.urgent_pointer.to_be_bytes());
        header.extend_from_slice(&self.options);

        let mut segment = Built::single(Layer::Tcp, header);
        segment.push(Layer::Payload, &self.payload);
        let checksum = pseudo.checksum(IPPROTO_TCP, &segment.bytes);
        segment.bytes[16..18].copy_from_slice(&checksum.to_be_bytes());
        segment
    }
}

/// A UDP datagram with an empty payload unless set otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UdpDgram {
    src_port: u16,
    dst_port: u16,
    payload: Vec<u8>,
}

impl UdpDgram {
    pub fn new(src_port: u16, dst_port: u16) -> Self {
        Self {
            src_port,
            dst_port,
            payload: Vec::new(),
        }
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    fn encode(&self, pseudo: &Pseudo) -> Built {
        let len = wire_len(UDP_HEADER_LEN + self.payload.len(), "UDP length");
        let mut header = Vec::with_capacity(UDP_HEADER_LEN);
        header.extend_from_slice(&self.src_port.to_be_bytes());
        header.extend_from_slice(&self.dst_port.to_be_bytes());
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&[0, 0]);

        let mut datagram = Built::single(Layer::Udp, header);
        datagram.push(Layer::Payload, &self.payload);
        let checksum = match pseudo.checksum(IPPROTO_UDP, &datagram.bytes) {
            // Zero means "no checksum" in UDP; the same sum is also 0xffff.
            0 => 0xffff,
            checksum => checksum,
        };
        datagram.bytes[6..8].copy_from_slice(&checksum.to_be_bytes());
        datagram
    }
}

/// An ICMP or ICMPv6 message; which one depends on the frame that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Icmp {
    kind: u8,
    code: u8,
    /// Everything after the checksum.
    body: Vec<u8>,
}

impl Icmp {
    /// A message of any type and code; `body` follows the checksum.
    pub fn new(kind: u8, code: u8, body: &[u8]) -> Self {
        let body = body.to_vec();
        Self { kind, code, body }
    }

    /// ICMP echo request (type 8), for IPv4 frames.
    pub fn echo_request(id: u16, seq: u16) -> Self {
        Self::new(8, 0, &[id.to_be_bytes(), seq.to_be_bytes()].concat())
    }

    /// ICMPv6 echo request (type 128), for IPv6 frames.
    pub fn echo_request_v6(id: u16, seq: u16) -> Self {
        Self::new(128, 0, &[id.to_be_bytes(), seq.to_be_bytes()].concat())
    }

    /// ICMPv6 neighbour solicitation (type 135) for `target`, with a source
    /// link-layer address option giving [`SRC_MAC`].
    pub fn neighbour_solicitation(target: Ipv6Addr) -> Self {
        let mut body = vec![0; 4];
        body.extend_from_slice(&target.octets());
        // Option 1 (source link-layer address), one 8-byte unit long.
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&SRC_MAC);
        Self::new(135, 0, &body)
    }

    fn encode(&self, pseudo: &Pseudo) -> Built {
        let mut message = vec![self.kind, self.code, 0, 0];
        message.extend_from_slice(&self.body);
        let checksum = match pseudo {
            Pseudo::V4 { .. } => internet_checksum(&message),
            Pseudo::V6 { .. } => pseudo.checksum(IPPROTO_ICMPV6, &message),
        };
        message[2..4].copy_from_slice(&checksum.to_be_bytes());
        Built::single(Layer::Icmp, message)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// The addresses an upper-layer checksum covers.
enum Pseudo {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

impl Pseudo {
    /// The checksum of `message` (whose checksum field is zero) under this
    /// pseudo-header, counting the whole message as the upper-layer length.
    fn checksum(&self, protocol: u8, message: &[u8]) -> u16 {
        let header = match self {
            // Zero, protocol, then the length in 16 bits.
            Pseudo::V4 { src, dst } => {
                let len = wire_len(message.len(), "IPv4 pseudo-header length");
                let tail = [&[0, protocol][..], &len.to_be_bytes()].concat();
                [&src.octets()[..], &dst.octets(), &tail].concat()
            }
            // The length in 32 bits, then three zeros and the protocol.
            Pseudo::V6 { src, dst } => {
                let len = message.len() as u32;
                let tail = [&len.to_be_bytes()[..], &[0, 0, 0, protocol]].concat();
                [&src.octets()[..], &dst.octets(), &tail].concat()
            }
        };
        !ones_complement_sum(ones_complement_sum(0, &header), message)
    }
}

/// The Internet checksum (RFC 1071) of `data`: the ones' complement of the
/// ones' complement sum of its big-endian 16-bit words, an odd last byte
/// padded with zero.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(0, data)
}

/// Adds the big-endian 16-bit words of `data` to `sum`, folding carries back
/// in, so sums over several buffers can be chained. A buffer that holds a
/// valid checksum sums to 0xffff.
pub fn ones_complement_sum(sum: u16, data: &[u8]) -> u16 {
    let mut total = u64::from(sum);
    for word in data.chunks(2) {
        let low = word.get(1).copied().unwrap_or(0);
        total += u64::from(u16::from_be_bytes([word[0], low]));
    }
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    total as u16
}

/// What a [`Span`] of a built frame holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    /// Destination and source MAC and the first type field (14 bytes).
    Ethernet,
    /// One VLAN tag as a parser reads it: the TCI, then the next type.
    Vlan,
    Arp,
    /// The IPv4 header with its options.
    Ipv4,
    /// The fixed 40-byte IPv6 header.
    Ipv6,
    /// An IPv6 extension header of the given type.
    Ext(u8),
    /// The TCP header with its options.
    Tcp,
    /// The UDP header.
    Udp,
    /// A whole ICMP or ICMPv6 message.
    Icmp,
    /// Upper-layer bytes given verbatim with [`Frame::l4_bytes`].
    L4(u8),
    /// Data after a TCP or UDP header, or after an unknown ethertype.
    Payload,
    /// Ethernet padding after the network packet.
    Padding,
}

/// Where one header lies in a built frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub layer: Layer,
    pub range: Range<usize>,
}

/// A built frame with the position of each header, outermost first. Spans
/// are contiguous and cover the whole frame; empty ones are left out.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Built {
    pub bytes: Vec<u8>,
    pub spans: Vec<Span>,
}

impl Built {
    fn single(layer: Layer, bytes: Vec<u8>) -> Self {
        let mut built = Self::default();
        built.push(layer, &bytes);
        built
    }

    fn push(&mut self, layer: Layer, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let start = self.bytes.len();
        self.bytes.extend_from_slice(bytes);
        let range = start..self.bytes.len();
        self.spans.push(Span { layer, range });
    }

    fn append(&mut self, inner: &mut Built) {
        let base = self.bytes.len();
        self.bytes.append(&mut inner.bytes);
        self.spans.extend(inner.spans.drain(..).map(|span| Span {
            layer: span.layer,
            range: span.range.start + base..span.range.end + base,
        }));
    }

    /// The first `len` bytes, with spans clipped to them.
    fn cut(mut self, len: usize) -> Self {
        self.bytes.truncate(len);
        self.spans.retain(|span| span.range.start < len);
        if let Some(last) = self.spans.last_mut() {
            last.range.end = last.range.end.min(len);
        }
        self
    }

    /// Every offset where a header starts or ends, from 0 to the frame's
    /// length: truncating the frame at each one cuts it between headers.
    pub fn boundaries(&self) -> Vec<usize> {
        let mut offsets = vec![0];
        offsets.extend(self.spans.iter().map(|span| span.range.end));
        offsets.dedup();
        offsets
    }

    /// The range of the first span of `layer`, if the frame has one.
    pub fn span(&self, layer: Layer) -> Option<Range<usize>> {
        let span = self.spans.iter().find(|span| span.layer == layer)?;
        Some(span.range.clone())
    }

    /// The first `len` bytes of the frame.
    ///
    /// # Panics
    ///
    /// If `len` exceeds the frame.
    pub fn truncated(&self, len: usize) -> Vec<u8> {
        let frame_len = self.bytes.len();
        assert!(
            len <= frame_len,
            "cannot keep {len} bytes of a {frame_len}-byte frame"
        );
        self.bytes[..len].to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const V4_DST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
    const V6_SRC: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    const V6_DST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x25);

    /// Ones' complement sum of the 16-bit words of all `parts` laid end to
    /// end, computed apart from the builder's own helper.
    fn folded_sum(parts: &[&[u8]]) -> u16 {
        let bytes = parts.concat();
        let mut sum: u32 = 0;
        for i in (0..bytes.len()).step_by(2) {
            let high = u32::from(bytes[i]) << 8;
            let low = bytes.get(i + 1).map_or(0, |&b| u32::from(b));
            sum += high | low;
        }
        while sum >> 16 != 0 {
            sum = (sum >> 16) + (sum & 0xffff);
        }
        sum as u16
    }

    fn v4_pseudo(protocol: u8, len: usize) -> Vec<u8> {
        let mut pseudo = [V4_SRC.octets(), V4_DST.octets()].concat();
        pseudo.extend_from_slice(&[0, protocol]);
        pseudo.extend_from_slice(&(len as u16).to_be_bytes());
        pseudo
    }

    fn v6_pseudo(protocol: u8, len: usize) -> Vec<u8> {
        let mut pseudo = [V6_SRC.octets(), V6_DST.octets()].concat();
        pseudo.extend_from_slice(&(len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        pseudo
    }

    fn range(built: &Built, layer: Layer) -> Range<usize> {
        built
            .span(layer)
            .unwrap_or_else(|| panic!("no {layer:?} span in {:?}", built.spans))
    }

    #[test]
    fn ipv4_syn_matches_hand_written_bytes() {
        let frame = Frame::ipv4(V4_SRC, V4_DST)
            .tcp(TcpSeg::syn(40000, 25))
            .build();

        #[rustfmt::skip]
        let expected: &[u8] = &[
            // Ethernet: destination, source, IPv4.
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x02,
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01,
            0x08, 0x00,
            // IPv4: version 4 IHL 5, TOS 0, total length 40, id 0,
            // flags/offset 0, TTL 64, TCP, checksum, 192.0.2.1, 198.51.100.25.
            0x45, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00,
            0x40, 0x06, 0x8e, 0x82,
            192, 0, 2, 1,
            198, 51, 100, 25,
            // TCP: 40000 -> 25, seq 1, ack 0, data offset 5, SYN,
            // window 64240, checksum, urgent pointer 0.
            0x9c, 0x40, 0x00, 0x19,
            0x00, 0x00, 0x00, 0x01,
            0x00, 0x00, 0x00, 0x00,
            0x50, 0x02, 0xfa, 0xf0,
            0x2c, 0x49, 0x00, 0x00,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn qinq_arp_matches_hand_written_bytes() {
        let frame = Frame::arp(V4_SRC, Ipv4Addr::new(192, 0, 2, 2))
            .vlan(ETH_P_8021AD, 10)
            .vlan(ETH_P_8021Q, 100)
            .build();

        #[rustfmt::skip]
        let expected: &[u8] = &[
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01,
            // S-tag VLAN 10, C-tag VLAN 100, then ARP.
            0x88, 0xa8, 0x00, 0x0a,
            0x81, 0x00, 0x00, 0x64,
            0x08, 0x06,
            // Ethernet/IPv4, lengths 6/4, request.
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01,
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01, 192, 0, 2, 1,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 192, 0, 2, 2,
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn ipv6_hop_by_hop_udp_matches_hand_written_bytes() {
        let frame = Frame::ipv6(V6_SRC, V6_DST)
            .ext(Ext::hop_by_hop(8))
            .udp(UdpDgram::new(40000, 25).payload(b"hi!"))
            .build();

        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x02,
            0x00, 0x00, 0x5e, 0x00, 0x53, 0x01,
            0x86, 0xdd,
            // IPv6: version 6, payload length 8 + 11, hop-by-hop, hop limit 64.
            0x60, 0x00, 0x00, 0x00, 0x00, 0x13, 0x00, 0x40,
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25,
            // Hop-by-hop: next UDP, length 0, PadN with 4 zero bytes.
            0x11, 0x00, 0x01, 0x04, 0x00, 0x00, 0x00, 0x00,
            // UDP: 40000 -> 25, length 11, checksum, "hi!".
            0x9c, 0x40, 0x00, 0x19, 0x00, 0x0b, 0x7e, 0x7d,
            b'h', b'i', b'!',
        ];
        assert_eq!(frame, expected);
    }

    #[test]
    fn ipv4_header_checksum_holds_whatever_the_header_says() {
        let frames = [
            Frame::ipv4(V4_SRC, V4_DST).tcp(TcpSeg::syn(1, 25)),
            Frame::ipv4(V4_SRC, V4_DST)
                .options(&[7, 7, 4, 0, 0, 0, 0])
                .tcp(TcpSeg::syn(1, 25)),
            Frame::ipv4(V4_SRC, V4_DST)
                .fragment(185, true)
                .ident(0xbeef)
                .tcp(TcpSeg::syn(1, 25)),
            Frame::ipv4(V4_SRC, V4_DST)
                .total_len(1500)
                .tos(0xb8)
                .ttl(1)
                .tcp(TcpSeg::syn(1, 25)),
            Frame::ipv4(V4_SRC, V4_DST).ihl(4).tcp(TcpSeg::syn(1, 25)),
        ];
        for frame in frames {
            let built = frame.build_layout();
            let header = &built.bytes[range(&built, Layer::Ipv4)];
            assert_eq!(folded_sum(&[header]), 0xffff, "{frame:?}");
        }
    }

    #[test]
    fn tcp_checksum_covers_the_pseudo_header_in_both_families() {
        let segment = TcpSeg::new(40000, 25)
            .flags(SYN | ECE | CWR)
            .options(&[2, 4, 0x05, 0xb4, 1, 3, 3, 7])
            .payload(b"odd");

        let built = Frame::ipv4(V4_SRC, V4_DST)
            .tcp(segment.clone())
            .build_layout();
        let tcp = &built.bytes[range(&built, Layer::Tcp).start..];
        assert_eq!(tcp.len(), 20 + 8 + 3);
        let pseudo = v4_pseudo(IPPROTO_TCP, tcp.len());
        assert_eq!(folded_sum(&[&pseudo, tcp]), 0xffff);

        let built = Frame::ipv6(V6_SRC, V6_DST)
            .ext(Ext::destination_options(16))
            .tcp(segment)
            .build_layout();
        let tcp = &built.bytes[range(&built, Layer::Tcp).start..];
        let pseudo = v6_pseudo(IPPROTO_TCP, tcp.len());
        assert_eq!(folded_sum(&[&pseudo, tcp]), 0xffff);
    }

    #[test]
    fn udp_and_icmp_checksums_hold() {
        let built = Frame::ipv4(V4_SRC, V4_DST)
            .udp(UdpDgram::new(53, 25).payload(b"abcde"))
            .build_layout();
        let udp = &built.bytes[range(&built, Layer::Udp).start..];
        let pseudo = v4_pseudo(IPPROTO_UDP, udp.len());
        assert_eq!(folded_sum(&[&pseudo, udp]), 0xffff);

        let built = Frame::ipv4(V4_SRC, V4_DST)
            .icmp(Icmp::echo_request(7, 1))
            .build_layout();
        assert_eq!(built.bytes[14 + 9], IPPROTO_ICMP);
        let icmp = &built.bytes[range(&built, Layer::Icmp)];
        assert_eq!(icmp[0], 8);
        assert_eq!(folded_sum(&[icmp]), 0xffff);

        let built = Frame::ipv6(V6_SRC, V6_DST)
            .ttl(255)
            .icmp(Icmp::neighbour_solicitation(V6_DST))
            .build_layout();
        assert_eq!(built.bytes[14 + 6], IPPROTO_ICMPV6);
        assert_eq!(built.bytes[14 + 7], 255);
        let icmp = &built.bytes[range(&built, Layer::Icmp)];
        assert_eq!((icmp[0], icmp.len()), (135, 32));
        let pseudo = v6_pseudo(IPPROTO_ICMPV6, icmp.len());
        assert_eq!(folded_sum(&[&pseudo, icmp]), 0xffff);
    }

    #[test]
    fn ipv4_fields_follow_the_setters() {
        let frame = Frame::ipv4(V4_SRC, V4_DST)
            .options(&[1, 1, 1])
            .fragment(185, true)
            .dont_fragment()
            .tcp(TcpSeg::syn(40000, 25))
            .build();
        let ip = &frame[14..];
        assert_eq!(ip[0], 0x46, "options padded to 4 bytes make IHL 6");
        assert_eq!(&ip[2..4], &44u16.to_be_bytes());
        assert_eq!(&ip[6..8], &(0x6000u16 | 185).to_be_bytes());
        assert_eq!(&ip[20..24], &[1, 1, 1, 0]);
        assert_eq!(frame.len(), 14 + 44);

        let frame = Frame::ipv4(V4_SRC, V4_DST)
            .ihl(4)
            .total_len(1500)
            .tcp(TcpSeg::syn(40000, 25))
            .build();
        assert_eq!(frame[14], 0x44);
        assert_eq!(&frame[16..18], &1500u16.to_be_bytes());
        assert_eq!(frame.len(), 14 + 20 + 20, "overrides change no bytes");
    }

    #[test]
    fn tiny_first_fragment_hides_in_padding() {
        let built = Frame::ipv4(V4_SRC, V4_DST)
            .fragment(0, true)
            .tcp(TcpSeg::syn(40000, 25))
            .l4_truncate(8)
            .pad_to_min()
            .build_layout();

        let frame = &built.bytes;
        assert_eq!(frame.len(), ETH_MIN_LEN);
        assert_eq!(&frame[16..18], &28u16.to_be_bytes(), "total length 20 + 8");
        assert_eq!(&frame[20..22], &0x2000u16.to_be_bytes(), "MF, offset 0");
        assert_eq!(&frame[34..38], &[0x9c, 0x40, 0x00, 0x19]);
        assert!(frame[42..].iter().all(|&b| b == 0));
        assert_eq!(range(&built, Layer::Tcp), 34..42);
        assert_eq!(range(&built, Layer::Padding), 42..60);
        assert_eq!(folded_sum(&[&frame[14..34]]), 0xffff);
    }

    #[test]
    fn padding_leaves_long_frames_alone() {
        let long = Frame::ipv4(V4_SRC, V4_DST).tcp(TcpSeg::syn(1, 25).payload(&[9; 30]));
        assert_eq!(long.clone().pad_to_min().build(), long.build());
    }

    #[test]
    fn tcp_fields_follow_the_setters() {
        let segment = TcpSeg::new(1234, 25)
            .flags(FIN | SYN)
            .seq(0x0102_0304)
            .ack_number(0x0506_0708)
            .window(512)
            .urgent_pointer(3);
        for (doff, byte) in [(None, 0x50), (Some(4), 0x40), (Some(15), 0xf0)] {
            let segment = match doff {
                Some(doff) => segment.clone().doff(doff),
                None => segment.clone(),
            };
            let frame = Frame::ipv4(V4_SRC, V4_DST).tcp(segment).build();
            let tcp = &frame[34..];
            assert_eq!(tcp.len(), 20, "doff changes no bytes");
            assert_eq!(&tcp[4..8], &[1, 2, 3, 4]);
            assert_eq!(&tcp[8..12], &[5, 6, 7, 8]);
            assert_eq!((tcp[12], tcp[13]), (byte, FIN | SYN));
            assert_eq!(&tcp[14..16], &512u16.to_be_bytes());
            assert_eq!(&tcp[18..20], &3u16.to_be_bytes());
        }

        let frame = Frame::ipv4(V4_SRC, V4_DST)
            .tcp(TcpSeg::syn(1, 25).options(&[2, 4, 5, 0xb4, 1]))
            .build();
        assert_eq!(frame[34 + 12], 0x70, "8 bytes of options make doff 7");
        assert_eq!(&frame[34 + 20..], &[2, 4, 5, 0xb4, 1, 0, 0, 0]);
    }

    #[test]
    fn extension_chain_links_every_header() {
        let exts = [
            Ext::hop_by_hop(8),
            Ext::destination_options(16),
            Ext::routing(24),
            Ext::authentication(16),
            Ext::destination_options(8),
            Ext::raw(253, &[0, 0, 0, 0, 0, 0, 0]),
            Ext::routing(8),
            Ext::authentication(24),
            Ext::fragment(100, true, 7),
        ];
        let frame = exts
            .iter()
            .fold(Frame::ipv6(V6_SRC, V6_DST), |frame, ext| {
                frame.ext(ext.clone())
            })
            .tcp(TcpSeg::syn(40000, 25))
            .build();

        let ip = &frame[14..];
        let exts_len = 8 + 16 + 24 + 16 + 8 + 8 + 8 + 24 + 8;
        let payload_len = u16::from_be_bytes([ip[4], ip[5]]);
        assert_eq!(usize::from(payload_len), exts_len + 20);

        let mut kinds = vec![ip[6]];
        let mut at = 40;
        while kinds.len() <= exts.len() {
            let kind = *kinds.last().unwrap();
            let header = &ip[at..];
            at += match kind {
                IPPROTO_FRAGMENT => 8,
                IPPROTO_AH => (usize::from(header[1]) + 2) * 4,
                _ => (usize::from(header[1]) + 1) * 8,
            };
            kinds.push(header[0]);
        }
        let expected: Vec<u8> = exts.iter().map(Ext::kind).chain([IPPROTO_TCP]).collect();
        assert_eq!(kinds, expected);
        assert_eq!(at, 40 + exts_len);
        assert_eq!(&ip[at..at + 4], &[0x9c, 0x40, 0x00, 0x19]);

        let fragment = &ip[at - 8..at];
        assert_eq!(fragment[0], IPPROTO_TCP);
        assert_eq!(&fragment[2..4], &(100u16 << 3 | 1).to_be_bytes());
        assert_eq!(&fragment[4..8], &7u32.to_be_bytes());
    }

    #[test]
    fn option_headers_are_filled_with_skippable_options() {
        for len in [8, 16, 24, 256, 264, 520, 2048] {
            let ext = Ext::hop_by_hop(len);
            let bytes = ext.encode(IPPROTO_TCP);
            assert_eq!(bytes.len(), len);
            assert_eq!(usize::from(bytes[1]), len / 8 - 1);

            let mut at = 2;
            let mut padding_run = 0;
            while at < len {
                let (kind, option_len) = match bytes[at] {
                    0 => (0, 1),
                    kind => (kind, 2 + usize::from(bytes[at + 1])),
                };
                assert!(matches!(kind, 0 | 1 | 0x1e), "option {kind:#x} at {at}");
                assert_eq!(kind & 0xc0, 0, "a receiver must skip option {kind:#x}");
                padding_run = if kind <= 1 {
                    padding_run + option_len
                } else {
                    0
                };
                assert!(
                    padding_run <= 7,
                    "{padding_run} bytes of padding in a {len}-byte header"
                );
                at += option_len;
            }
            assert_eq!(at, len, "options overrun the {len}-byte header");
        }
    }

    #[test]
    fn ipv6_lengths_follow_what_is_carried_unless_overridden() {
        let frame = Frame::ipv6(V6_SRC, V6_DST)
            .ext(Ext::fragment(0, true, 1))
            .tcp(TcpSeg::syn(40000, 25))
            .l4_truncate(12)
            .build();
        assert_eq!(&frame[18..20], &(8u16 + 12).to_be_bytes());
        assert_eq!(frame.len(), 14 + 40 + 8 + 12);

        let frame = Frame::ipv6(V6_SRC, V6_DST)
            .payload_len(9000)
            .tcp(TcpSeg::syn(40000, 25))
            .build();
        assert_eq!(&frame[18..20], &9000u16.to_be_bytes());
        assert_eq!(frame.len(), 14 + 40 + 20);

        let bare = Frame::ipv6(V6_SRC, V6_DST).build();
        assert_eq!((bare[18], bare[19], bare[20]), (0, 0, IPPROTO_NONE));
    }

    #[test]
    fn non_first_fragment_carries_raw_bytes() {
        let frame = Frame::ipv4(V4_SRC, V4_DST)
            .fragment(3, false)
            .l4_bytes(IPPROTO_TCP, &[0xaa; 16])
            .build();
        assert_eq!(frame[14 + 9], IPPROTO_TCP);
        assert_eq!(&frame[20..22], &3u16.to_be_bytes());
        assert_eq!(&frame[34..], &[0xaa; 16]);
    }

    #[test]
    fn tags_stack_in_the_order_given() {
        let frame = Frame::ipv4(V4_SRC, V4_DST)
            .vlan(ETH_P_8021Q, 1)
            .vlan(ETH_P_8021AD, 2)
            .vlan(ETH_P_8021Q, 0x2003)
            .tcp(TcpSeg::syn(40000, 25))
            .build();
        #[rustfmt::skip]
        let link: &[u8] = &[
            0x81, 0x00, 0x00, 0x01,
            0x88, 0xa8, 0x00, 0x02,
            0x81, 0x00, 0x20, 0x03,
            0x08, 0x00, 0x45,
        ];
        assert_eq!(&frame[12..27], link);
    }

    #[test]
    fn boundaries_separate_every_header() {
        let built = Frame::ipv4(V4_SRC, V4_DST)
            .vlan(ETH_P_8021Q, 100)
            .tcp(TcpSeg::syn(40000, 25).payload(b"EHLO"))
            .build_layout();
        assert_eq!(built.boundaries(), [0, 14, 18, 38, 58, 62]);
        let layers: Vec<Layer> = built.spans.iter().map(|span| span.layer).collect();
        let expected = [
            Layer::Ethernet,
            Layer::Vlan,
            Layer::Ipv4,
            Layer::Tcp,
            Layer::Payload,
        ];
        assert_eq!(layers, expected);
        for cut in built.boundaries() {
            assert_eq!(built.truncated(cut), built.bytes[..cut]);
        }

        let frame = Frame::ipv6(V6_SRC, V6_DST)
            .ext(Ext::hop_by_hop(8))
            .pad_to_min();
        assert_eq!(frame.build_layout().boundaries(), [0, 14, 54, 62]);
        assert_eq!(frame.truncated(20), frame.build()[..20]);
    }

    #[test]
    fn other_ethertypes_carry_their_payload() {
        let frame = Frame::ethertype(0x88cc, &[1, 2, 3]).pad_to_min().build();
        assert_eq!(&frame[12..17], &[0x88, 0xcc, 1, 2, 3]);
        assert_eq!(frame.len(), ETH_MIN_LEN);
    }

    #[test]
    #[should_panic(expected = "options() needs an IPv4 frame")]
    fn ipv4_setter_refuses_an_ipv6_frame() {
        let _ = Frame::ipv6(V6_SRC, V6_DST).options(&[1]);
    }

    #[test]
    #[should_panic(expected = "l4_truncate(21) exceeds the 20-byte message")]
    fn truncation_beyond_the_message_is_refused() {
        Frame::ipv4(V4_SRC, V4_DST)
            .tcp(TcpSeg::syn(1, 25))
            .l4_truncate(21)
            .build();
    }
}
