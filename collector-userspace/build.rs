//! Embeds the kernel object built by `cargo xtask build-ebpf` into the binary.
//!
//! When it has not been built (a plain `cargo build` on a fresh clone) an empty object
//! is embedded instead and the loader says how to build it, so the userspace workspace
//! always builds on stable.
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let object = std::env::var_os("COLLECTOR_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            manifest.join("../collector-ebpf/target/bpfel-unknown-none/release/collector-ebpf")
        });
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("collector-ebpf.o");
    println!("cargo:rerun-if-env-changed=COLLECTOR_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    match std::fs::read(&object) {
        Ok(bytes) => std::fs::write(&out, bytes).unwrap(),
        Err(_) => {
            println!(
                "cargo:warning=kernel object {} not found: the binary will not load eBPF programs (run `cargo xtask build-ebpf` first)",
                object.display()
            );
            std::fs::write(&out, []).unwrap();
        }
    }
}
