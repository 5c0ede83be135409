//! The fuzz targets' properties over every input kept in `fuzz/regressions/`
//! (what the fuzzers once found) and `fuzz/corpus/` (the seeds), so that a
//! plain `cargo test` keeps them fixed without nightly or cargo-fuzz.

use std::path::{Path, PathBuf};

#[path = "../../fuzz/src/lib.rs"]
mod properties;

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for dir in ["regressions", "corpus"] {
        let dir = fuzz.join(dir).join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|error| panic!("listing {}: {error}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            if path.is_file() && path.file_name() != Some("README.md".as_ref()) {
                inputs.push(path);
            }
        }
    }
    inputs.sort();
    inputs
}

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let inputs = inputs(target);
    for path in &inputs {
        let data =
            std::fs::read(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(
            result.is_ok(),
            "{} fails the {target} properties",
            path.display()
        );
    }
    inputs.len()
}

#[test]
fn policy_inputs_keep_the_properties() {
    let count = replay("policy", properties::check_policy);
    assert!(
        count >= 6,
        "only {count} policy inputs: the seed corpus is missing"
    );
}

#[test]
fn capture_inputs_keep_the_properties() {
    let count = replay("pcap", properties::check_capture);
    assert!(
        count >= 3,
        "only {count} capture inputs: the seed corpus is missing"
    );
}
