//! What the privileged tests share: a loaded datapath with exact expectations
//! about what one frame does to it, and the `gatekeeper` binary.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use gatekeeper::{
    datapath::{CounterTotals, Datapath, FrameOutcome, Verdict, XDP_DROP, XDP_PASS},
    policy::{LoadOptions, Policy},
};
use gatekeeper_common::counter;

/// Panics unless the test runs as root: these tests load XDP programs, and a
/// silent skip would let CI pass without running them.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "the privileged tests load XDP programs and need root: run `cargo xtask test` as root"
    );
}

/// Parses policy text, panicking with the problems when it is invalid.
pub fn policy(text: &str) -> Policy {
    Policy::parse(text, "<test policy>", LoadOptions::default())
        .unwrap_or_else(|error| panic!("test policy is invalid:\n{error}"))
}

/// The address family a gated frame is counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// What a frame should do, in full.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expect {
    verdict: Verdict,
    family: Option<Family>,
    tiny_fragment: bool,
    long_chain: bool,
}

impl Expect {
    /// Not gated.
    pub fn pass() -> Self {
        Self {
            verdict: Verdict::Pass,
            family: None,
            tiny_fragment: false,
            long_chain: false,
        }
    }

    /// Gated and allowed for `connector`.
    pub fn allow(family: Family, connector: &str) -> Self {
        Self::gated(family, Verdict::Allow(connector.to_owned()))
    }

    /// Gated and dropped.
    pub fn deny(family: Family) -> Self {
        Self::gated(family, Verdict::Deny)
    }

    /// Gated and passed in monitor mode.
    pub fn would_deny(family: Family) -> Self {
        Self::gated(family, Verdict::WouldDeny)
    }

    fn gated(family: Family, verdict: Verdict) -> Self {
        Self {
            verdict,
            family: Some(family),
            tiny_fragment: false,
            long_chain: false,
        }
    }

    /// Judged as a SYN because it is a first fragment without TCP flags.
    pub fn tiny_fragment(mut self) -> Self {
        self.tiny_fragment = true;
        self
    }

    /// Judged as a SYN because its IPv6 extension-header chain is too long.
    pub fn long_chain(mut self) -> Self {
        self.long_chain = true;
        self
    }

    /// The counter deltas this frame must cause, every counter included.
    fn counter_deltas(&self) -> CounterTotals {
        let mut values = [0; counter::COUNT];
        values[counter::SEEN] = 1;
        let verdict_counter = match (&self.verdict, self.family) {
            (Verdict::Pass, _) => counter::PASS,
            (Verdict::Allow(_), Some(Family::V4)) => counter::ALLOW_V4,
            (Verdict::Allow(_), Some(Family::V6)) => counter::ALLOW_V6,
            (Verdict::Deny, Some(Family::V4)) => counter::DENY_V4,
            (Verdict::Deny, Some(Family::V6)) => counter::DENY_V6,
            (Verdict::WouldDeny, Some(Family::V4)) => counter::WOULD_DENY_V4,
            (Verdict::WouldDeny, Some(Family::V6)) => counter::WOULD_DENY_V6,
            (verdict, None) => panic!("a gated expectation ({verdict}) needs a family"),
        };
        values[verdict_counter] = 1;
        // No deny-log rate is set, so every deny event is counted as dropped.
        if matches!(self.verdict, Verdict::Deny | Verdict::WouldDeny) {
            values[counter::EVENTS_DROPPED] = 1;
        }
        if self.tiny_fragment {
            values[counter::TINY_FRAGMENT] = 1;
        }
        if self.long_chain {
            values[counter::LONG_V6_CHAIN] = 1;
        }
        CounterTotals { values }
    }
}

/// The real XDP program, loaded but not attached, with a policy installed.
pub struct Harness {
    datapath: Datapath,
}

impl Harness {
    /// Loads the program and installs `policy_text`.
    pub fn new(policy_text: &str) -> Self {
        require_root();
        let mut datapath = Datapath::load().expect("loading the XDP program");
        datapath
            .install(&policy(policy_text))
            .expect("installing the test policy");
        Self { datapath }
    }

    /// Loads the program without installing any policy.
    pub fn without_policy() -> Self {
        require_root();
        Self {
            datapath: Datapath::load().expect("loading the XDP program"),
        }
    }

    /// The datapath, for tests that reinstall policies.
    pub fn datapath(&mut self) -> &mut Datapath {
        &mut self.datapath
    }

    /// Runs `frame` and returns what the program did.
    pub fn run(&mut self, frame: &[u8]) -> FrameOutcome {
        self.datapath
            .run_frame(frame)
            .unwrap_or_else(|error| panic!("running a {}-byte frame: {error:?}", frame.len()))
    }

    /// Runs `frame` and asserts its action, verdict and the exact change of
    /// every counter, including the per-connector ones.
    #[track_caller]
    pub fn check(&mut self, what: &str, frame: &[u8], expect: &Expect) {
        let counters_before = self.datapath.counters().expect("reading counters");
        let connectors_before = self.datapath.connector_counts().expect("reading counters");

        let outcome = self.run(frame);

        let counters_after = self.datapath.counters().expect("reading counters");
        let connectors_after = self.datapath.connector_counts().expect("reading counters");
        let expected_action = if expect.verdict == Verdict::Deny {
            XDP_DROP
        } else {
            XDP_PASS
        };
        assert_eq!(
            outcome.action, expected_action,
            "{what}: XDP action (2 pass, 1 drop)"
        );
        assert_eq!(outcome.verdict, expect.verdict, "{what}: verdict");
        assert_eq!(
            outcome.tiny_fragment, expect.tiny_fragment,
            "{what}: tiny fragment"
        );
        assert_eq!(outcome.long_chain, expect.long_chain, "{what}: long chain");
        assert_eq!(
            counters_after.since(&counters_before),
            expect.counter_deltas(),
            "{what}: counter deltas"
        );

        let mut expected_connectors = vec![0; connectors_before.len()];
        if let Verdict::Allow(name) = &expect.verdict {
            let id = self
                .datapath
                .connector_id(name)
                .unwrap_or_else(|| panic!("{what}: no connector {name} in the policy"));
            expected_connectors[id as usize] = 1;
        }
        let deltas: Vec<u64> = connectors_after
            .iter()
            .zip(&connectors_before)
            .map(|(after, before)| after - before)
            .collect();
        assert_eq!(deltas, expected_connectors, "{what}: per-connector deltas");
    }
}

/// The `gatekeeper` binary, built on first use.
pub fn gatekeeper_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives in the workspace");
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "--package",
                "gatekeeper",
                "--bin",
                "gatekeeper",
            ])
            .current_dir(workspace)
            .status()
            .expect("running cargo build for the gatekeeper binary");
        assert!(status.success(), "building the gatekeeper binary failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace.join("target"), PathBuf::from);
        target.join("debug").join("gatekeeper")
    })
}
