//! Links `hyp` for one board: the board (environment variable `HYP_BOARD`,
//! set by `cargo xtask build --board ...`, default `qemu-virt`) says where the
//! boot loader places the image, and the linker script puts it there.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=HYP_BOARD");
    println!("cargo:rerun-if-changed=src/arch/link.ld.in");
    let name = env::var("HYP_BOARD").unwrap_or_else(|_| "qemu-virt".to_owned());
    let Some(board) = board_configs::find(&name) else {
        let known: Vec<&str> = board_configs::BOARDS
            .iter()
            .map(|board| board.name)
            .collect();
        eprintln!(
            "error: HYP_BOARD={name} is not a known board; known boards: {}",
            known.join(", ")
        );
        std::process::exit(1);
    };
    println!("cargo:rustc-env=HYP_BOARD={}", board.name);
    embed_root_task();

    // Only the bare-metal build links with the kernel's script; the host
    // build of `hyp` is a stub that says how to build the real thing.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("none") {
        return;
    }
    let template = match fs::read_to_string("src/arch/link.ld.in") {
        Ok(text) => text,
        Err(error) => {
            eprintln!("error: cannot read src/arch/link.ld.in: {error}");
            std::process::exit(1);
        }
    };
    let script = template
        .replace("@LOAD_ADDRESS@", &format!("{:#x}", board.load_address))
        .replace(
            "@TEXT_OFFSET@",
            &format!("{:#x}", board.load_address - board.ram_base),
        );
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| ".".to_owned()));
    let path = out.join("link.ld");
    if let Err(error) = fs::write(&path, script) {
        eprintln!("error: cannot write {}: {error}", path.display());
        std::process::exit(1);
    }
    println!("cargo:rustc-link-arg-bins=-T{}", path.display());
}

/// Copies the root task's ELF (environment variable `HYP_INIT_ELF`, set by
/// `cargo xtask build`) to `OUT_DIR/init.elf` for `include_bytes!`; without
/// one, an empty file (the kernel then says it has no root task).
fn embed_root_task() {
    println!("cargo:rerun-if-env-changed=HYP_INIT_ELF");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_else(|_| ".".to_owned()));
    let destination = out.join("init.elf");
    let bytes = match env::var("HYP_INIT_ELF") {
        Ok(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={path}");
            match fs::read(&path) {
                Ok(bytes) => bytes,
                Err(error) => {
                    eprintln!("error: HYP_INIT_ELF={path}: {error}");
                    std::process::exit(1);
                }
            }
        }
        _ => Vec::new(),
    };
    if let Err(error) = fs::write(&destination, bytes) {
        eprintln!("error: cannot write {}: {error}", destination.display());
        std::process::exit(1);
    }
}
