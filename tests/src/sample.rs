//! The sample capture that `cargo xtask demo` replays: a few moments of a
//! mail gateway's traffic under `examples/policy.toml`, with one frame of
//! each kind an operator should know how gatekeeper judges.
//!
//! `examples/sample.pcap` is generated from [`frames`]; a test keeps the two
//! in step (run it with `GATEKEEPER_BLESS=1` to rewrite the file).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::frames::{ACK, ETH_P_8021Q, Frame, SYN, TcpSeg, UdpDgram};

/// The gateway's addresses.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);
/// The gateway's IPv6 address.
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 25);

/// Path of the sample capture, relative to the workspace root.
pub const SAMPLE_PCAP: &str = "examples/sample.pcap";

/// The frames of the sample capture, each with what it shows.
pub fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let filter = Ipv4Addr::new(198, 51, 100, 20);
    let stranger = Ipv4Addr::new(203, 0, 113, 66);
    let syn_from = |src: Ipv4Addr, port: u16| {
        Frame::ipv4(src, GATEWAY_V4).tcp(TcpSeg::syn(51000, port).options(&[2, 4, 5, 0xb4]))
    };
    vec![
        (
            "ARP request from the upstream filter",
            Frame::arp(filter, GATEWAY_V4).build(),
        ),
        (
            "the upstream filter opens a connection",
            syn_from(filter, 25).build(),
        ),
        (
            "the gateway answers (SYN-ACK)",
            Frame::ipv4(GATEWAY_V4, filter)
                .tcp(TcpSeg::new(25, 51000).flags(SYN | ACK))
                .build(),
        ),
        (
            "the handshake completes (ACK)",
            Frame::ipv4(filter, GATEWAY_V4)
                .tcp(TcpSeg::new(51000, 25).flags(ACK))
                .build(),
        ),
        (
            "a direct-send attempt from an unknown host",
            syn_from(stranger, 25).build(),
        ),
        (
            "the same host on the web port",
            syn_from(stranger, 443).build(),
        ),
        (
            "a printer sends a scan",
            syn_from(Ipv4Addr::new(192, 0, 2, 70), 25).build(),
        ),
        (
            "the ERP server, on a tagged VLAN",
            syn_from(Ipv4Addr::new(192, 0, 2, 10), 25)
                .vlan(ETH_P_8021Q, 40)
                .build(),
        ),
        (
            "the upstream filter over IPv6",
            Frame::ipv6(
                Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 20),
                GATEWAY_V6,
            )
            .tcp(TcpSeg::syn(51001, 25))
            .build(),
        ),
        (
            "a direct-send attempt over IPv6",
            Frame::ipv6(
                Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 66),
                GATEWAY_V6,
            )
            .tcp(TcpSeg::syn(51002, 25))
            .build(),
        ),
        (
            "a first fragment hiding the TCP flags",
            syn_from(stranger, 25)
                .fragment(0, true)
                .l4_truncate(8)
                .pad_to_min()
                .build(),
        ),
        (
            "a DNS query",
            Frame::ipv4(stranger, GATEWAY_V4)
                .udp(UdpDgram::new(53000, 53).payload(&[0; 29]))
                .build(),
        ),
    ]
}
