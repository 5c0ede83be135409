//! Differential fuzzing: the real XDP program, run with BPF_PROG_RUN, against
//! `gatekeeper_tests::reference`, a classifier written apart from it from the
//! rules in `docs/datapath.md`.
//!
//! Frames come from five generators (valid SYNs, the same with bytes
//! flipped, frames truncated at every length, structurally odd frames, and
//! random bytes) under several random policies, half of them looked up in
//! the compiled table and half in the LPM tries. For every frame the two
//! must agree on the verdict, the connector and the tiny-fragment and
//! long-chain flags; the program must return `XDP_DROP` for a deny and
//! `XDP_PASS` for anything else, so never `XDP_ABORTED`, and never drop a
//! frame the reference does not gate.
//!
//! The run is deterministic: it prints its seed, and the same seed and case
//! count give the same frames. By default (and in `cargo xtask test`) it
//! judges 200,000 frames with a fixed seed, in a few seconds.
//! `GATEKEEPER_FUZZ_CASES` (frames) and `GATEKEEPER_FUZZ_SEED` (decimal or
//! `0x` hex) change them, for a longer run on demand:
//!
//! ```text
//! GATEKEEPER_FUZZ_CASES=5000000 GATEKEEPER_FUZZ_SEED=0x1234 \
//!     cargo test -p gatekeeper-tests --test differential -- --nocapture
//! ```
//!
//! A disagreement is written to `tests/regressions/differential/` as a TOML
//! file (frame in hex, policy, both verdicts) and the test fails naming the
//! file. Every file there is replayed on every run. A file with a
//! `known_failure` key records a disagreement in which the program is wrong
//! and not fixed yet: it is reported but does not fail the run, and it fails
//! once the program agrees, so that the key is removed with the fix.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
    time::Instant,
};

use gatekeeper::{
    datapath::{
        Datapath, DatapathError, FrameOutcome, LoadSettings, Lookup, Verdict, XDP_ABORTED,
        XDP_DROP, XDP_PASS,
    },
    policy::{LoadOptions, Policy},
};
use gatekeeper_tests::{
    frames::{ETH_P_8021AD, ETH_P_8021Q, Ext, Frame, Icmp, TcpSeg, UdpDgram},
    reference::{Expected, classify},
    support::require_root,
};
use ipnet::IpNet;

/// Frames judged in a run unless `GATEKEEPER_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u64 = 200_000;
/// The seed unless `GATEKEEPER_FUZZ_SEED` says otherwise.
const DEFAULT_SEED: u64 = 0x6a7e_6bee_0025_0001;
/// Policies per run; the cases are shared out evenly among them.
const POLICIES: u64 = 8;
/// BPF_PROG_RUN refuses frames shorter than an Ethernet header, so no
/// generator produces them and truncation stops there.
const MIN_FRAME: usize = 14;
/// Regression files written per kind of disagreement, and per run.
const FILES_PER_KIND: usize = 2;
const FILES_PER_RUN: usize = 20;

/// Kinds of disagreement in which the XDP program is known to be wrong and
/// is not fixed yet: the reference's rule, and what the program does
/// instead. A disagreement of such a kind, where the program passes the
/// frame, is counted and reported but does not fail the run. Remove the
/// entry with the fix (the `known-failure-` regression file then fails
/// until its mark is removed too). None at present.
const KNOWN_PROGRAM_BUGS: &[(&str, &str)] = &[];

/// The generators and their share of the cases, in percent.
const GENERATORS: [(Generator, u64); 5] = [
    (Generator::Valid, 20),
    (Generator::Flipped, 20),
    (Generator::Truncated, 25),
    (Generator::Structured, 25),
    (Generator::Random, 10),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Generator {
    Valid,
    Flipped,
    Truncated,
    Structured,
    Random,
}

impl Generator {
    fn name(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Flipped => "flipped",
            Self::Truncated => "truncated",
            Self::Structured => "structured",
            Self::Random => "random",
        }
    }
}

#[test]
fn program_agrees_with_the_reference_on_generated_frames() {
    require_root();
    let seed = env_number("GATEKEEPER_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_number("GATEKEEPER_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    println!(
        "differential: seed {seed:#018x}, {cases} frames \
         (GATEKEEPER_FUZZ_SEED and GATEKEEPER_FUZZ_CASES change them)"
    );
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let mut fuzz = Fuzz::new(seed);

    for policy_index in 0..POLICIES {
        let policy = random_policy(&mut rng);
        // Half the policies are looked up in the compiled table, the
        // default, and half in the LPM tries.
        let lookup = LOOKUPS[policy_index as usize % LOOKUPS.len()];
        fuzz.install(&policy, lookup);
        for (generator, share) in GENERATORS {
            let budget = cases * share / 100 / POLICIES;
            let mut judged = 0;
            while judged < budget {
                for frame in generate(generator, &mut rng, &policy) {
                    if judged == budget {
                        break;
                    }
                    fuzz.judge(generator, &policy, &frame);
                    judged += 1;
                }
            }
        }
        println!(
            "  policy {policy_index}: {} mode, {} ports, {} connectors, {} destinations, {}",
            policy.policy.mode,
            policy.policy.ports.len(),
            policy.policy.connectors.len(),
            policy.policy.destinations.len(),
            lookup_name(lookup),
        );
    }

    print!("{}", fuzz.report());
    println!("differential: {:.1} s", started.elapsed().as_secs_f64());
    assert!(
        fuzz.disagreements == 0,
        "the XDP program and the reference disagreed on {} frames; written to:\n{}",
        fuzz.disagreements,
        fuzz.written
            .iter()
            .map(|path| format!("  {}", path.display()))
            .collect::<Vec<_>>()
            .join("\n"),
    );
}

#[test]
fn recorded_disagreements_are_replayed() {
    require_root();
    let mut files: Vec<PathBuf> = std::fs::read_dir(regressions_dir())
        .expect("reading the regressions directory")
        .map(|entry| entry.expect("listing the regressions directory").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();

    let mut known = Vec::new();
    for lookup in LOOKUPS {
        let mut datapath = load(lookup);
        for path in &files {
            let case = Regression::read(path);
            let origin = format!("{} ({} lookup)", path.display(), lookup_name(lookup));
            datapath
                .install(&case.policy)
                .unwrap_or_else(|error| panic!("{origin}: installing its policy: {error}"));
            let expected = classify(&case.frame, &case.policy);
            let problems = compare(&expected, datapath.run_frame(&case.frame));
            match replay_judgement(case.known_failure.as_deref(), &problems) {
                Ok(None) => {}
                Ok(Some(why)) => known.push(format!("{origin}: {why}")),
                Err(message) => panic!("{origin}: {message}"),
            }
        }
    }
    println!(
        "replayed {} recorded disagreements with each of {} lookups",
        files.len(),
        LOOKUPS.len()
    );
    for line in &known {
        println!("  KNOWN FAILURE of the XDP program, still present: {line}");
    }
}

/// What replaying one recorded case means: `Ok(None)` when the program and
/// the reference agree, `Ok(Some(why))` for a known failure of the program
/// that is still there, and `Err` (the run fails) when an unmarked case
/// disagrees again or a marked one no longer does.
fn replay_judgement<'a>(
    known_failure: Option<&'a str>,
    problems: &[String],
) -> Result<Option<&'a str>, String> {
    match (known_failure, problems.is_empty()) {
        (None, true) => Ok(None),
        (None, false) => Err(format!(
            "the program and the reference disagree again:\n  {}",
            problems.join("\n  ")
        )),
        (Some(_), true) => Err(
            "marked as a known failure of the XDP program, but the program \
             now agrees with the reference; remove the known_failure key (and rename the file)"
                .to_owned(),
        ),
        (Some(why), false) => Ok(Some(why)),
    }
}

/// Whether a disagreement is of a kind in `known`: the reference's rule is
/// listed and the program passed the frame.
fn is_known_program_bug(known: &[(&str, &str)], rule: &str, program: &str) -> bool {
    program == "pass" && known.iter().any(|(known_rule, _)| *known_rule == rule)
}

/// The ways the program can look sources up; every frame is judged with one
/// of them and every regression case with each.
const LOOKUPS: [Lookup; 2] = [Lookup::Table, Lookup::Trie];

fn lookup_name(lookup: Lookup) -> &'static str {
    match lookup {
        Lookup::Table => "table",
        Lookup::Trie => "lpm-trie",
    }
}

fn load(lookup: Lookup) -> Datapath {
    Datapath::load_with(LoadSettings {
        lookup,
        ..LoadSettings::default()
    })
    .unwrap_or_else(|error| panic!("loading the XDP program ({lookup:?}): {error}"))
}

fn regressions_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("regressions/differential")
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim().replace('_', "");
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

/// The problems with one outcome, in words; empty when the program agrees
/// with the reference.
fn compare(expected: &Expected, outcome: Result<FrameOutcome, DatapathError>) -> Vec<String> {
    // `run_frame` refuses an action that does not match the verdict the
    // counters show, so XDP_ABORTED, or a drop counted as anything but a
    // deny, arrives as an error.
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(DatapathError::Inconsistent {
            action: XDP_ABORTED,
            ..
        }) => return vec!["the program returned XDP_ABORTED".to_owned()],
        Err(error) => return vec![format!("the program's run failed: {error} ({error:?})")],
    };
    let mut problems = Vec::new();
    let expected_action = if expected.verdict == Verdict::Deny {
        XDP_DROP
    } else {
        XDP_PASS
    };
    if outcome.action == XDP_DROP && expected.verdict == Verdict::Pass {
        problems.push("the program dropped a frame that is not gated".to_owned());
    } else if outcome.action != expected_action {
        problems.push(format!(
            "the program returned XDP action {}, the reference's verdict means {expected_action}",
            outcome.action
        ));
    }
    let same = outcome.verdict == expected.verdict
        && outcome.tiny_fragment == expected.tiny_fragment
        && outcome.long_chain == expected.long_chain;
    if !same {
        problems.push(format!(
            "program: {}; reference: {} ({})",
            describe(&outcome),
            expected,
            expected.rule
        ));
    }
    problems
}

fn describe(outcome: &FrameOutcome) -> String {
    let mut text = outcome.verdict.to_string();
    if outcome.tiny_fragment {
        text.push_str(" (tiny fragment)");
    }
    if outcome.long_chain {
        text.push_str(" (long chain)");
    }
    text
}

/// The program under test and what the run found.
struct Fuzz {
    /// One loaded program per entry of [`LOOKUPS`], in that order.
    datapaths: Vec<Datapath>,
    /// The one the current policy is installed in.
    current: usize,
    seed: u64,
    /// Frames judged per generator, and how each was judged by the reference.
    judged: BTreeMap<Generator, Tally>,
    disagreements: u64,
    /// Disagreements of a kind in [`KNOWN_PROGRAM_BUGS`].
    known: u64,
    /// Regression files written so far, per kind of disagreement.
    per_kind: BTreeMap<String, usize>,
    written: Vec<PathBuf>,
}

#[derive(Default)]
struct Tally {
    frames: u64,
    gated: u64,
    allowed: u64,
    tiny_fragments: u64,
    long_chains: u64,
    disagreements: u64,
}

impl Fuzz {
    fn new(seed: u64) -> Self {
        Self {
            datapaths: LOOKUPS.into_iter().map(load).collect(),
            current: 0,
            seed,
            judged: BTreeMap::new(),
            disagreements: 0,
            known: 0,
            per_kind: BTreeMap::new(),
            written: Vec::new(),
        }
    }

    fn install(&mut self, policy: &GeneratedPolicy, lookup: Lookup) {
        self.current = LOOKUPS
            .iter()
            .position(|&each| each == lookup)
            .expect("one of LOOKUPS");
        self.datapaths[self.current]
            .install(&policy.policy)
            .unwrap_or_else(|error| panic!("installing\n{}\n: {error}", policy.text));
    }

    fn judge(&mut self, generator: Generator, policy: &GeneratedPolicy, frame: &[u8]) {
        assert!(frame.len() >= MIN_FRAME, "a generator made a runt frame");
        let expected = classify(frame, &policy.policy);
        let outcome = self.datapaths[self.current].run_frame(frame);
        let tally = self.judged.entry(generator).or_default();
        tally.frames += 1;
        if expected.verdict != Verdict::Pass {
            tally.gated += 1;
        }
        if matches!(expected.verdict, Verdict::Allow(_)) {
            tally.allowed += 1;
        }
        tally.tiny_fragments += u64::from(expected.tiny_fragment);
        tally.long_chains += u64::from(expected.long_chain);

        let program = match &outcome {
            Ok(outcome) => describe(outcome),
            Err(error) => format!("error: {error}"),
        };
        let problems = compare(&expected, outcome);
        if problems.is_empty() {
            return;
        }
        if is_known_program_bug(KNOWN_PROGRAM_BUGS, expected.rule, &program) {
            self.known += 1;
            return;
        }
        self.disagreements += 1;
        if let Some(tally) = self.judged.get_mut(&generator) {
            tally.disagreements += 1;
        }
        let kind = format!(
            "{} / {} / {}",
            generator.name(),
            expected.rule,
            program.split(' ').next().unwrap_or_default()
        );
        let count = self.per_kind.entry(kind).or_default();
        if *count >= FILES_PER_KIND || self.written.len() >= FILES_PER_RUN {
            return;
        }
        *count += 1;
        let name = format!(
            "{}-{:016x}-{}.toml",
            generator.name(),
            self.seed,
            self.disagreements
        );
        let path = regressions_dir().join(name);
        let found = format!(
            "the `{}` generator of tests/tests/differential.rs with seed {:#x}, {} lookup",
            generator.name(),
            self.seed,
            lookup_name(LOOKUPS[self.current])
        );
        let text = Regression::render(&found, policy, frame, &expected, &problems);
        std::fs::write(&path, text)
            .unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        println!("DISAGREEMENT written to {}", path.display());
        for problem in &problems {
            println!("  {problem}");
        }
        self.written.push(path);
    }

    fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
            "generator", "frames", "gated", "allowed", "tiny", "long", "disagree"
        );
        let mut total = 0;
        for (generator, tally) in &self.judged {
            total += tally.frames;
            let _ = writeln!(
                out,
                "{:<12} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}",
                generator.name(),
                tally.frames,
                tally.gated,
                tally.allowed,
                tally.tiny_fragments,
                tally.long_chains,
                tally.disagreements
            );
        }
        let _ = writeln!(
            out,
            "{total} frames judged, {} disagreements (gated, allowed, tiny and long as the \
             reference judged them)",
            self.disagreements
        );
        if self.known > 0 {
            let _ = writeln!(
                out,
                "{} more disagreements of a kind the XDP program is known to get wrong:",
                self.known
            );
            for (_, what) in KNOWN_PROGRAM_BUGS {
                let _ = writeln!(out, "  KNOWN FAILURE: {what}");
            }
        }
        out
    }
}

/// One recorded disagreement, as written to the regressions directory.
struct Regression {
    policy: Policy,
    frame: Vec<u8>,
    known_failure: Option<String>,
}

impl Regression {
    /// The text of a regression file; `found` says by what run.
    fn render(
        found: &str,
        policy: &GeneratedPolicy,
        frame: &[u8],
        expected: &Expected,
        problems: &[String],
    ) -> String {
        let mut text = String::new();
        let _ = writeln!(
            text,
            "# A frame on which the XDP program and tests/src/reference.rs disagreed,\n\
             # found by {found}.\n\
             # Decide which side is wrong. If it is the program, add a line\n\
             # known_failure = \"the rule it breaks\" and rename the file to start with\n\
             # known-failure-."
        );
        for problem in problems {
            let _ = writeln!(text, "# {problem}");
        }
        let _ = writeln!(text, "reference = {:?}", expected.to_string());
        let _ = writeln!(text, "reference_rule = {:?}", expected.rule);
        let _ = writeln!(text, "frame = \"{}\"", hex(frame));
        let _ = writeln!(text, "policy = '''\n{}'''", policy.text);
        text
    }

    fn read(path: &Path) -> Self {
        let text = std::fs::read_to_string(path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a regression file; `origin` names it in panics.
    fn parse(text: &str, origin: &str) -> Self {
        let table: toml::Table = text
            .parse()
            .unwrap_or_else(|error| panic!("{origin}: not TOML: {error}"));
        let string = |key: &str| {
            table
                .get(key)
                .map(|value| {
                    value
                        .as_str()
                        .unwrap_or_else(|| panic!("{origin}: {key} must be a string"))
                })
                .map(str::to_owned)
        };
        let policy_text = string("policy").unwrap_or_else(|| panic!("{origin}: no policy"));
        let policy = Policy::parse(&policy_text, origin, LoadOptions { allow_empty: true })
            .unwrap_or_else(|error| panic!("{error}"));
        let frame = string("frame").unwrap_or_else(|| panic!("{origin}: no frame"));
        let frame = unhex(&frame).unwrap_or_else(|| panic!("{origin}: frame is not hex"));
        Self {
            policy,
            frame,
            known_failure: string("known_failure"),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

/// SplitMix64: small, fast and the same everywhere, so a seed names a run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: usize, high: usize) -> usize {
        low + self.below((high - low + 1) as u64) as usize
    }

    fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    /// `low..=high` random bytes.
    fn bytes_between(&mut self, low: usize, high: usize) -> Vec<u8> {
        let len = self.between(low, high);
        (0..len).map(|_| self.byte()).collect()
    }
}

/// A random policy, with the text it was parsed from.
struct GeneratedPolicy {
    text: String,
    policy: Policy,
    /// Every source prefix narrow enough to draw documentation addresses
    /// from.
    sources: Vec<IpNet>,
}

const V4_RANGES: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];
const PORT_POOL: [u16; 10] = [25, 587, 465, 2525, 24, 26, 1, 65535, 80, 10025];

fn random_policy(rng: &mut Rng) -> GeneratedPolicy {
    let mode = if rng.percent(50) {
        "enforce"
    } else {
        "monitor"
    };
    let mut ports: Vec<u16> = vec![25];
    for _ in 0..rng.below(4) {
        let port = if rng.percent(70) {
            rng.pick(&PORT_POOL)
        } else {
            rng.between(1, 65535) as u16
        };
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    if rng.percent(20) {
        ports.retain(|&port| port != 25);
        if ports.is_empty() {
            ports.push(587);
        }
    }

    let mut destinations: Vec<IpNet> = Vec::new();
    if rng.percent(40) {
        for _ in 0..rng.between(1, 3) {
            let net = if rng.percent(50) {
                random_v4_net(rng)
            } else {
                random_v6_net(rng)
            };
            if !destinations.contains(&net) {
                destinations.push(net);
            }
        }
    }

    let mut seen: Vec<IpNet> = Vec::new();
    let mut connectors = Vec::new();
    for index in 0..rng.below(6) {
        let mut sources = Vec::new();
        for _ in 0..rng.between(1, 4) {
            let net = match rng.below(20) {
                0 => "0.0.0.0/0".parse().expect("a prefix"),
                1 => "::/0".parse().expect("a prefix"),
                2..=10 => random_v4_net(rng),
                _ => random_v6_net(rng),
            };
            if !seen.contains(&net) {
                seen.push(net);
                sources.push(net);
            }
        }
        if !sources.is_empty() {
            connectors.push((format!("connector-{index}"), sources));
        }
    }

    let mut text = format!("mode = \"{mode}\"\nports = {ports:?}\n");
    let quoted = |nets: &[IpNet]| {
        let items: Vec<String> = nets.iter().map(|net| format!("\"{net}\"")).collect();
        format!("[{}]", items.join(", "))
    };
    if !destinations.is_empty() {
        let _ = writeln!(text, "destinations = {}", quoted(&destinations));
    }
    for (name, sources) in &connectors {
        let _ = write!(
            text,
            "\n[[connector]]\nname = \"{name}\"\nsources = {}\n",
            quoted(sources)
        );
    }
    let policy = Policy::parse(&text, "<generated>", LoadOptions { allow_empty: true })
        .unwrap_or_else(|error| panic!("the generator made an invalid policy:\n{text}\n{error}"));
    let sources = seen
        .into_iter()
        .filter(|net| match net {
            IpNet::V4(net) => net.prefix_len() >= 24,
            IpNet::V6(net) => net.prefix_len() >= 32,
        })
        .collect();
    GeneratedPolicy {
        text,
        policy,
        sources,
    }
}

fn random_v4_net(rng: &mut Rng) -> IpNet {
    let len = rng.pick(&[24, 25, 26, 27, 28, 29, 30, 31, 32, 32]);
    let net = IpNet::new(IpAddr::V4(random_doc_v4(rng)), len).expect("a valid length");
    net.trunc()
}

fn random_v6_net(rng: &mut Rng) -> IpNet {
    let len = rng.pick(&[32, 33, 40, 47, 48, 56, 63, 64, 65, 96, 120, 127, 128]);
    let net = IpNet::new(IpAddr::V6(random_doc_v6(rng)), len).expect("a valid length");
    net.trunc()
}

fn random_doc_v4(rng: &mut Rng) -> Ipv4Addr {
    let [a, b, c] = rng.pick(&V4_RANGES);
    let any = rng.byte();
    let host = rng.pick(&[0, 1, 7, 25, 127, 128, 200, 255, any]);
    Ipv4Addr::new(a, b, c, host)
}

/// An address in 2001:db8::/32, drawn from few values per group so that
/// random prefixes overlap and random sources fall into them.
fn random_doc_v6(rng: &mut Rng) -> Ipv6Addr {
    let group = |rng: &mut Rng| {
        let any = u16::from(rng.byte());
        rng.pick(&[0, 0, 1, 5, 0x25, 0x100, 0xbad, 0xffff, any])
    };
    Ipv6Addr::new(
        0x2001,
        0x0db8,
        group(rng),
        group(rng),
        group(rng),
        group(rng),
        group(rng),
        group(rng),
    )
}

/// A random address inside `net`, or next to it, or anywhere in the
/// documentation ranges of the family.
fn address_near(rng: &mut Rng, net: IpNet) -> IpAddr {
    match net {
        IpNet::V4(net) => {
            let base = u32::from(net.network());
            let size = 1u64 << (32 - net.prefix_len());
            let offset = match rng.below(5) {
                0 => 0,
                1 => size - 1,
                2 => size,
                _ => rng.below(size),
            };
            let addr = Ipv4Addr::from(base.wrapping_add(offset as u32));
            let octets = addr.octets();
            if V4_RANGES.contains(&[octets[0], octets[1], octets[2]]) {
                IpAddr::V4(addr)
            } else {
                IpAddr::V4(random_doc_v4(rng))
            }
        }
        IpNet::V6(net) => {
            let base = u128::from(net.network());
            let host_bits = 128 - u32::from(net.prefix_len());
            let mask = u128::MAX.checked_shr(128 - host_bits).unwrap_or(0);
            let host = match rng.below(4) {
                0 => 0,
                1 => mask,
                _ => (u128::from(rng.next()) << 64 | u128::from(rng.next())) & mask,
            };
            IpAddr::V6(Ipv6Addr::from(base | host))
        }
    }
}

fn source(rng: &mut Rng, policy: &GeneratedPolicy, v6: bool) -> IpAddr {
    let family: Vec<IpNet> = policy
        .sources
        .iter()
        .copied()
        .filter(|net| matches!(net, IpNet::V6(_)) == v6)
        .collect();
    if !family.is_empty() && rng.percent(60) {
        let net = rng.pick(&family);
        return address_near(rng, net);
    }
    if v6 {
        IpAddr::V6(random_doc_v6(rng))
    } else {
        IpAddr::V4(random_doc_v4(rng))
    }
}

fn destination(rng: &mut Rng, policy: &GeneratedPolicy, v6: bool) -> IpAddr {
    let family: Vec<IpNet> = policy
        .policy
        .destinations
        .iter()
        .copied()
        .filter(|net| matches!(net, IpNet::V6(_)) == v6)
        .collect();
    if !family.is_empty() && rng.percent(70) {
        let net = rng.pick(&family);
        return address_near(rng, net);
    }
    if v6 {
        IpAddr::V6(random_doc_v6(rng))
    } else {
        IpAddr::V4(random_doc_v4(rng))
    }
}

fn port(rng: &mut Rng, policy: &GeneratedPolicy) -> u16 {
    if rng.percent(70) {
        rng.pick(&policy.policy.ports)
    } else {
        rng.pick(&PORT_POOL)
    }
}

fn flags(rng: &mut Rng) -> u8 {
    match rng.below(4) {
        0 | 1 => gatekeeper_tests::frames::SYN,
        _ => rng.byte(),
    }
}

fn ip_frame(src: IpAddr, dst: IpAddr) -> Frame {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => Frame::ipv4(src, dst),
        (IpAddr::V6(src), IpAddr::V6(dst)) => Frame::ipv6(src, dst),
        _ => unreachable!("source and destination come from one family"),
    }
}

fn vlan_tags(rng: &mut Rng, mut frame: Frame, max: usize) -> Frame {
    for _ in 0..rng.between(0, max) {
        let tpid = if rng.percent(95) {
            rng.pick(&[ETH_P_8021Q, ETH_P_8021AD])
        } else {
            0x9100
        };
        frame = frame.vlan(tpid, rng.below(4096) as u16);
    }
    frame
}

/// A well-formed TCP segment with random flags and, sometimes, options and
/// a payload; returns it with its length.
fn segment(rng: &mut Rng, policy: &GeneratedPolicy) -> (TcpSeg, usize) {
    let mut segment =
        TcpSeg::new(rng.between(1024, 65535) as u16, port(rng, policy)).flags(flags(rng));
    let mut len = 20;
    if rng.percent(30) {
        let options = rng.bytes_between(1, 40);
        len += options.len().next_multiple_of(4);
        segment = segment.options(&options);
    }
    if rng.percent(20) {
        let payload = rng.bytes_between(1, 64);
        len += payload.len();
        segment = segment.payload(&payload);
    }
    (segment, len)
}

fn generate(generator: Generator, rng: &mut Rng, policy: &GeneratedPolicy) -> Vec<Vec<u8>> {
    match generator {
        Generator::Valid => vec![valid_syn(rng, policy)],
        Generator::Flipped => {
            let mut frame = if rng.percent(60) {
                valid_syn(rng, policy)
            } else {
                structured(rng, policy)
            };
            flip(rng, &mut frame);
            vec![frame]
        }
        Generator::Truncated => {
            let frame = if rng.percent(60) {
                valid_syn(rng, policy)
            } else {
                structured(rng, policy)
            };
            (MIN_FRAME..frame.len())
                .map(|len| frame[..len].to_vec())
                .collect()
        }
        Generator::Structured => vec![structured(rng, policy)],
        Generator::Random => vec![random_bytes(rng, policy)],
    }
}

/// (a) A well-formed SYN (or, with random flags, another segment) from a
/// source in or near the policy's connectors.
fn valid_syn(rng: &mut Rng, policy: &GeneratedPolicy) -> Vec<u8> {
    let v6 = rng.percent(50);
    let src = source(rng, policy, v6);
    let dst = destination(rng, policy, v6);
    let (segment, _) = segment(rng, policy);
    let mut frame = vlan_tags(rng, ip_frame(src, dst).tcp(segment), 2);
    if rng.percent(30) {
        frame = frame.pad_to_min();
    }
    frame.build()
}

/// (b) Changes 1 to 4 bytes, mostly in the headers.
fn flip(rng: &mut Rng, frame: &mut [u8]) {
    for _ in 0..rng.between(1, 4) {
        let reach = if rng.percent(80) {
            frame.len().min(100)
        } else {
            frame.len()
        };
        let at = rng.below(reach as u64) as usize;
        if rng.percent(50) {
            frame[at] ^= 1 << rng.below(8);
        } else {
            frame[at] = rng.byte();
        }
    }
}

/// (d) Frames with the odd structures the datapath rules are about: VLAN
/// stacks, IPv4 options and lying length fields, fragments, IPv6 extension
/// chains, other protocols, cut messages and Ethernet padding.
fn structured(rng: &mut Rng, policy: &GeneratedPolicy) -> Vec<u8> {
    let v6 = rng.percent(50);
    let src = source(rng, policy, v6);
    let dst = destination(rng, policy, v6);
    let mut frame = vlan_tags(rng, ip_frame(src, dst), 3);

    let (message_len, fragmented) = if v6 {
        let (with_chain, fragmented) = extension_chain(rng, frame);
        frame = with_chain;
        let (with_message, message_len) = upper_layer(rng, policy, frame);
        frame = with_message;
        if rng.percent(10) {
            frame = frame.payload_len(lying_length(rng));
        }
        (message_len, fragmented)
    } else {
        if rng.percent(30) {
            frame = frame.options(&rng.bytes_between(1, 40));
        }
        if rng.percent(5) {
            frame = frame.ihl(rng.below(16) as u8);
        }
        let fragmented = match rng.below(10) {
            0..=2 => {
                frame = frame.fragment(0, true);
                true
            }
            3 | 4 => {
                frame = frame.fragment(rng.between(1, 8191) as u16, rng.percent(50));
                false
            }
            _ => false,
        };
        if rng.percent(10) {
            frame = frame.dont_fragment();
        }
        let (with_message, message_len) = upper_layer(rng, policy, frame);
        frame = with_message;
        if rng.percent(10) {
            frame = frame.total_len(lying_length(rng));
        }
        (message_len, fragmented)
    };

    // Cut the message: often for fragments (the tiny-fragment rule), now
    // and then for anything.
    if message_len > 0 && rng.percent(if fragmented { 60 } else { 15 }) {
        let keep = if rng.percent(70) {
            rng.between(0, message_len.min(20))
        } else {
            rng.between(0, message_len)
        };
        frame = frame.l4_truncate(keep);
    }
    if rng.percent(30) {
        frame = frame.pad_to_min();
    }
    let mut bytes = frame.build();
    if rng.percent(15) {
        let trailer = if rng.percent(50) {
            let len = rng.between(1, 40);
            vec![0; len]
        } else {
            rng.bytes_between(1, 40)
        };
        bytes.extend_from_slice(&trailer);
    }
    bytes
}

/// A length field that does not match what is carried: zero, small, or more
/// than the frame holds.
fn lying_length(rng: &mut Rng) -> u16 {
    match rng.below(4) {
        0 => 0,
        1 => rng.below(64) as u16,
        2 => rng.between(40, 200) as u16,
        _ => rng.next() as u16,
    }
}

/// 0 to 10 IPv6 extension headers of random kinds and lengths; returns the
/// frame and whether one of them makes it a first fragment.
fn extension_chain(rng: &mut Rng, mut frame: Frame) -> (Frame, bool) {
    let count = match rng.below(10) {
        0..=3 => 0,
        4..=6 => rng.between(1, 3),
        _ => rng.between(4, 10),
    };
    let mut first_fragment = false;
    for _ in 0..count {
        let ext = match rng.below(5) {
            0 => Ext::hop_by_hop(8 * rng.between(1, 4)),
            1 => Ext::routing(8 * rng.between(1, 4)),
            2 => Ext::destination_options(8 * rng.between(1, 4)),
            3 => {
                let offset = if rng.percent(75) {
                    0
                } else {
                    rng.between(1, 8191) as u16
                };
                let more = rng.percent(60);
                first_fragment |= offset == 0 && more;
                Ext::fragment(offset, more, rng.next() as u32)
            }
            _ => Ext::authentication(4 * rng.between(3, 10)),
        };
        frame = frame.ext(ext);
    }
    (frame, first_fragment)
}

/// Adds an upper-layer message; returns the frame and the message's length.
fn upper_layer(rng: &mut Rng, policy: &GeneratedPolicy, frame: Frame) -> (Frame, usize) {
    match rng.below(20) {
        0..=14 => {
            let (mut segment, len) = segment(rng, policy);
            if rng.percent(10) {
                segment = segment.doff(rng.below(16) as u8);
            }
            (frame.tcp(segment), len)
        }
        15 | 16 => {
            let datagram = UdpDgram::new(40000, port(rng, policy)).payload(b"x");
            (frame.udp(datagram), 8 + 1)
        }
        17 => (frame.icmp(Icmp::new(8, 0, &[0, 1, 0, 1])), 8),
        _ => {
            let any = rng.byte();
            let protocol = rng.pick(&[6, 6, 17, 50, 59, any]);
            let bytes = rng.bytes_between(0, 40);
            let len = bytes.len();
            (frame.l4_bytes(protocol, &bytes), len)
        }
    }
}

/// (e) Random bytes, mostly with an IP ethertype and version so that the
/// parser gets past the first checks, and often with offset 0 and, where a
/// TCP header would start, a gated port and SYN, so that some are gated.
fn random_bytes(rng: &mut Rng, policy: &GeneratedPolicy) -> Vec<u8> {
    let mut frame = rng.bytes_between(MIN_FRAME, 200);
    if rng.percent(80) {
        let ethertype: u16 = rng.pick(&[0x0800, 0x86dd, 0x8100, 0x88a8]);
        frame[12..14].copy_from_slice(&ethertype.to_be_bytes());
        let ip = if ethertype == 0x8100 || ethertype == 0x88a8 {
            let inner: u16 = rng.pick(&[0x0800, 0x86dd]);
            if frame.len() >= 18 {
                frame[16..18].copy_from_slice(&inner.to_be_bytes());
            }
            18
        } else {
            14
        };
        let v6 = frame
            .get(ip - 2..ip)
            .is_some_and(|ethertype| ethertype == [0x86, 0xdd]);
        if let Some(first) = frame.get_mut(ip) {
            *first = if v6 {
                0x60 | (*first & 0x0f)
            } else {
                let any = rng.byte() & 0x0f;
                0x40 | rng.pick(&[5, 5, 6, 15, any])
            };
        }
        let protocol_at = if v6 { ip + 6 } else { ip + 9 };
        if let Some(protocol) = frame.get_mut(protocol_at)
            && rng.percent(70)
        {
            *protocol = rng.pick(&[6, 6, 0, 43, 44, 51, 60]);
        }
        if !v6
            && rng.percent(70)
            && let Some(offset) = frame.get_mut(ip + 6..ip + 8)
        {
            // Keep the flags, clear the fragment offset.
            offset[0] &= 0xe0;
            offset[1] = 0;
        }
        let tcp = match frame.get(ip) {
            Some(first) if !v6 => ip + usize::from(first & 0x0f) * 4,
            _ => ip + 40,
        };
        if rng.percent(50)
            && let Some(header) = frame.get_mut(tcp + 2..tcp + 14)
        {
            header[..2].copy_from_slice(&port(rng, policy).to_be_bytes());
            header[11] = gatekeeper_tests::frames::SYN;
        }
    }
    frame
}

/// The known-failure mechanism on its own, without the program: while every
/// recorded failure of the program is fixed, no regression file exercises it.
#[test]
fn a_known_failure_is_reported_while_present_and_fails_the_run_once_fixed() {
    let problems = vec!["program: pass; reference: deny (gated SYN)".to_owned()];
    assert_eq!(replay_judgement(None, &[]), Ok(None));
    assert_eq!(
        replay_judgement(None, &problems),
        Err("the program and the reference disagree again:\n  \
             program: pass; reference: deny (gated SYN)"
            .to_owned())
    );
    assert_eq!(
        replay_judgement(Some("the rule broken"), &problems),
        Ok(Some("the rule broken"))
    );
    assert_eq!(
        replay_judgement(Some("the rule broken"), &[]),
        Err(
            "marked as a known failure of the XDP program, but the program now agrees \
             with the reference; remove the known_failure key (and rename the file)"
                .to_owned()
        )
    );

    let known = [("gated SYN", "what the program does instead")];
    assert!(is_known_program_bug(&known, "gated SYN", "pass"));
    assert!(!is_known_program_bug(&known, "gated SYN", "deny"));
    assert!(!is_known_program_bug(
        &known,
        "tiny first fragment judged as a SYN",
        "pass"
    ));
    assert!(!is_known_program_bug(&[], "gated SYN", "pass"));

    let case = Regression::parse(
        "known_failure = \"the rule broken\"\n\
         frame = \"00 01 fe ff\"\n\
         policy = '''\nmode = \"enforce\"\nports = [25]\n'''\n",
        "<known failure>",
    );
    assert_eq!(case.known_failure.as_deref(), Some("the rule broken"));
    assert_eq!(case.frame, [0x00, 0x01, 0xfe, 0xff]);
    assert_eq!(case.policy.ports, [25]);
    let unmarked = Regression::parse(
        "frame = \"00\"\npolicy = '''\nmode = \"monitor\"\nports = [587]\n'''\n",
        "<unmarked>",
    );
    assert_eq!(unmarked.known_failure, None);
    assert_eq!(unmarked.frame, [0x00]);
}
