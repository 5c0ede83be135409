//! A reload storm: `gatekeeper run` swaps between two policies 1,000 times,
//! told by file watch and by SIGHUP, while clients keep connecting from
//! sources that both policies admit, that neither admits, and that only one
//! admits. No reload may drop a connection it should let through or let one
//! through it should drop, and no counter may go backwards.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use gatekeeper_tests::{
    live::{
        BANNER, Daemon, PolicyFile, SmtpListener, gatekeeper, http_get, pin_dir, smtp_connect,
        status_json,
    },
    netns::Link,
    support::{self, require_root},
};

/// Reloads in the storm.
const RELOADS: u64 = 1_000;

/// One reload in this many replaces the watched file, and the next one puts
/// the symlink back; SIGHUP does the rest. A file-watch reload waits 100 ms
/// for the editor to finish, a SIGHUP reload does not.
const WATCH_EVERY: u64 = 25;

/// A source on the internet side, and the gateway address it connects to.
/// Each source has a server address of its own, with a route that picks the
/// source for it, so that the harness's `smtp_connect` connects from it.
struct Source {
    /// What the policies make of it, for the summary.
    role: &'static str,
    /// The source address, with the link's prefix length.
    addr: &'static str,
    /// The gateway address, with the link's prefix length.
    server: &'static str,
    /// What every attempt must come to; `None` when it depends on the
    /// policy that judges it.
    admitted: Option<bool>,
    /// Clients connecting from it at once. A refused attempt waits out the
    /// connect timeout, so refused sources get more.
    clients: usize,
}

const SOURCES: [Source; 6] = [
    Source {
        role: "both",
        addr: "198.51.100.7/24",
        server: "198.51.100.1/24",
        admitted: Some(true),
        clients: 1,
    },
    Source {
        role: "neither",
        addr: "198.51.100.128/24",
        server: "198.51.100.2/24",
        admitted: Some(false),
        clients: 3,
    },
    Source {
        role: "a-only",
        addr: "198.51.100.100/24",
        server: "198.51.100.3/24",
        admitted: None,
        clients: 2,
    },
    Source {
        role: "both",
        addr: "2001:db8:100::7/64",
        server: "2001:db8:100::1/64",
        admitted: Some(true),
        clients: 1,
    },
    Source {
        role: "neither",
        addr: "2001:db8:100:0:8000::/64",
        server: "2001:db8:100::2/64",
        admitted: Some(false),
        clients: 3,
    },
    Source {
        role: "a-only",
        addr: "2001:db8:100::100/64",
        server: "2001:db8:100::3/64",
        admitted: None,
        clients: 2,
    },
];

impl Source {
    fn addr(&self) -> &'static str {
        host(self.addr)
    }

    fn socket(&self) -> String {
        let server = host(self.server);
        if server.contains(':') {
            format!("[{server}]:25")
        } else {
            format!("{server}:25")
        }
    }
}

fn host(cidr: &'static str) -> &'static str {
    cidr.split('/').next().unwrap_or(cidr)
}

/// Filler prefixes that differ between the policies, so the compiled table
/// changes beyond the prefixes the clients hit: in A the even /28s of
/// 192.0.2.0/24 and /48s of 2001:db8:2000::/40, in B the odd ones.
fn filler(parity: u32) -> String {
    let v4 = (0..16)
        .filter(|n| n % 2 == parity)
        .map(|n| format!("\"192.0.2.{}/28\"", n * 16));
    let v6 = (0..32)
        .filter(|n| n % 2 == parity)
        .map(|n| format!("\"2001:db8:20{n:02x}::/48\""));
    v4.chain(v6).collect::<Vec<_>>().join(", ")
}

/// Policy A: `upstream-filter` admits the "both" and the "a-only" sources
/// through 198.51.100.0/25 and 2001:db8:100::/65; the "neither" sources are
/// the first addresses past those halves.
fn policy_a() -> String {
    format!(
        r#"mode = "enforce"
ports = [25]

[[connector]]
name = "backup-mx"
sources = [{}]

[[connector]]
name = "upstream-filter"
sources = ["198.51.100.0/25", "2001:db8:100::/65", "203.0.113.64/26"]
"#,
        filler(0)
    )
}

/// Policy B: the "both" sources by their /32 and /128 in a connector A does
/// not have, `upstream-filter` shrunk to the hosts next to the "neither"
/// sources, and the fillers moved.
fn policy_b() -> String {
    format!(
        r#"mode = "enforce"
ports = [25]

[[connector]]
name = "smarthost"
sources = ["198.51.100.7/32", "2001:db8:100::7/128"]

[[connector]]
name = "upstream-filter"
sources = ["203.0.113.64/27", "198.51.100.129/32", "2001:db8:100:0:8000::1/128"]

[[connector]]
name = "backup-mx"
sources = [{}]
"#,
        filler(1)
    )
}

/// The line `gatekeeper run` logs once it has installed generation
/// `generation` of `text`: its connector and prefix counts tell A from B.
fn reloaded_line(generation: u64, text: &str) -> String {
    let policy = support::policy(text);
    let (v4, v6) = policy.source_counts();
    format!(
        "policy reloaded generation={generation} mode=enforce connectors={} \
         ipv4_prefixes={v4} ipv6_prefixes={v6}",
        policy.connectors.len()
    )
}

/// How a reload is triggered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// `PolicyFile::replace` on the watched file: an editor's save.
    Replace,
    /// A new symlink renamed over the watched file, pointing at the staged
    /// file: as configuration managers switch versions.
    Relink,
    /// The staged file replaced behind the symlink, which the watcher cannot
    /// see, and SIGHUP.
    Hangup,
}

fn trigger(reload: u64) -> Trigger {
    match reload % WATCH_EVERY {
        1 => Trigger::Replace,
        2 => Trigger::Relink,
        _ => Trigger::Hangup,
    }
}

fn trigger_name(how: Trigger) -> &'static str {
    match how {
        Trigger::Replace => "file replace",
        Trigger::Relink => "symlink rename",
        Trigger::Hangup => "SIGHUP",
    }
}

/// Renames a symlink to `target` over `watched`'s file.
fn link_policy(watched: &PolicyFile, target: &Path) {
    let next = watched.path().with_file_name(".policy.toml.link");
    std::os::unix::fs::symlink(target, &next).expect("creating the policy symlink");
    std::fs::rename(&next, watched.path()).expect("renaming the symlink into place");
}

/// What the attempts from one source came to.
#[derive(Debug, Default)]
struct Tally {
    admitted: u64,
    refused: u64,
    /// The first few reasons for refusals, for the failure message.
    reasons: Vec<String>,
}

impl Tally {
    fn record(&mut self, outcome: Result<String, String>) {
        match outcome {
            Ok(banner) if banner == BANNER => self.admitted += 1,
            Ok(banner) => self.refuse(format!("read {banner:?} instead of the banner")),
            Err(reason) => self.refuse(reason),
        }
    }

    fn refuse(&mut self, reason: String) {
        self.refused += 1;
        if self.reasons.len() < 5 {
            self.reasons.push(reason);
        }
    }

    fn attempts(&self) -> u64 {
        self.admitted + self.refused
    }
}

/// Every counter of one reading of `gatekeeper status --json` and of
/// `/metrics`, by a name that says where it came from.
type Sample = BTreeMap<String, u64>;

/// Connectors in both policies, whose per-id count `status` reports.
const SHARED_CONNECTORS: [&str; 2] = ["upstream-filter", "backup-mx"];

fn status_counters(status: &serde_json::Value, sample: &mut Sample) {
    let counters = &status["counters"];
    for name in ["seen", "pass"] {
        let value = counters[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no counter {name} in {status}"));
        sample.insert(format!("status {name}"), value);
    }
    let verdicts = counters["verdicts"]
        .as_object()
        .unwrap_or_else(|| panic!("no verdicts in {status}"));
    for (verdict, families) in verdicts {
        for family in ["ipv4", "ipv6"] {
            let value = families[family]
                .as_u64()
                .unwrap_or_else(|| panic!("no {verdict}/{family} counter in {status}"));
            sample.insert(format!("status {verdict}/{family}"), value);
        }
    }
    // Both policies have these, so every reading lists them, even one
    // taken while a reload clears the slot it started from.
    for name in SHARED_CONNECTORS {
        let allowed = status["connectors"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["name"] == name)
            .and_then(|entry| entry["allowed"].as_u64())
            .unwrap_or_else(|| panic!("no allowed count for {name} in {status}"));
        sample.insert(format!("status connector {name}"), allowed);
    }
}

/// Every counter series (`*_total`) of a Prometheus exposition, and the
/// generation, which only grows too.
fn metric_counters(exposition: &str, sample: &mut Sample) {
    for line in exposition.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let name = series.split('{').next().unwrap_or(series);
        if name.ends_with("_total") || name == "gatekeeper_policy_generation" {
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("not a number in {line:?}"));
            sample.insert(format!("metrics {series}"), value as u64);
        }
    }
}

fn take_sample(link: &Link, pins: &Path) -> Sample {
    let mut sample = Sample::new();
    status_counters(&status_json(pins), &mut sample);
    let (status, body) = http_get(link, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    metric_counters(&body, &mut sample);
    sample
}

/// Panics naming the first counter that is lower in a sample than in the
/// last sample before it that has it.
fn assert_never_decrease(samples: &[Sample]) {
    let mut last: BTreeMap<&str, (usize, u64)> = BTreeMap::new();
    for (index, sample) in samples.iter().enumerate() {
        for (name, &value) in sample {
            if let Some(&(earlier, before)) = last.get(name.as_str()) {
                assert!(
                    value >= before,
                    "counter {name:?} went down from {before} in sample {earlier} to {value} \
                     in sample {index} of {}",
                    samples.len()
                );
            }
            last.insert(name, (index, value));
        }
    }
}

/// The gated SYNs the inventory counted from each source.
fn inventory_attempts(pins: &Path) -> BTreeMap<String, u64> {
    let dir = pins.to_str().expect("a UTF-8 pin dir");
    let output = gatekeeper(&["inventory", "--json", "--pin-dir", dir]);
    assert!(
        output.status.success(),
        "gatekeeper inventory failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            let entry: serde_json::Value = serde_json::from_str(line).expect("JSON lines");
            let source = entry["source"].as_str().expect("a source").to_owned();
            (
                source,
                entry["attempts"].as_u64().expect("an attempt count"),
            )
        })
        .collect()
}

/// The gateway of a storm, with everything it needs removed on drop.
struct Gateway {
    // Dropped in this order: the daemon first, the link last.
    daemon: Daemon,
    pins: PathBuf,
    watched: PolicyFile,
    staged: PolicyFile,
    _listener: SmtpListener,
    link: Link,
    /// The generation `gatekeeper run` started with.
    first: u64,
}

impl Gateway {
    /// A veth pair with every source's address outside and every server's
    /// address inside, and `gatekeeper run` on policy B.
    fn start() -> Self {
        require_root();
        let outside: Vec<&str> = SOURCES.iter().map(|source| source.addr).collect();
        let gateway: Vec<&str> = SOURCES.iter().map(|source| source.server).collect();
        let link = Link::new(&outside, &gateway);
        for source in &SOURCES {
            let family = if source.addr().contains(':') {
                "-6"
            } else {
                "-4"
            };
            let server = host(source.server);
            let dev = link.outside_if.as_str();
            link.outside.ip(&[
                family,
                "route",
                "add",
                server,
                "dev",
                dev,
                "src",
                source.addr(),
            ]);
        }
        let listener = SmtpListener::start(&link);
        // The storm starts on B and, after an even number of reloads, ends
        // on it: B has every connector, so at the end each one is live.
        let watched = PolicyFile::new(&policy_b());
        let staged = PolicyFile::new(&policy_b());
        let pins = pin_dir();
        let daemon = Daemon::start(&link, watched.path(), &pins, &[]);
        let first = generation(&pins);
        Self {
            daemon,
            pins,
            watched,
            staged,
            _listener: listener,
            link,
            first,
        }
    }
}

fn generation(pins: &Path) -> u64 {
    let status = status_json(pins);
    status["policy"]["generation"]
        .as_u64()
        .unwrap_or_else(|| panic!("no generation in {status}"))
}

/// What a storm came to.
struct Storm {
    /// By source, in the order of [`SOURCES`].
    tallies: Vec<Tally>,
    /// The first before any client started, the last after every one ended.
    samples: Vec<Sample>,
    /// Reloads by how they were triggered.
    triggers: BTreeMap<&'static str, u64>,
    time: Duration,
}

impl Storm {
    /// The `reload storm:` line.
    fn summary(&self, reloads: u64) -> String {
        let triggers: Vec<String> = self
            .triggers
            .iter()
            .map(|(how, count)| format!("{count} by {how}"))
            .collect();
        let sources: Vec<String> = SOURCES
            .iter()
            .zip(&self.tallies)
            .map(|(source, tally)| {
                format!(
                    "{} ({}) {} attempts, {} admitted, {} refused",
                    source.addr(),
                    source.role,
                    tally.attempts(),
                    tally.admitted,
                    tally.refused
                )
            })
            .collect();
        format!(
            "reload storm: {reloads} reloads ({}) in {:.1?}; {}; {} counter samples",
            triggers.join(", "),
            self.time,
            sources.join("; "),
            self.samples.len()
        )
    }

    /// Counter `name` in the last sample minus in the first.
    fn grew(&self, name: &str) -> u64 {
        let (first, last) = (&self.samples[0], &self.samples[self.samples.len() - 1]);
        let value = |sample: &Sample| {
            *sample
                .get(name)
                .unwrap_or_else(|| panic!("no counter {name:?} in {sample:?}"))
        };
        value(last) - value(first)
    }
}

/// Reloads A and B in turn `reloads` times (an even number) while clients
/// connect from every source and a sampler reads the counters, waiting for
/// each reload to be logged before the next.
fn storm(gateway: &mut Gateway, reloads: u64) -> Storm {
    assert_eq!(reloads % 2, 0, "a storm ends on the policy it started on");
    let (a, b) = (policy_a(), policy_b());
    let tallies: Vec<Mutex<Tally>> = SOURCES.iter().map(|_| Mutex::default()).collect();
    let samples = Mutex::new(vec![take_sample(&gateway.link, &gateway.pins)]);
    let stop = AtomicBool::new(false);
    let mut triggers = BTreeMap::new();
    let started = Instant::now();

    thread::scope(|scope| {
        let (link, pins, stop, samples) = (&gateway.link, &gateway.pins, &stop, &samples);
        for (source, tally) in SOURCES.iter().zip(&tallies) {
            for _ in 0..source.clients {
                let server = source.socket();
                scope.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let outcome = smtp_connect(link, &server);
                        tally.lock().expect("tally lock").record(outcome);
                    }
                });
            }
        }
        scope.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let sample = take_sample(link, pins);
                samples.lock().expect("samples lock").push(sample);
            }
        });

        let mut linked = false;
        for reload in 1..=reloads {
            let next = if reload % 2 == 1 { &a } else { &b };
            let how = trigger(reload);
            match how {
                Trigger::Replace => {
                    gateway.watched.replace(next);
                    linked = false;
                }
                Trigger::Relink => {
                    gateway.staged.replace(next);
                    link_policy(&gateway.watched, gateway.staged.path());
                    linked = true;
                }
                Trigger::Hangup => {
                    assert!(linked, "reload {reload}: SIGHUP without the symlink");
                    gateway.staged.replace(next);
                    gateway.daemon.signal(libc::SIGHUP);
                }
            }
            *triggers.entry(trigger_name(how)).or_default() += 1;
            let line = reloaded_line(gateway.first + reload, next);
            gateway.daemon.wait_for_log(&line, Duration::from_secs(10));
        }
        stop.store(true, Ordering::Relaxed);
    });
    let time = started.elapsed();

    let mut samples = samples.into_inner().expect("samples lock");
    samples.push(take_sample(&gateway.link, &gateway.pins));
    Storm {
        tallies: tallies
            .into_iter()
            .map(|tally| tally.into_inner().expect("tally lock"))
            .collect(),
        samples,
        triggers,
        time,
    }
}

#[test]
fn a_thousand_reloads_drop_no_admitted_connection_and_admit_no_stranger() {
    let mut gateway = Gateway::start();
    let storm = storm(&mut gateway, RELOADS);
    println!("{}", storm.summary(RELOADS));

    let inventory = inventory_attempts(&gateway.pins);
    for (source, tally) in SOURCES.iter().zip(&storm.tallies) {
        let addr = source.addr();
        match source.admitted {
            Some(true) => assert_eq!(
                (tally.refused, &tally.reasons),
                (0, &Vec::new()),
                "every connection from {addr}, which both policies admit, must succeed"
            ),
            Some(false) => assert_eq!(
                tally.admitted, 0,
                "no connection from {addr}, which neither policy admits, may succeed"
            ),
            None => {}
        }
        assert!(tally.attempts() > 0, "no attempt from {addr}");
        // Each attempt sends one SYN (the connect timeout is shorter than
        // the first retransmission), and the program counts every one.
        assert_eq!(
            inventory.get(addr).copied().unwrap_or(0),
            tally.attempts(),
            "gated SYNs the inventory counted from {addr}"
        );
    }

    assert_never_decrease(&storm.samples);
    for (family, v6) in [("ipv4", false), ("ipv6", true)] {
        let (mut admitted, mut refused) = (0, 0);
        for (source, tally) in SOURCES.iter().zip(&storm.tallies) {
            if source.addr().contains(':') == v6 {
                admitted += tally.admitted;
                refused += tally.refused;
            }
        }
        assert_eq!(storm.grew(&format!("status allow/{family}")), admitted);
        assert_eq!(storm.grew(&format!("status deny/{family}")), refused);
    }

    assert_eq!(
        generation(&gateway.pins),
        gateway.first + RELOADS,
        "the generation after the storm"
    );
    assert_eq!(
        storm.grew(r#"metrics gatekeeper_policy_reloads_total{result="success"}"#),
        RELOADS
    );
    assert_eq!(
        storm.grew(r#"metrics gatekeeper_policy_reloads_total{result="failure"}"#),
        0
    );
    let log = gateway.daemon.log();
    for failure in [
        "policy rejected",
        "could not be installed",
        "policy file deleted",
    ] {
        assert!(
            !log.contains(failure),
            "gatekeeper run logged {failure:?} during the storm:\n{log}"
        );
    }
    let Gateway { daemon, .. } = gateway;
    assert!(
        daemon.stop().success(),
        "gatekeeper run did not stop cleanly"
    );
}

/// Every allowed SYN is allowed by some connector, and B, live at the end,
/// has them all: the per-connector counts of `/metrics` must add up to the
/// allowed SYNs, also for `smarthost`, which is new to the policy on every
/// switch from A to B and so starts counting from a baseline each time.
#[test]
fn per_connector_counts_add_up_to_the_allowed_syns_after_a_storm() {
    const SHORT: u64 = 100;
    let mut gateway = Gateway::start();
    let storm = storm(&mut gateway, SHORT);
    println!("{}", storm.summary(SHORT));

    let allowed = storm.grew("status allow/ipv4") + storm.grew("status allow/ipv6");
    let per_connector: Vec<(String, u64)> = ["smarthost", "upstream-filter", "backup-mx"]
        .into_iter()
        .map(|name| {
            let series =
                format!(r#"metrics gatekeeper_connector_allowed_total{{connector="{name}"}}"#);
            (name.to_owned(), storm.grew(&series))
        })
        .collect();
    let sum: u64 = per_connector.iter().map(|(_, count)| count).sum();
    assert_eq!(
        sum, allowed,
        "allowed SYNs by connector {per_connector:?} against {allowed} allowed in all"
    );
}

#[test]
#[should_panic(expected = "counter \"status seen\" went down from 7 in sample 0 to 6 in sample 2")]
fn a_counter_going_down_is_noticed_across_a_sample_without_it() {
    let sample = |pairs: &[(&str, u64)]| -> Sample {
        pairs
            .iter()
            .map(|&(name, value)| (name.to_owned(), value))
            .collect()
    };
    assert_never_decrease(&[
        sample(&[("status seen", 7), ("status pass", 1)]),
        sample(&[("status pass", 2)]),
        sample(&[("status seen", 6), ("status pass", 2)]),
    ]);
}
