//! Every subcommand given nonsense: unknown flags, bad values, missing
//! arguments, a directory where a policy file belongs, bytes that are not
//! UTF-8. Each must end with a usage error (status 2, from clap) or the
//! command's own documented error status, with a message, and never with a
//! panic. Needs no privileges: nothing here gets as far as loading the XDP
//! program, and no case names a real interface or the default pin directory.

use std::{
    ffi::{OsStr, OsString},
    os::unix::ffi::OsStrExt as _,
    path::PathBuf,
    process::Command,
};

/// Exit status of a usage error: clap's, and `check`'s for any error.
const USAGE: i32 = 2;
/// Exit status of a command that failed (`policy check` on an invalid
/// policy, `replay` and `run` on a policy they cannot read, ...).
const FAILURE: i32 = 1;

fn example_policy() -> OsString {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policy.toml")
        .into_os_string()
}

/// A directory, given where a file belongs.
fn directory() -> OsString {
    std::env::temp_dir().into_os_string()
}

/// A pin directory that does not exist, so that no case can reach the pins
/// of a gatekeeper running on this machine.
fn no_pins() -> OsString {
    std::env::temp_dir()
        .join(format!("gk-cli-nonsense-{}-no-pins", std::process::id()))
        .into_os_string()
}

fn not_utf8() -> OsString {
    OsStr::from_bytes(b"eth\xff\xfe0").to_owned()
}

/// One invocation and what it must end with.
struct Case {
    args: Vec<OsString>,
    status: i32,
    /// Text stderr must contain, besides being non-empty.
    says: &'static str,
}

fn case(args: &[&dyn AsRef<OsStr>], status: i32, says: &'static str) -> Case {
    Case {
        args: args.iter().map(|arg| arg.as_ref().to_owned()).collect(),
        status,
        says,
    }
}

#[test]
fn nonsense_ends_in_a_usage_error_or_a_documented_failure_never_a_panic() {
    let policy = example_policy();
    let dir = directory();
    let pins = no_pins();
    let bad = not_utf8();
    let run = |extra: &[&dyn AsRef<OsStr>]| {
        let mut args: Vec<&dyn AsRef<OsStr>> = vec![
            &"run",
            &"--iface",
            &"gk-nonsense0",
            &"--policy",
            &policy,
            &"--pin-dir",
            &pins,
        ];
        args.extend_from_slice(extra);
        args.iter()
            .map(|arg| arg.as_ref().to_owned())
            .collect::<Vec<_>>()
    };
    let with = |args: Vec<OsString>, status, says| Case { args, status, says };

    let cases = [
        // No subcommand: clap prints the help, with the usage error status.
        case(&[], USAGE, "Usage: gatekeeper <COMMAND>"),
        case(&[&"--bogus"], USAGE, "--bogus"),
        case(&[&bad], USAGE, "error:"),
        // policy check
        case(&[&"policy", &"check"], USAGE, "FILE"),
        case(
            &[&"policy", &"check", &"--bogus", &policy],
            USAGE,
            "--bogus",
        ),
        case(
            &[&"policy", &"check", &policy, &policy],
            USAGE,
            "unexpected argument",
        ),
        case(
            &[&"policy", &"check", &"--allow-empty=yes", &policy],
            USAGE,
            "error:",
        ),
        case(&[&"policy", &"check", &dir], FAILURE, "reading policy"),
        case(&[&"policy", &"check", &bad], FAILURE, "reading policy"),
        // replay
        case(&[&"replay"], USAGE, "--policy"),
        case(&[&"replay", &"--policy", &policy], USAGE, "--pcap"),
        case(&[&"replay", &"--bogus"], USAGE, "--bogus"),
        case(
            &[
                &"replay",
                &"--policy",
                &policy,
                &"--pcap",
                &dir,
                &"--json=maybe",
            ],
            USAGE,
            "error:",
        ),
        case(
            &[&"replay", &"--policy", &dir, &"--pcap", &dir],
            FAILURE,
            "reading policy",
        ),
        case(
            &[&"replay", &"--policy", &policy, &"--pcap", &dir],
            FAILURE,
            "error:",
        ),
        // run
        case(&[&"run"], USAGE, "--iface"),
        case(&[&"run", &"--iface", &"gk-nonsense0"], USAGE, "--policy"),
        with(run(&[&"--xdp-mode", &"banana"]), USAGE, "banana"),
        with(run(&[&"--log-rate", &"-5"]), USAGE, "error:"),
        with(run(&[&"--log-rate=-5"]), USAGE, "-5"),
        with(run(&[&"--log-rate", &"many"]), USAGE, "many"),
        with(run(&[&"--metrics", &"not-an-addr"]), USAGE, "not-an-addr"),
        with(run(&[&"--detach-on-exit=yes"]), USAGE, "--detach-on-exit"),
        with(run(&[&"--keep-attached", &"later"]), USAGE, "later"),
        with(run(&[&"--inventory-size", &"0"]), USAGE, "0"),
        with(run(&[&"--log-format", &"xml"]), USAGE, "xml"),
        with(run(&[&"--ebpf-log", &"loud"]), USAGE, "loud"),
        with(run(&[&"--bogus"]), USAGE, "--bogus"),
        case(
            &[&"run", &"--iface", &bad, &"--policy", &policy],
            USAGE,
            "UTF-8",
        ),
        case(
            &[
                &"run",
                &"--iface",
                &"gk-nonsense0",
                &"--policy",
                &dir,
                &"--pin-dir",
                &pins,
            ],
            FAILURE,
            "reading policy",
        ),
        // status
        case(&[&"status", &"--bogus"], USAGE, "--bogus"),
        case(&[&"status", &"--json=1"], USAGE, "error:"),
        case(&[&"status", &"--pin-dir"], USAGE, "--pin-dir"),
        case(&[&"status", &"eth0"], USAGE, "unexpected argument"),
        // check
        case(&[&"check"], USAGE, "ADDR"),
        case(&[&"check", &"not-an-ip"], USAGE, "not-an-ip"),
        case(&[&"check", &"192.0.2.1/24"], USAGE, "192.0.2.1/24"),
        case(&[&"check", &bad], USAGE, "error:"),
        case(
            &[&"check", &"192.0.2.1", &"--policy", &dir],
            USAGE,
            "reading policy",
        ),
        case(&[&"check", &"192.0.2.1", &"--bogus"], USAGE, "--bogus"),
        // inventory
        case(&[&"inventory", &"--limit", &"-1"], USAGE, "error:"),
        case(&[&"inventory", &"--limit", &"many"], USAGE, "many"),
        case(
            &[&"inventory", &"--json", &"--suggest"],
            USAGE,
            "cannot be used with",
        ),
        case(&[&"inventory", &"--bogus"], USAGE, "--bogus"),
        // detach
        case(&[&"detach", &"--iface"], USAGE, "--iface"),
        case(&[&"detach", &"--bogus"], USAGE, "--bogus"),
        case(&[&"detach", &"eth0"], USAGE, "unexpected argument"),
        case(&[&"detach", &"--iface", &bad], USAGE, "UTF-8"),
    ];

    let count = cases.len();
    let mut failures = Vec::new();
    for Case { args, status, says } in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_gatekeeper"))
            .args(&args)
            .output()
            .expect("running gatekeeper");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let problem = if stderr.contains("panicked") {
            "panicked".to_owned()
        } else if output.status.code() != Some(status) {
            format!("ended with {}, not status {status}", output.status)
        } else if !stderr.contains(says) {
            format!("stderr does not say {says:?}")
        } else {
            continue;
        };
        failures.push(format!("{args:?}: {problem}:\n{stderr}"));
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases went wrong:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
