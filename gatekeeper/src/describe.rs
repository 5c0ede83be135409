//! One-line descriptions of frames for people reading `replay` output:
//! protocol, addresses, ports and TCP flags, in the style of tcpdump.
//!
//! The description is for orientation only. The verdict next to it comes
//! from the XDP program; this module does not take part in any decision.

use std::{fmt, net::IpAddr};

use etherparse::{LaxNetSlice, LaxSlicedPacket, LinkSlice, TransportSlice};
use serde::Serialize;

/// What a frame is, as far as it could be parsed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FrameSummary {
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `igmp`, `ip proto N` (another
    /// protocol), `arp`, or `ethertype 0xNNNN`.
    pub protocol: String,
    /// Source address, for IP.
    pub source: Option<IpAddr>,
    /// Destination address, for IP.
    pub destination: Option<IpAddr>,
    /// Source port, for TCP and UDP.
    pub source_port: Option<u16>,
    /// Destination port, for TCP and UDP.
    pub destination_port: Option<u16>,
    /// TCP flags as tcpdump prints them (`S`, `S.`, `.`, `P.`, `R`...).
    pub flags: Option<String>,
    /// The datagram is an IP fragment.
    pub fragment: bool,
}

/// Describes an Ethernet frame; `None` when not even the Ethernet header is
/// there.
pub fn describe(frame: &[u8]) -> Option<FrameSummary> {
    let packet = LaxSlicedPacket::from_ethernet(frame).ok()?;
    let mut summary = FrameSummary {
        protocol: String::new(),
        source: None,
        destination: None,
        source_port: None,
        destination_port: None,
        flags: None,
        fragment: false,
    };

    let payload = match &packet.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            let header = ip.header();
            summary.source = Some(header.source_addr().into());
            summary.destination = Some(header.destination_addr().into());
            Some(ip.payload())
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            let header = ip.header();
            summary.source = Some(header.source_addr().into());
            summary.destination = Some(header.destination_addr().into());
            Some(ip.payload())
        }
        Some(LaxNetSlice::Arp(_)) => {
            summary.protocol = "arp".to_owned();
            return Some(summary);
        }
        None => {
            let ether_type = match (packet.link_exts.last(), &packet.link) {
                (Some(ext), _) => ext.payload()?.ether_type,
                (None, Some(LinkSlice::Ethernet2(ethernet))) => ethernet.ether_type(),
                _ => return None,
            };
            summary.protocol = format!("ethertype 0x{:04x}", ether_type.0);
            return Some(summary);
        }
    };
    let ip_number = payload.map(|payload| {
        summary.fragment = payload.fragmented;
        payload.ip_number.0
    });

    summary.protocol = match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            summary.source_port = Some(tcp.source_port());
            summary.destination_port = Some(tcp.destination_port());
            let mut flags = String::new();
            for (set, letter) in [
                (tcp.syn(), 'S'),
                (tcp.fin(), 'F'),
                (tcp.rst(), 'R'),
                (tcp.psh(), 'P'),
                (tcp.urg(), 'U'),
                (tcp.ece(), 'E'),
                (tcp.cwr(), 'W'),
                (tcp.ack(), '.'),
            ] {
                if set {
                    flags.push(letter);
                }
            }
            summary.flags = Some(flags);
            "tcp"
        }
        Some(TransportSlice::Udp(udp)) => {
            summary.source_port = Some(udp.source_port());
            summary.destination_port = Some(udp.destination_port());
            "udp"
        }
        Some(TransportSlice::Icmpv4(_)) => "icmp",
        Some(TransportSlice::Icmpv6(_)) => "icmpv6",
        Some(TransportSlice::Igmp(_)) => "igmp",
        // A fragment too short for its transport header, or a protocol
        // etherparse does not parse.
        None => {
            summary.protocol = match ip_number {
                Some(6) => "tcp".to_owned(),
                Some(17) => "udp".to_owned(),
                Some(number) => format!("ip proto {number}"),
                None => "ip".to_owned(),
            };
            return Some(summary);
        }
    }
    .to_owned();
    Some(summary)
}

impl fmt::Display for FrameSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.protocol)?;
        if let (Some(source), Some(destination)) = (self.source, self.destination) {
            write!(
                f,
                " {} > {}",
                Endpoint(source, self.source_port),
                Endpoint(destination, self.destination_port)
            )?;
        }
        if let Some(flags) = &self.flags {
            write!(f, " [{flags}]")?;
        }
        if self.fragment {
            f.write_str(" fragment")?;
        }
        Ok(())
    }
}

/// An address with an optional port, bracketed for IPv6 as in URLs.
struct Endpoint(IpAddr, Option<u16>);

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (IpAddr::V4(addr), Some(port)) => write!(f, "{addr}:{port}"),
            (IpAddr::V6(addr), Some(port)) => write!(f, "[{addr}]:{port}"),
            (addr, None) => write!(f, "{addr}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ethernet(ether_type: u16) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        frame.extend_from_slice(&ether_type.to_be_bytes());
        frame
    }

    fn ipv4_tcp(flags: u8, more_fragments: bool) -> Vec<u8> {
        let mut frame = ethernet(0x0800);
        let frag = if more_fragments { 0x20 } else { 0 };
        frame.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, frag, 0, 64, 6, 0, 0]);
        frame.extend_from_slice(&[203, 0, 113, 9, 192, 0, 2, 25]);
        frame.extend_from_slice(&[0x9c, 0x40, 0, 25, 0, 0, 0, 1, 0, 0, 0, 0]);
        frame.extend_from_slice(&[0x50, flags, 0xfa, 0xf0, 0, 0, 0, 0]);
        frame
    }

    #[test]
    fn tcp_over_ipv4_reads_like_tcpdump() {
        let summary = describe(&ipv4_tcp(0x02, false)).expect("a valid frame");
        assert_eq!(
            summary.to_string(),
            "tcp 203.0.113.9:40000 > 192.0.2.25:25 [S]"
        );
        let summary = describe(&ipv4_tcp(0x12, false)).expect("a valid frame");
        assert_eq!(summary.flags.as_deref(), Some("S."));
        let summary = describe(&ipv4_tcp(0x02, true)).expect("a valid frame");
        assert!(summary.fragment);
    }

    #[test]
    fn udp_over_ipv6_brackets_the_addresses() {
        let mut frame = ethernet(0x86dd);
        frame.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 17, 64]);
        let mut source = [0; 16];
        source[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        source[15] = 1;
        let mut destination = source;
        destination[15] = 2;
        frame.extend_from_slice(&source);
        frame.extend_from_slice(&destination);
        frame.extend_from_slice(&[0, 53, 0, 25, 0, 8, 0, 0]);
        let summary = describe(&frame).expect("a valid frame");
        assert_eq!(
            summary.to_string(),
            "udp [2001:db8::1]:53 > [2001:db8::2]:25"
        );
    }

    #[test]
    fn frames_without_ip_name_their_type() {
        let mut lldp = ethernet(0x8100);
        lldp.extend_from_slice(&[0, 7, 0x88, 0xcc, 0, 0]);
        let summary = describe(&lldp).expect("an Ethernet frame");
        assert_eq!(summary.to_string(), "ethertype 0x88cc");
        assert_eq!(describe(&[0; 10]), None);
    }
}
