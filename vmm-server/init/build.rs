//! Links `init` where the kernel loads the root task: the linker script
//! puts the image at `hyp_abi::user_layout::IMAGE_BASE` (taken from
//! `hyp-abi`, so the address is written once) and checks that it ends
//! before `IMAGE_LIMIT`. Only the bare-metal build is linked this way; the
//! host build of `init` is a stub.

use std::env;
use std::fs;
use std::path::PathBuf;

use hyp_abi::user_layout::{IMAGE_BASE, IMAGE_LIMIT};

fn main() {
    println!("cargo:rerun-if-changed=link.ld.in");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let template = match fs::read_to_string("link.ld.in") {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: cannot read link.ld.in: {error}");
            std::process::exit(1);
        }
    };
    let script = template
        .replace("@IMAGE_BASE@", &format!("{IMAGE_BASE:#x}"))
        .replace("@IMAGE_LIMIT@", &format!("{IMAGE_LIMIT:#x}"));
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| ".".to_owned()));
    let path = out.join("link.ld");
    if let Err(error) = fs::write(&path, script) {
        eprintln!("error: cannot write {}: {error}", path.display());
        std::process::exit(1);
    }
    println!("cargo:rustc-link-arg-bins=-T{}", path.display());
    // The kernel maps 4 KiB pages: align segments to that, not to lld's
    // default of 64 KiB for AArch64 (which only pads the file).
    println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
}
