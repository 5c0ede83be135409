//! The real XDP program, run with BPF_PROG_RUN on crafted frames: one test per
//! datapath rule, each asserting the exact action, verdict and counter deltas.

use std::net::{Ipv4Addr, Ipv6Addr};

use gatekeeper::datapath::Verdict;
use gatekeeper_tests::{
    frames::{
        ACK, CWR, ECE, ETH_P_8021AD, ETH_P_8021Q, Ext, FIN, Frame, Icmp, Layer, PSH, RST, SYN,
        TcpSeg, UdpDgram,
    },
    support::{Expect, Family::V4, Family::V6, Harness},
};

const POLICY: &str = r#"
mode = "enforce"
ports = [25, 587]

[[connector]]
name = "upstream-filter"
sources = ["198.51.100.0/24", "2001:db8:100::/48"]

[[connector]]
name = "printers"
sources = ["198.51.100.128/25", "192.0.2.10", "2001:db8:100:5::/64"]
"#;

const MONITOR_POLICY: &str = r#"
mode = "monitor"
ports = [25]

[[connector]]
name = "upstream-filter"
sources = ["198.51.100.0/24", "2001:db8:100::/48"]
"#;

/// Inside `upstream-filter` only.
const FILTER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
/// Inside both connectors; `printers` has the longer prefix.
const PRINTER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
/// Inside no connector.
const STRANGER_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 25);

const FILTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 7);
const PRINTER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 5, 0, 0, 0, 7);
const STRANGER_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xbad, 0, 0, 0, 0, 9);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x25, 0, 0, 0, 0, 25);

fn syn_v4(src: Ipv4Addr, dport: u16) -> Frame {
    Frame::ipv4(src, GATEWAY_V4).tcp(TcpSeg::syn(40000, dport))
}

fn syn_v6(src: Ipv6Addr, dport: u16) -> Frame {
    Frame::ipv6(src, GATEWAY_V6).tcp(TcpSeg::syn(40000, dport))
}

#[test]
fn gated_syns_are_judged_by_the_longest_matching_connector() {
    let mut gk = Harness::new(POLICY);
    let cases = [
        (
            "v4 connector",
            syn_v4(FILTER_V4, 25),
            Expect::allow(V4, "upstream-filter"),
        ),
        (
            "v4 longest prefix",
            syn_v4(PRINTER_V4, 25),
            Expect::allow(V4, "printers"),
        ),
        (
            "v4 bare address",
            syn_v4(Ipv4Addr::new(192, 0, 2, 10), 25),
            Expect::allow(V4, "printers"),
        ),
        (
            "v4 next to bare address",
            syn_v4(Ipv4Addr::new(192, 0, 2, 11), 25),
            Expect::deny(V4),
        ),
        ("v4 stranger", syn_v4(STRANGER_V4, 25), Expect::deny(V4)),
        ("v4 second port", syn_v4(STRANGER_V4, 587), Expect::deny(V4)),
        (
            "v6 connector",
            syn_v6(FILTER_V6, 25),
            Expect::allow(V6, "upstream-filter"),
        ),
        (
            "v6 longest prefix",
            syn_v6(PRINTER_V6, 587),
            Expect::allow(V6, "printers"),
        ),
        ("v6 stranger", syn_v6(STRANGER_V6, 25), Expect::deny(V6)),
    ];
    for (what, frame, expect) in cases {
        gk.check(what, &frame.build(), &expect);
    }
}

#[test]
fn monitor_mode_passes_and_counts_would_deny() {
    let mut gk = Harness::new(MONITOR_POLICY);
    gk.check(
        "v4 stranger",
        &syn_v4(STRANGER_V4, 25).build(),
        &Expect::would_deny(V4),
    );
    gk.check(
        "v6 stranger",
        &syn_v6(STRANGER_V6, 25).build(),
        &Expect::would_deny(V6),
    );
    gk.check(
        "v4 connector",
        &syn_v4(FILTER_V4, 25).build(),
        &Expect::allow(V4, "upstream-filter"),
    );
    gk.check(
        "port not gated here",
        &syn_v4(STRANGER_V4, 587).build(),
        &Expect::pass(),
    );
}

#[test]
fn only_syn_without_ack_is_gated_whatever_the_other_flags() {
    let mut gk = Harness::new(POLICY);
    let flag_cases = [
        ("SYN", SYN, Expect::deny(V4)),
        ("SYN ECE CWR", SYN | ECE | CWR, Expect::deny(V4)),
        ("SYN PSH FIN", SYN | PSH | FIN, Expect::deny(V4)),
        ("SYN RST", SYN | RST, Expect::deny(V4)),
        ("SYN-ACK", SYN | ACK, Expect::pass()),
        ("ACK", ACK, Expect::pass()),
        ("PSH ACK", PSH | ACK, Expect::pass()),
        ("RST", RST, Expect::pass()),
        ("FIN ACK", FIN | ACK, Expect::pass()),
        ("no flags", 0, Expect::pass()),
    ];
    for (what, flags, expect) in flag_cases {
        let v4 = Frame::ipv4(STRANGER_V4, GATEWAY_V4).tcp(TcpSeg::new(40000, 25).flags(flags));
        gk.check(what, &v4.build(), &expect);
        let v6 = Frame::ipv6(STRANGER_V6, GATEWAY_V6).tcp(TcpSeg::new(40000, 25).flags(flags));
        let expect_v6 = if expect == Expect::pass() {
            Expect::pass()
        } else {
            Expect::deny(V6)
        };
        gk.check(what, &v6.build(), &expect_v6);
    }
}

#[test]
fn traffic_that_is_not_gated_passes_untouched() {
    let mut gk = Harness::new(POLICY);
    let frames = [
        ("other port", syn_v4(STRANGER_V4, 80).build()),
        ("v6 other port", syn_v6(STRANGER_V6, 443).build()),
        (
            "SYN from port 25",
            Frame::ipv4(STRANGER_V4, GATEWAY_V4)
                .tcp(TcpSeg::syn(25, 40000))
                .build(),
        ),
        (
            "UDP to 25",
            Frame::ipv4(STRANGER_V4, GATEWAY_V4)
                .udp(UdpDgram::new(40000, 25))
                .build(),
        ),
        (
            "v6 UDP to 25",
            Frame::ipv6(STRANGER_V6, GATEWAY_V6)
                .udp(UdpDgram::new(40000, 25))
                .build(),
        ),
        (
            "ICMP echo",
            Frame::ipv4(STRANGER_V4, GATEWAY_V4)
                .icmp(Icmp::echo_request(1, 1))
                .build(),
        ),
        (
            "neighbour solicitation",
            Frame::ipv6(STRANGER_V6, GATEWAY_V6)
                .icmp(Icmp::neighbour_solicitation(GATEWAY_V6))
                .build(),
        ),
        ("ARP", Frame::arp(STRANGER_V4, GATEWAY_V4).build()),
        ("LLDP", Frame::ethertype(0x88cc, &[0; 46]).build()),
        ("IP version 5 in an IPv4 frame", {
            let mut frame = syn_v4(STRANGER_V4, 25).build();
            frame[14] = 0x55;
            frame
        }),
        ("IP version 4 in an IPv6 frame", {
            let mut frame = syn_v6(STRANGER_V6, 25).build();
            frame[14] = 0x40;
            frame
        }),
    ];
    for (what, frame) in frames {
        gk.check(what, &frame, &Expect::pass());
    }
}

#[test]
fn vlan_tags_up_to_two_in_either_order() {
    let mut gk = Harness::new(POLICY);
    let tag_sets: [&[u16]; 5] = [
        &[ETH_P_8021Q],
        &[ETH_P_8021AD],
        &[ETH_P_8021AD, ETH_P_8021Q],
        &[ETH_P_8021Q, ETH_P_8021AD],
        &[ETH_P_8021Q, ETH_P_8021Q],
    ];
    for tags in tag_sets {
        let tagged = |frame: Frame| {
            tags.iter()
                .enumerate()
                .fold(frame, |frame, (i, &tpid)| frame.vlan(tpid, 100 + i as u16))
        };
        let what = format!("tags {tags:04x?}");
        gk.check(
            &what,
            &tagged(syn_v4(STRANGER_V4, 25)).build(),
            &Expect::deny(V4),
        );
        gk.check(
            &what,
            &tagged(syn_v4(FILTER_V4, 25)).build(),
            &Expect::allow(V4, "upstream-filter"),
        );
        gk.check(
            &what,
            &tagged(syn_v6(STRANGER_V6, 25)).build(),
            &Expect::deny(V6),
        );
        gk.check(
            &what,
            &tagged(syn_v4(STRANGER_V4, 80)).build(),
            &Expect::pass(),
        );
    }

    // A third tag is past the bound: the stack has no device for it either.
    let three = syn_v4(STRANGER_V4, 25)
        .vlan(ETH_P_8021AD, 1)
        .vlan(ETH_P_8021Q, 2)
        .vlan(ETH_P_8021Q, 3);
    gk.check("three tags", &three.build(), &Expect::pass());
}

#[test]
fn ipv4_options_are_skipped_and_short_headers_pass() {
    let mut gk = Harness::new(POLICY);
    for words in 1..=10 {
        // NOP options, one word at a time, up to the 60-byte maximum header.
        let options = vec![1; words * 4];
        let frame = syn_v4(STRANGER_V4, 25).options(&options);
        gk.check(
            &format!("{words} option words"),
            &frame.build(),
            &Expect::deny(V4),
        );
        let allowed = syn_v4(FILTER_V4, 25).options(&options);
        gk.check(
            &format!("{words} option words, connector"),
            &allowed.build(),
            &Expect::allow(V4, "upstream-filter"),
        );
    }
    for ihl in 0..5 {
        let frame = syn_v4(STRANGER_V4, 25).ihl(ihl);
        gk.check(&format!("IHL {ihl}"), &frame.build(), &Expect::pass());
    }
}

#[test]
fn ipv6_extension_chains_are_followed_up_to_the_bound() {
    let mut gk = Harness::new(POLICY);
    let all_kinds = [
        Ext::hop_by_hop(8),
        Ext::destination_options(16),
        Ext::routing(24),
        Ext::fragment(0, false, 7),
        Ext::authentication(24),
        Ext::destination_options(8),
    ];
    let chain = |frame: Frame, exts: &[Ext]| exts.iter().cloned().fold(frame, Frame::ext);

    gk.check(
        "every kind",
        &chain(syn_v6(STRANGER_V6, 25), &all_kinds).build(),
        &Expect::deny(V6),
    );
    gk.check(
        "every kind, connector",
        &chain(syn_v6(FILTER_V6, 25), &all_kinds).build(),
        &Expect::allow(V6, "upstream-filter"),
    );
    let ack = Frame::ipv6(STRANGER_V6, GATEWAY_V6).tcp(TcpSeg::new(40000, 25).flags(ACK));
    gk.check(
        "every kind, ACK",
        &chain(ack.clone(), &all_kinds).build(),
        &Expect::pass(),
    );

    let eight = vec![Ext::destination_options(8); 8];
    gk.check(
        "eight headers",
        &chain(syn_v6(STRANGER_V6, 25), &eight).build(),
        &Expect::deny(V6),
    );
    gk.check(
        "eight headers, ACK",
        &chain(ack.clone(), &eight).build(),
        &Expect::pass(),
    );
    gk.check(
        "eight headers, other port",
        &chain(syn_v6(STRANGER_V6, 80), &eight).build(),
        &Expect::pass(),
    );

    // Nine headers cannot be followed: judged like a SYN by the source,
    // whatever the segment at the end is.
    let nine = vec![Ext::destination_options(8); 9];
    gk.check(
        "nine headers, ACK",
        &chain(ack, &nine).build(),
        &Expect::deny(V6).long_chain(),
    );
    gk.check(
        "nine headers, connector",
        &chain(syn_v6(FILTER_V6, 25), &nine).build(),
        &Expect::allow(V6, "upstream-filter").long_chain(),
    );
    let nine_udp = chain(
        Frame::ipv6(STRANGER_V6, GATEWAY_V6).udp(UdpDgram::new(1, 2)),
        &nine,
    );
    gk.check(
        "nine headers, UDP",
        &nine_udp.build(),
        &Expect::deny(V6).long_chain(),
    );

    // A chain that ends in something other than TCP within the bound passes.
    let esp = Frame::ipv6(STRANGER_V6, GATEWAY_V6)
        .ext(Ext::hop_by_hop(8))
        .l4_bytes(50, &[0; 16]);
    gk.check("ESP after hop-by-hop", &esp.build(), &Expect::pass());
}

#[test]
fn ipv4_fragments() {
    let mut gk = Harness::new(POLICY);

    let later = syn_v4(STRANGER_V4, 25).fragment(1, true);
    gk.check("non-first fragment", &later.build(), &Expect::pass());
    let last = syn_v4(STRANGER_V4, 25).fragment(185, false);
    gk.check("last fragment", &last.build(), &Expect::pass());

    let whole_syn = syn_v4(STRANGER_V4, 25).fragment(0, true);
    gk.check(
        "first fragment with flags",
        &whole_syn.build(),
        &Expect::deny(V4),
    );
    let whole_ack = Frame::ipv4(STRANGER_V4, GATEWAY_V4)
        .tcp(TcpSeg::new(40000, 25).flags(ACK))
        .fragment(0, true);
    gk.check("first fragment, ACK", &whole_ack.build(), &Expect::pass());

    // RFC 1858: the flags could be in the next fragment.
    for keep in [8, 12, 13] {
        let tiny = syn_v4(STRANGER_V4, 25).fragment(0, true).l4_truncate(keep);
        gk.check(
            &format!("first fragment with {keep} TCP bytes"),
            &tiny.build(),
            &Expect::deny(V4).tiny_fragment(),
        );
        // Ethernet padding after the fragment must not be read as flags.
        gk.check(
            &format!("padded first fragment with {keep} TCP bytes"),
            &tiny.clone().pad_to_min().build(),
            &Expect::deny(V4).tiny_fragment(),
        );
        let allowed = syn_v4(FILTER_V4, 25).fragment(0, true).l4_truncate(keep);
        gk.check(
            &format!("connector's first fragment with {keep} TCP bytes"),
            &allowed.build(),
            &Expect::allow(V4, "upstream-filter").tiny_fragment(),
        );
        let other_port = syn_v4(STRANGER_V4, 80).fragment(0, true).l4_truncate(keep);
        gk.check(
            "tiny fragment to another port",
            &other_port.build(),
            &Expect::pass(),
        );
    }
    let no_port = syn_v4(STRANGER_V4, 25).fragment(0, true).l4_truncate(3);
    gk.check(
        "first fragment without the port",
        &no_port.build(),
        &Expect::pass(),
    );
    // Not a fragment: 13 bytes of TCP is a malformed segment the stack drops.
    let short = syn_v4(STRANGER_V4, 25).l4_truncate(13);
    gk.check(
        "short unfragmented segment",
        &short.build(),
        &Expect::pass(),
    );
}

#[test]
fn ipv6_fragments() {
    let mut gk = Harness::new(POLICY);
    let later = syn_v6(STRANGER_V6, 25).ext(Ext::fragment(1, true, 9));
    gk.check("non-first fragment", &later.build(), &Expect::pass());
    let first = syn_v6(STRANGER_V6, 25).ext(Ext::fragment(0, true, 9));
    gk.check(
        "first fragment with flags",
        &first.build(),
        &Expect::deny(V6),
    );
    let atomic = syn_v6(STRANGER_V6, 25).ext(Ext::fragment(0, false, 9));
    gk.check("atomic fragment", &atomic.build(), &Expect::deny(V6));
    for keep in [8, 13] {
        let tiny = syn_v6(STRANGER_V6, 25)
            .ext(Ext::fragment(0, true, 9))
            .l4_truncate(keep);
        gk.check(
            &format!("first fragment with {keep} TCP bytes"),
            &tiny.build(),
            &Expect::deny(V6).tiny_fragment(),
        );
    }
    let short = syn_v6(STRANGER_V6, 25).l4_truncate(13);
    gk.check(
        "short unfragmented segment",
        &short.build(),
        &Expect::pass(),
    );
}

#[test]
fn tcp_data_offset_is_checked() {
    let mut gk = Harness::new(POLICY);
    for doff in 0..5 {
        let frame = Frame::ipv4(STRANGER_V4, GATEWAY_V4).tcp(TcpSeg::syn(40000, 25).doff(doff));
        gk.check(
            &format!("data offset {doff}"),
            &frame.build(),
            &Expect::pass(),
        );
    }
    // The header claims 24 bytes but the datagram carries 20.
    let beyond = Frame::ipv4(STRANGER_V4, GATEWAY_V4).tcp(TcpSeg::syn(40000, 25).doff(6));
    gk.check(
        "data offset past the segment",
        &beyond.build(),
        &Expect::pass(),
    );
    let with_options = Frame::ipv4(STRANGER_V4, GATEWAY_V4)
        .tcp(TcpSeg::syn(40000, 25).options(&[2, 4, 5, 0xb4, 1, 1, 4, 2]));
    gk.check("SYN with options", &with_options.build(), &Expect::deny(V4));
}

#[test]
fn destinations_limit_what_is_gated() {
    let mut gk = Harness::new(
        r#"
        mode = "enforce"
        ports = [25]
        destinations = ["192.0.2.25", "2001:db8:25::/64"]

        [[connector]]
        name = "upstream-filter"
        sources = ["198.51.100.0/24"]
        "#,
    );
    gk.check(
        "listed v4 destination",
        &syn_v4(STRANGER_V4, 25).build(),
        &Expect::deny(V4),
    );
    let elsewhere =
        Frame::ipv4(STRANGER_V4, Ipv4Addr::new(192, 0, 2, 26)).tcp(TcpSeg::syn(40000, 25));
    gk.check("other v4 destination", &elsewhere.build(), &Expect::pass());
    gk.check(
        "listed v6 destination",
        &syn_v6(STRANGER_V6, 25).build(),
        &Expect::deny(V6),
    );
    let elsewhere_v6 = Frame::ipv6(
        STRANGER_V6,
        Ipv6Addr::new(0x2001, 0xdb8, 0x26, 0, 0, 0, 0, 1),
    )
    .tcp(TcpSeg::syn(40000, 25));
    gk.check(
        "other v6 destination",
        &elsewhere_v6.build(),
        &Expect::pass(),
    );

    let nine = (0..9).fold(
        Frame::ipv6(
            STRANGER_V6,
            Ipv6Addr::new(0x2001, 0xdb8, 0x26, 0, 0, 0, 0, 1),
        )
        .tcp(TcpSeg::syn(40000, 25)),
        |frame, _| frame.ext(Ext::destination_options(8)),
    );
    gk.check(
        "long chain to another destination",
        &nine.build(),
        &Expect::pass(),
    );
}

#[test]
fn frames_cut_short_before_the_decision_pass() {
    let mut gk = Harness::new(POLICY);
    let frames = [
        ("v4", syn_v4(STRANGER_V4, 25).vlan(ETH_P_8021Q, 7), V4),
        ("v4 options", syn_v4(STRANGER_V4, 25).options(&[1; 8]), V4),
        (
            "v6 chain",
            syn_v6(STRANGER_V6, 25)
                .ext(Ext::hop_by_hop(8))
                .ext(Ext::routing(16)),
            V6,
        ),
    ];
    for (what, frame, family) in frames {
        let built = frame.build_layout();
        let tcp = built
            .spans
            .iter()
            .find(|span| span.layer == Layer::Tcp)
            .expect("the frame has a TCP header");
        let flags_end = tcp.range.start + 14;
        let boundaries: Vec<usize> = built.spans.iter().map(|span| span.range.start).collect();

        for len in 14..built.bytes.len() {
            let expect = if len < flags_end {
                Expect::pass()
            } else {
                // The flags are there: the decision can be made (and the
                // stack drops the short datagram anyway).
                Expect::deny(family)
            };
            let kind = if boundaries.contains(&len) {
                "boundary"
            } else {
                "byte"
            };
            gk.check(
                &format!("{what} cut at {kind} {len}"),
                &built.bytes[..len],
                &expect,
            );
        }
        gk.check(
            &format!("{what} whole"),
            &built.bytes,
            &Expect::deny(family),
        );
    }
}

#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
    let mut gk = Harness::new(POLICY);
    for len in [0, 1, 13] {
        let frame = vec![0; len];
        let refused = gk.datapath().run_frame(&frame);
        assert!(refused.is_err(), "BPF_PROG_RUN accepted a {len}-byte frame");
    }
}

#[test]
fn without_a_policy_everything_passes() {
    let mut gk = Harness::without_policy();
    gk.check(
        "SYN before any policy",
        &syn_v4(STRANGER_V4, 25).build(),
        &Expect::pass(),
    );
}

#[test]
fn a_new_policy_replaces_the_old_one_whole() {
    let mut gk = Harness::new(POLICY);
    assert_eq!(gk.datapath().generation(), 1);
    gk.check(
        "before",
        &syn_v4(STRANGER_V4, 25).build(),
        &Expect::deny(V4),
    );
    gk.check(
        "before",
        &syn_v4(FILTER_V4, 25).build(),
        &Expect::allow(V4, "upstream-filter"),
    );

    let swapped = gatekeeper_tests::support::policy(
        r#"
        mode = "enforce"
        ports = [2525]
        [[connector]]
        name = "newcomer"
        sources = ["203.0.113.0/24"]
        "#,
    );
    let generation = gk
        .datapath()
        .install(&swapped)
        .expect("installing the second policy");
    assert_eq!(generation, 2);
    gk.check(
        "after, old port",
        &syn_v4(STRANGER_V4, 25).build(),
        &Expect::pass(),
    );
    gk.check(
        "after, new connector",
        &syn_v4(STRANGER_V4, 2525).build(),
        &Expect::allow(V4, "newcomer"),
    );
    gk.check(
        "after, old connector",
        &syn_v4(FILTER_V4, 2525).build(),
        &Expect::deny(V4),
    );
    gk.check(
        "after, v6 has no sources",
        &syn_v6(FILTER_V6, 2525).build(),
        &Expect::deny(V6),
    );

    // And back: the slot that held the first policy was cleared, so nothing
    // of the second one lingers.
    let generation = gk
        .datapath()
        .install(&gatekeeper_tests::support::policy(POLICY))
        .unwrap();
    assert_eq!(generation, 3);
    gk.check(
        "back, stranger",
        &syn_v4(STRANGER_V4, 25).build(),
        &Expect::deny(V4),
    );
    gk.check(
        "back, port 2525",
        &syn_v4(STRANGER_V4, 2525).build(),
        &Expect::pass(),
    );
    gk.check(
        "back, connector",
        &syn_v4(FILTER_V4, 25).build(),
        &Expect::allow(V4, "upstream-filter"),
    );
    // "newcomer" took id 2, the lowest the first policy did not use, and
    // is gone again; the first policy's connectors are new once more and
    // take the lowest free ids.
    let connectors = gk.datapath().connectors();
    assert_eq!(
        connectors,
        [
            (0, "upstream-filter".to_owned()),
            (1, "printers".to_owned())
        ]
    );
}

#[test]
fn verdict_names_match_the_operators_words() {
    assert_eq!(Verdict::Allow("x".into()).name(), "allow");
    assert_eq!(Verdict::WouldDeny.name(), "would-deny");
}

#[test]
fn connectors_keep_their_ids_and_counts_across_reloads() {
    let mut gk = Harness::new(POLICY);
    gk.check(
        "relay",
        &syn_v4(FILTER_V4, 25).build(),
        &Expect::allow(V4, "upstream-filter"),
    );
    let filter_id = gk.datapath().connector_id("upstream-filter");

    // Reordered, with "printers" gone and a newcomer first.
    let reordered = gatekeeper_tests::support::policy(
        r#"
        mode = "enforce"
        ports = [25]
        [[connector]]
        name = "newcomer"
        sources = ["203.0.113.0/24"]
        [[connector]]
        name = "upstream-filter"
        sources = ["198.51.100.0/24"]
        "#,
    );
    gk.datapath()
        .install(&reordered)
        .expect("installing the reordered policy");
    assert_eq!(gk.datapath().connector_id("upstream-filter"), filter_id);
    // The newcomer does not take the id "printers" had in the live policy.
    assert_eq!(gk.datapath().connector_id("newcomer"), Some(2));
    gk.check(
        "relay again",
        &syn_v4(FILTER_V4, 25).build(),
        &Expect::allow(V4, "upstream-filter"),
    );
    gk.check(
        "newcomer",
        &syn_v4(STRANGER_V4, 25).build(),
        &Expect::allow(V4, "newcomer"),
    );

    let counts = gk.datapath().connector_counts().expect("reading counters");
    assert_eq!(
        gk.datapath().allowed_by_connector(&counts),
        [
            ("newcomer".to_owned(), 1),
            ("upstream-filter".to_owned(), 2)
        ]
    );
}
