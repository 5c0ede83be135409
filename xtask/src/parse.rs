//! Pure readers for what the setup checks get back from the tools they run and
//! the files they read, and for the load test's table; kept apart so each one
//! can be tested on sample text.

/// The nightly toolchain that `rustc +nightly` would pick, if `rustup
/// toolchain list` shows one.
///
/// A dated nightly (`nightly-2025-01-01-...`) does not count: `+nightly` never
/// selects it.
pub fn nightly_toolchain(toolchain_list: &str) -> Option<&str> {
    toolchain_list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .find(|name| match name.strip_prefix("nightly") {
            Some("") => true,
            Some(rest) => rest
                .strip_prefix('-')
                .is_some_and(|host| !host.starts_with(|c: char| c.is_ascii_digit())),
            None => false,
        })
}

/// Whether `rustup component list --installed` lists `component`.
pub fn has_component(component_list: &str, component: &str) -> bool {
    component_list
        .lines()
        .any(|line| line.split_whitespace().next() == Some(component))
}

/// The LLVM major version from `rustc -vV`, whose last line reads
/// `LLVM version: MAJOR.MINOR.PATCH`.
pub fn rustc_llvm_major(rustc_version: &str) -> Option<u32> {
    let version = rustc_version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))?;
    leading_number(version.trim())
}

/// The version number from `bpf-linker --version`, which prints
/// `bpf-linker VERSION` and nothing about LLVM.
pub fn bpf_linker_version(version_output: &str) -> Option<&str> {
    let mut words = version_output.split_whitespace();
    if words.next()? != "bpf-linker" {
        return None;
    }
    words.next()
}

/// The major version of the shared LLVM library named in `ldd` output, as
/// `libLLVM.so.MAJOR[.MINOR]` (apt.llvm.org) or `libLLVM-MAJOR.so...` (older
/// Debian packages). `None` when no libLLVM is linked dynamically.
pub fn ldd_llvm_major(ldd_output: &str) -> Option<u32> {
    ldd_output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .find_map(|library| {
            let version = library
                .strip_prefix("libLLVM.so.")
                .or_else(|| library.strip_prefix("libLLVM-"))?;
            leading_number(version)
        })
}

/// Whether the `/proc/mounts` text shows a bpf filesystem mounted at
/// `mount_point`.
pub fn bpffs_mounted(mounts: &str, mount_point: &str) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(mount_point) && fields.next() == Some("bpf")
    })
}

/// The effective user id from `/proc/self/status`, whose `Uid:` line lists the
/// real, effective, saved and filesystem ids in that order.
pub fn effective_uid(status: &str) -> Option<u32> {
    let ids = status.lines().find_map(|line| line.strip_prefix("Uid:"))?;
    ids.split_whitespace().nth(1)?.parse().ok()
}

/// The run count and seconds from libFuzzer's last line,
/// `Done RUNS runs in SECONDS second(s)`.
pub fn fuzz_runs(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("Done ")?;
    let (runs, rest) = rest.split_once(" runs in ")?;
    let seconds = rest.strip_suffix(" second(s)")?;
    Some((runs.parse().ok()?, seconds.parse().ok()?))
}

/// Whether a libFuzzer line only reports progress: `#N` and a new input
/// (`NEW`), a smaller one (`REDUCE`) or a heartbeat (`pulse`).
pub fn is_fuzz_progress(line: &str) -> bool {
    let Some(rest) = line.strip_prefix('#') else {
        return false;
    };
    let mut words = rest.split_whitespace();
    let counted = words
        .next()
        .is_some_and(|count| count.bytes().all(|byte| byte.is_ascii_digit()));
    counted && matches!(words.next(), Some("NEW" | "REDUCE" | "pulse"))
}

/// The setups the load test prints a row for, in its order.
pub const LOADTEST_SETUPS: [&str; 5] =
    ["no-filter", "floor", "gatekeeper", "nftables", "xdp-filter"];

/// Cells in each row of the load test's table, the setup's name included.
const LOADTEST_COLUMNS: usize = 10;

/// What is wrong with the Markdown table `gatekeeper-loadtest` prints;
/// empty when it is complete.
///
/// Complete means: one row for each of [`LOADTEST_SETUPS`], in order, with
/// ten cells; the frame rates and the ratio to the floor (cells 2 to 5)
/// are numbers; the program's ns/frame and its ratio (6 and 7) are numbers
/// except for nftables, which runs no program, where they are `n/a`; the
/// client's cells (8 to 10) are numbers or `n/a` (no connection made). Only
/// the xdp-filter row may instead say `skipped: WHY` in its second cell,
/// since the load test reports a missing xdp-filter rather than failing.
/// Nothing here judges a value: the check is that the figures are there.
pub fn loadtest_table_problems(output: &str) -> Vec<String> {
    let rows: Vec<Vec<&str>> = output
        .lines()
        .filter_map(|line| line.trim().strip_prefix('|')?.strip_suffix('|'))
        .map(|inner| inner.split('|').map(str::trim).collect::<Vec<_>>())
        // The header and the alignment row.
        .filter(|cells| {
            cells
                .first()
                .is_some_and(|name| *name != "setup" && !name.starts_with("---"))
        })
        .collect();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|cells| cells.first().copied())
        .collect();
    if names != LOADTEST_SETUPS {
        return vec![format!(
            "the table's rows are {names:?}, not {LOADTEST_SETUPS:?}"
        )];
    }

    let mut problems = Vec::new();
    for cells in &rows {
        let name = cells[0];
        if name == "xdp-filter"
            && cells
                .get(1)
                .is_some_and(|cell| cell.starts_with("skipped:"))
        {
            continue;
        }
        if cells.len() != LOADTEST_COLUMNS {
            problems.push(format!(
                "{name}: {} cells instead of {LOADTEST_COLUMNS}",
                cells.len()
            ));
            continue;
        }
        for (index, cell) in cells.iter().enumerate().skip(1) {
            let column = index + 1;
            let number = cell.parse::<f64>().is_ok_and(f64::is_finite);
            let fits = match column {
                2..=5 => number,
                6 | 7 if name == "nftables" => *cell == "n/a",
                6 | 7 => number,
                _ => number || *cell == "n/a",
            };
            if !fits {
                problems.push(format!("{name}: cell {column} is {cell:?}"));
            }
        }
    }
    problems
}

/// The number at the start of `text`, up to its first non-digit.
fn leading_number(text: &str) -> Option<u32> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    text[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fuzzers_run_count() {
        assert_eq!(
            fuzz_runs("Done 1234567 runs in 21 second(s)"),
            Some((1234567, 21))
        );
        assert_eq!(
            fuzz_runs("Done 1234567 runs in 21 second(s)\n"),
            Some((1234567, 21))
        );
        assert_eq!(
            fuzz_runs("#1234567\tDONE   cov: 1024 ft: 4096 corp: 300/20Kb"),
            None
        );
        assert_eq!(fuzz_runs("Done many runs in 21 second(s)"), None);
    }

    #[test]
    fn tells_progress_from_what_matters() {
        assert!(is_fuzz_progress(
            "#1234\tNEW    cov: 812 ft: 1790 corp: 90/4Kb"
        ));
        assert!(is_fuzz_progress(
            "#2048\tpulse  cov: 812 ft: 1790 corp: 90/4Kb"
        ));
        assert!(is_fuzz_progress(
            "#77\tREDUCE cov: 812 ft: 1790 corp: 90/4Kb"
        ));
        assert!(!is_fuzz_progress(
            "#2\tINITED cov: 812 ft: 1790 corp: 8/3Kb"
        ));
        assert!(!is_fuzz_progress(
            "#9\tDONE   cov: 812 ft: 1790 corp: 90/4Kb"
        ));
        assert!(!is_fuzz_progress(
            "==1234== ERROR: libFuzzer: deadly signal"
        ));
        assert!(!is_fuzz_progress("# a comment NEW"));
    }

    #[test]
    fn finds_the_undated_nightly() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n\
                    1.95.0-x86_64-unknown-linux-gnu\n";
        assert_eq!(
            nightly_toolchain(list),
            Some("nightly-x86_64-unknown-linux-gnu")
        );
        assert_eq!(nightly_toolchain("nightly (default)\n"), Some("nightly"));
    }

    #[test]
    fn ignores_dated_nightlies_and_other_channels() {
        let list = "stable-x86_64-unknown-linux-gnu (default)\n\
                    nightly-2025-01-01-x86_64-unknown-linux-gnu\n\
                    nightlyish-x86_64-unknown-linux-gnu\n";
        assert_eq!(nightly_toolchain(list), None);
        assert_eq!(nightly_toolchain("no installed toolchains\n"), None);
    }

    #[test]
    fn finds_an_installed_component_by_its_whole_name() {
        let list = "cargo-x86_64-unknown-linux-gnu\nrust-src\n\
                    rust-std-x86_64-unknown-linux-gnu\n";
        assert!(has_component(list, "rust-src"));
        assert!(!has_component(list, "rust-std"));
        assert!(!has_component("rust-src-extra\n", "rust-src"));
    }

    #[test]
    fn reads_the_llvm_major_from_rustc() {
        let version = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\n\
                       binary: rustc\n\
                       host: x86_64-unknown-linux-gnu\n\
                       release: 1.97.0-nightly\n\
                       LLVM version: 22.1.4\n";
        assert_eq!(rustc_llvm_major(version), Some(22));
        assert_eq!(rustc_llvm_major("LLVM version: 9\n"), Some(9));
    }

    #[test]
    fn rustc_without_an_llvm_line_has_no_major() {
        assert_eq!(rustc_llvm_major("rustc 1.97.0-nightly\n"), None);
        assert_eq!(rustc_llvm_major("LLVM version: unknown\n"), None);
    }

    #[test]
    fn reads_the_bpf_linker_version() {
        assert_eq!(bpf_linker_version("bpf-linker 0.13.0\n"), Some("0.13.0"));
        assert_eq!(bpf_linker_version("ld.lld 18.1.8\n"), None);
        assert_eq!(bpf_linker_version(""), None);
    }

    #[test]
    fn reads_the_llvm_major_from_ldd() {
        let ldd = "\tlinux-vdso.so.1 (0x00007ffd6b5f2000)\n\
                   \tlibLLVM.so.22.1 => /usr/lib/llvm-22/lib/libLLVM.so.22.1 (0x00007fe8)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fe8)\n";
        assert_eq!(ldd_llvm_major(ldd), Some(22));

        let older = "\tlibLLVM-14.so.1 => /lib/x86_64-linux-gnu/libLLVM-14.so.1 (0x0)\n";
        assert_eq!(ldd_llvm_major(older), Some(14));
    }

    #[test]
    fn ldd_without_libllvm_has_no_major() {
        let ldd = "\tlibz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x0)\n";
        assert_eq!(ldd_llvm_major(ldd), None);
        assert_eq!(ldd_llvm_major("\tnot a dynamic executable\n"), None);
    }

    #[test]
    fn finds_bpffs_only_at_its_mount_point() {
        let mounts = "sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0\n\
                      bpf /sys/fs/bpf bpf rw,nosuid,nodev,noexec,relatime,mode=700 0 0\n";
        assert!(bpffs_mounted(mounts, "/sys/fs/bpf"));

        let elsewhere = "bpf /mnt/bpf bpf rw,relatime 0 0\n\
                         tmpfs /sys/fs/bpf tmpfs rw 0 0\n";
        assert!(!bpffs_mounted(elsewhere, "/sys/fs/bpf"));
        assert!(!bpffs_mounted("", "/sys/fs/bpf"));
    }

    #[test]
    fn reads_the_effective_uid() {
        let status = "Name:\tcat\nUmask:\t0022\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t1000\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid("Name:\tcat\n"), None);
    }

    const LOADTEST_TABLE: &str = "\
-- floor: an empty XDP program
| setup | generated Mpps | seen Mpps | dropped Mpps | seen / floor | ns/frame | ns / floor | client ok % | connect p50 µs | connect p99 µs |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| no-filter | 0.524 | 0.424 | 0.000 | 0.36 | 50.9 | 0.99 | 92.3 | 196 | 369 |
| floor | 1.179 | 1.179 | 1.179 | 1.00 | 51.6 | 1.00 | 0.0 | n/a | n/a |
| gatekeeper | 0.842 | 0.822 | 0.740 | 0.70 | 163.6 | 3.17 | 83.3 | 178 | 209 |
| nftables | 0.518 | 0.518 | 0.466 | 0.44 | n/a | n/a | 100.0 | 122 | 179 |
| xdp-filter | 1.085 | 1.085 | 1.085 | 0.92 | 60.0 | 1.16 | 0.0 | n/a | n/a |
flood: TCP SYNs
";

    #[test]
    fn a_complete_load_test_table_has_no_problems() {
        assert_eq!(
            loadtest_table_problems(LOADTEST_TABLE),
            Vec::<String>::new()
        );
        let skipped = LOADTEST_TABLE.replace(
            "| xdp-filter | 1.085 | 1.085 | 1.085 | 0.92 | 60.0 | 1.16 | 0.0 | n/a | n/a |",
            "| xdp-filter | skipped: xdp-filter is not installed | - | - | - | - | - | - | - | - |",
        );
        assert_eq!(loadtest_table_problems(&skipped), Vec::<String>::new());
    }

    #[test]
    fn a_missing_or_extra_row_is_a_problem() {
        let without_nft: String = LOADTEST_TABLE
            .lines()
            .filter(|line| !line.starts_with("| nftables"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(loadtest_table_problems(&without_nft).len(), 1);
        let doubled = format!("{LOADTEST_TABLE}| floor | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 | 1 |\n");
        assert_eq!(loadtest_table_problems(&doubled).len(), 1);
        assert_eq!(loadtest_table_problems("").len(), 1);
    }

    #[test]
    fn a_figure_that_is_not_there_is_a_problem() {
        let cases = [
            // A frame rate missing.
            ("| floor | 1.179 | 1.179 |", "| floor | n/a | 1.179 |"),
            // gatekeeper runs a program: its ns/frame must be there.
            ("| 163.6 | 3.17 |", "| n/a | 3.17 |"),
            // nftables runs none: a figure there would be made up.
            ("| 0.44 | n/a | n/a |", "| 0.44 | 1.0 | n/a |"),
            // A cell gone.
            ("| 83.3 | 178 | 209 |", "| 83.3 | 178 |"),
            ("| 92.3 |", "| NaN |"),
        ];
        for (from, to) in cases {
            assert!(LOADTEST_TABLE.contains(from), "{from}");
            let broken = LOADTEST_TABLE.replace(from, to);
            assert_eq!(loadtest_table_problems(&broken).len(), 1, "{to}");
        }
        let skipped_gatekeeper = LOADTEST_TABLE.replace(
            "| gatekeeper | 0.842 |",
            "| gatekeeper | skipped: no reason |",
        );
        assert!(!loadtest_table_problems(&skipped_gatekeeper).is_empty());
    }
}
