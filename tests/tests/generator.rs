//! The load test's SYN generator, run in BPF_PROG_RUN's ordinary mode so
//! that every frame it writes can be read back: valid checksums, sources
//! from the configured ranges in the configured share, and the verdicts
//! the real datapath gives them under the load test's policy; then once in
//! live-frames mode over a veth pair, where the gateway must count exactly
//! the frames sent.

use std::net::Ipv4Addr;

use aya::programs::XdpMode;
use gatekeeper::{
    datapath::{Datapath, Verdict},
    generator::{DEFAULT_BATCH, Generator},
};
use gatekeeper_common::generator::{IP_AT, TCP_AT, TCP_LEN};
use gatekeeper_tests::{
    frames::{DST_MAC, Frame, SRC_MAC, UdpDgram, ones_complement_sum},
    loadtest::{
        ALLOWED_PER_MILLE, ALLOWED_V4, CLIENT_CIDR, DENIED_V4, FLOOD_CONNECTOR, GATEWAY_CIDR,
        VethCounters, flood, parse_mac, policy, template,
    },
    netns::{Link, Namespace},
    support::require_root,
};

const XDP_ABORTED: u32 = 0;
const XDP_TX: u32 = 3;

/// Frames drawn per test: enough for the share to show, quick to run.
const FRAMES: usize = 4000;

fn source_of(frame: &[u8]) -> Ipv4Addr {
    let bytes: [u8; 4] = frame[IP_AT + 12..IP_AT + 16].try_into().expect("4 bytes");
    Ipv4Addr::from(bytes)
}

fn generated(generator: &Generator, template: &[u8]) -> Vec<Vec<u8>> {
    (0..FRAMES)
        .map(|i| {
            let (action, frame) = generator
                .rewrite_once(template)
                .unwrap_or_else(|error| panic!("running the generator: {error:?}"));
            assert_eq!(action, XDP_TX, "frame {i}: the generator returns XDP_TX");
            frame
        })
        .collect()
}

#[test]
fn frames_are_checksummed_syns_from_the_configured_ranges() {
    require_root();
    let generator = Generator::load(&flood()).expect("loading the generator");
    let template = template(SRC_MAC, DST_MAC);
    let frames = generated(&generator, &template);

    let mut allowed = 0;
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame.len(), template.len(), "frame {i}: length");
        let source = source_of(frame);
        if ALLOWED_V4.contains(&source) {
            allowed += 1;
        } else {
            assert!(
                DENIED_V4.iter().any(|net| net.contains(&source)),
                "frame {i}: source {source} is in no configured range"
            );
        }
        assert_eq!(
            ones_complement_sum(0, &frame[IP_AT..TCP_AT]),
            0xffff,
            "frame {i}: IPv4 header checksum"
        );
        let pseudo = [
            &frame[IP_AT + 12..IP_AT + 20],
            &[0, 6],
            &(TCP_LEN as u16).to_be_bytes(),
        ]
        .concat();
        assert_eq!(
            ones_complement_sum(ones_complement_sum(0, &pseudo), &frame[TCP_AT..]),
            0xffff,
            "frame {i}: TCP checksum"
        );
        let port = u16::from_be_bytes([frame[TCP_AT], frame[TCP_AT + 1]]);
        assert!(port >= 1024, "frame {i}: source port {port}");
        assert_eq!(frame[TCP_AT + 13], 0x02, "frame {i}: SYN alone");
        // Everything else is the template's.
        let same = |range: std::ops::Range<usize>| frame[range.clone()] == template[range];
        assert!(same(0..IP_AT + 10), "frame {i}: Ethernet and IPv4 head");
        assert!(same(IP_AT + 16..TCP_AT), "frame {i}: destination address");
        assert!(same(TCP_AT + 2..TCP_AT + 4), "frame {i}: destination port");
        assert!(
            same(TCP_AT + 8..TCP_AT + 16),
            "frame {i}: ack, offset, window"
        );
        assert!(same(TCP_AT + 18..TCP_AT + TCP_LEN), "frame {i}: MSS option");
    }

    // A share of 10% over 4,000 frames is 400 with a standard deviation of
    // 19: the bounds are ten of those away, so only a wrong share fails.
    let expected = FRAMES * ALLOWED_PER_MILLE as usize / 1000;
    assert!(
        (expected - 190..=expected + 190).contains(&allowed),
        "{allowed} of {FRAMES} frames from the allowed range, expected about {expected}"
    );
    let totals = generator.totals().expect("reading the counters");
    assert_eq!(totals.sent, FRAMES as u64);
    assert_eq!(totals.allowed, allowed as u64);
    assert_eq!(totals.denied, (FRAMES - allowed) as u64);
    assert_eq!(totals.aborted, 0);
}

#[test]
fn sources_vary_from_frame_to_frame() {
    require_root();
    let generator = Generator::load(&flood()).expect("loading the generator");
    let frames = generated(&generator, &template(SRC_MAC, DST_MAC));
    let sources: std::collections::HashSet<_> = frames.iter().map(|f| source_of(f)).collect();
    // 512 possible sources in all: most of them show up in 4,000 draws.
    assert!(
        sources.len() > 300,
        "only {} distinct sources in {FRAMES} frames",
        sources.len()
    );
}

#[test]
fn the_datapath_allows_the_allowed_share_and_denies_the_rest() {
    require_root();
    let generator = Generator::load(&flood()).expect("loading the generator");
    let mut datapath = Datapath::load().expect("loading the datapath");
    datapath
        .install(&policy(true))
        .expect("installing the load test's policy");
    for (i, frame) in generated(&generator, &template(SRC_MAC, DST_MAC))
        .iter()
        .take(500)
        .enumerate()
    {
        let source = source_of(frame);
        let outcome = datapath
            .run_frame(frame)
            .unwrap_or_else(|error| panic!("frame {i}: {error:?}"));
        let expected = if ALLOWED_V4.contains(&source) {
            Verdict::Allow(FLOOD_CONNECTOR.to_owned())
        } else {
            Verdict::Deny
        };
        assert_eq!(outcome.verdict, expected, "frame {i} from {source}");
    }
}

#[test]
fn a_template_of_another_shape_is_aborted_and_counted() {
    require_root();
    let generator = Generator::load(&flood()).expect("loading the generator");
    let udp = Frame::ipv4(ALLOWED_V4.network(), DENIED_V4[0].network())
        .udp(UdpDgram::new(53, 53))
        .pad_to_min()
        .build();
    let (action, _) = generator.rewrite_once(&udp).expect("running the generator");
    assert_eq!(action, XDP_ABORTED);
    let totals = generator.totals().expect("reading the counters");
    assert_eq!((totals.sent, totals.aborted), (0, 1));
}

/// Frames sent in the live test: 128 batches of the kernel's default 64.
/// A batch is a quarter of the gateway's veth ring (256 frames), which the
/// gateway drains between batches, so none is lost on the way; the test
/// checks that too, and says so if one was.
const LIVE_FRAMES: u32 = 128 * DEFAULT_BATCH;

#[test]
fn every_frame_sent_live_reaches_the_gateway_and_gets_its_verdict() {
    require_root();
    let link = Link::new(&[CLIENT_CIDR], &[GATEWAY_CIDR]);
    let generator = Generator::load(&flood()).expect("loading the generator");
    let mac = |namespace: &Namespace, interface: &str| {
        parse_mac(&namespace.mac(interface)).expect("a MAC address")
    };
    let template = template(
        mac(&link.outside, &link.outside_if),
        mac(&link.gateway, &link.gateway_if),
    );

    let mut datapath = Datapath::load().expect("loading the datapath");
    datapath
        .install(&policy(true))
        .expect("installing the load test's policy");
    let gateway_if = link.gateway_if.clone();
    link.gateway
        .run_scoped(|| datapath.program().attach(&gateway_if, XdpMode::Driver))
        .expect("attaching the datapath to the gateway's veth end");

    let before = datapath
        .counters()
        .expect("reading the datapath's counters");
    let connectors_before = datapath.connector_counts().expect("reading counters");
    let gateway_before =
        VethCounters::read(&link.gateway, &link.gateway_if).expect("veth counters");
    let outside_if = link.outside_if.clone();
    link.outside.run_scoped(|| {
        let name = std::ffi::CString::new(outside_if).expect("a name without NUL");
        // SAFETY: `name` is a valid NUL-terminated string for the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "the sending veth end has an index");
        generator
            .send(&template, ifindex, LIVE_FRAMES, DEFAULT_BATCH)
            .expect("sending in live-frames mode");
    });
    let gateway = VethCounters::read(&link.gateway, &link.gateway_if)
        .expect("veth counters")
        .since(&gateway_before);

    let sent = generator
        .totals()
        .expect("reading the generator's counters");
    assert_eq!(
        sent.sent,
        u64::from(LIVE_FRAMES),
        "frames the generator sent"
    );
    assert_eq!(sent.aborted, 0);
    // Only the flood is gated: anything else the namespaces send (IPv6
    // router solicitations, say) passes uncounted here.
    let seen = datapath
        .counters()
        .expect("reading the datapath's counters")
        .since(&before);
    assert_eq!(
        seen.allowed(),
        sent.allowed,
        "allowed: one per allowed source sent"
    );
    assert_eq!(
        seen.denied(),
        sent.denied,
        "denied: one per denied source sent"
    );
    assert_eq!(
        gateway.xdp_drops, sent.denied,
        "the veth counts each denied frame dropped"
    );
    let flood_id = datapath
        .connector_id(FLOOD_CONNECTOR)
        .expect("the flood's connector") as usize;
    let connectors = datapath.connector_counts().expect("reading counters");
    assert_eq!(
        connectors[flood_id] - connectors_before[flood_id],
        sent.allowed,
        "every allowed frame is counted for {FLOOD_CONNECTOR}"
    );
}
