//! The Prometheus endpoint of `gatekeeper run`, scraped over real HTTP inside
//! the gateway namespace while real clients connect.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use gatekeeper_tests::{
    live::{
        Daemon, GATEWAY_ADDRS, OUTSIDE_ADDRS, PolicyFile, SmtpListener, http_get, pin_dir, sample,
        smtp_connect,
    },
    netns::Link,
    support::require_root,
};

const ENFORCE: &str = r#"
mode = "enforce"
ports = [25]

[[connector]]
name = "printers"
sources = ["192.0.2.64/27"]

[[connector]]
name = "upstream-filter"
sources = ["198.51.100.0/24", "2001:db8:100::/48"]
"#;

/// The same connectors in the other order, in monitor mode.
const MONITOR: &str = r#"
mode = "monitor"
ports = [25]

[[connector]]
name = "upstream-filter"
sources = ["198.51.100.0/24", "2001:db8:100::/48"]

[[connector]]
name = "printers"
sources = ["192.0.2.64/27"]
"#;

fn scrape(link: &Link) -> String {
    let (status, body) = http_get(link, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    body
}

#[test]
fn metrics_count_exactly_the_attempts_made() {
    require_root();
    let link = Link::new(&OUTSIDE_ADDRS, &GATEWAY_ADDRS);
    let _listener = SmtpListener::start(&link);
    let policy = PolicyFile::new(ENFORCE);
    let pins = pin_dir();
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &[]);

    for _ in 0..2 {
        assert!(smtp_connect(&link, "198.51.100.1:25").is_ok());
    }
    assert!(smtp_connect(&link, "[2001:db8:100::1]:25").is_ok());
    for _ in 0..3 {
        assert!(smtp_connect(&link, "203.0.113.1:25").is_err());
    }

    // Reordered connectors and monitor mode: counts carry on by name.
    policy.replace(MONITOR);
    daemon.wait_for_log("policy reloaded", Duration::from_secs(10));
    for _ in 0..2 {
        assert!(smtp_connect(&link, "203.0.113.1:25").is_ok());
    }
    assert!(smtp_connect(&link, "[2001:db8:bad::1]:25").is_ok());
    assert!(smtp_connect(&link, "198.51.100.1:25").is_ok());

    let metrics = scrape(&link);
    let expected = [
        (r#"gatekeeper_frames_total{verdict="allow"}"#, 4.0),
        (r#"gatekeeper_frames_total{verdict="deny"}"#, 3.0),
        (r#"gatekeeper_frames_total{verdict="would_deny"}"#, 3.0),
        (
            r#"gatekeeper_gated_syns_total{verdict="allow",family="ipv4"}"#,
            3.0,
        ),
        (
            r#"gatekeeper_gated_syns_total{verdict="allow",family="ipv6"}"#,
            1.0,
        ),
        (
            r#"gatekeeper_gated_syns_total{verdict="deny",family="ipv4"}"#,
            3.0,
        ),
        (
            r#"gatekeeper_gated_syns_total{verdict="deny",family="ipv6"}"#,
            0.0,
        ),
        (
            r#"gatekeeper_gated_syns_total{verdict="would_deny",family="ipv4"}"#,
            2.0,
        ),
        (
            r#"gatekeeper_gated_syns_total{verdict="would_deny",family="ipv6"}"#,
            1.0,
        ),
        (
            r#"gatekeeper_connector_allowed_total{connector="upstream-filter"}"#,
            4.0,
        ),
        (
            r#"gatekeeper_connector_allowed_total{connector="printers"}"#,
            0.0,
        ),
        ("gatekeeper_tiny_fragments_total", 0.0),
        ("gatekeeper_long_ipv6_chains_total", 0.0),
        ("gatekeeper_policy_generation", 2.0),
        (r#"gatekeeper_policy_prefixes{family="ipv4"}"#, 2.0),
        (r#"gatekeeper_policy_prefixes{family="ipv6"}"#, 1.0),
        (r#"gatekeeper_policy_reloads_total{result="success"}"#, 1.0),
        (r#"gatekeeper_policy_reloads_total{result="failure"}"#, 0.0),
        (r#"gatekeeper_policy_mode{mode="monitor"}"#, 1.0),
        (r#"gatekeeper_policy_mode{mode="enforce"}"#, 0.0),
        (
            &format!(
                r#"gatekeeper_attached{{iface="{}",xdp_mode="native"}}"#,
                link.gateway_if
            ),
            1.0,
        ),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&metrics, series), value, "{series}");
    }
    assert!(metrics.contains("# HELP gatekeeper_frames_total "));
    assert!(metrics.contains("# TYPE gatekeeper_frames_total counter"));
    let (status, body) = http_get(&link, "/healthz");
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
}

#[test]
fn metrics_answer_while_the_policy_reloads() {
    require_root();
    let link = Arc::new(Link::new(&OUTSIDE_ADDRS, &GATEWAY_ADDRS));
    let policy = PolicyFile::new(ENFORCE);
    let pins = pin_dir();
    let mut daemon = Daemon::start(&link, policy.path(), &pins, &[]);

    let done = Arc::new(AtomicBool::new(false));
    let scraper = {
        let (link, done) = (Arc::clone(&link), Arc::clone(&done));
        thread::spawn(move || {
            let mut generations = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let body = scrape(&link);
                generations.push(sample(&body, "gatekeeper_policy_generation"));
            }
            generations
        })
    };
    const RELOADS: usize = 30;
    for n in 1..=RELOADS {
        daemon.signal(libc::SIGHUP);
        daemon.wait_for_logs("policy reloaded", n, Duration::from_secs(10));
    }
    done.store(true, Ordering::Relaxed);
    let generations = scraper.join().expect("the scraping thread");

    assert!(generations.len() >= 2, "only {} scrapes", generations.len());
    assert!(
        generations.windows(2).all(|pair| pair[0] <= pair[1]),
        "the generation went backwards: {generations:?}"
    );
    let last = sample(&scrape(&link), "gatekeeper_policy_generation");
    assert_eq!(last, (RELOADS + 1) as f64);
}
