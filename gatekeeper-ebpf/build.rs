//! Rebuilds the program when the linker changes: an object linked by an old
//! bpf-linker must not outlive an upgrade of it.

fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
