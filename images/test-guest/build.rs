//! Links the guest at `LOAD_ADDRESS` with `link.ld`. Only the bare-metal
//! build (`target_os = "none"`) is linked this way; the host build of the
//! crate is a stub (so that `cargo test --workspace` and `cargo clippy
//! --workspace` on the host still work).

use std::env;
use std::path::PathBuf;

/// Where the guest runs: guest RAM starts at 0x4000_0000 (as on QEMU
/// `virt`), and a loader that follows the Linux arm64 boot protocol (the
/// VMM, QEMU's `-kernel`) puts the image at RAM base + `text_offset`
/// (0x8_0000, written into the image header in `src/boot.S`).
const LOAD_ADDRESS: u64 = 0x4008_0000;

fn main() {
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    let script = manifest.join("link.ld");
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    println!("cargo:rustc-link-arg-bins=--defsym=__load_address={LOAD_ADDRESS:#x}");
    // One flat image: no need for lld's default 64 KiB segment alignment.
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
}
