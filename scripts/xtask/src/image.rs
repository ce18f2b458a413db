//! Builds `hyp` for a board and packs the boot image: a flat binary that
//! starts with an arm64 `Image` header, so QEMU's `-kernel` and the
//! Raspberry Pi firmware (`kernel8.img`) both load it and enter it at EL2
//! with the device tree address in `x0`.

use std::path::PathBuf;
use std::process::Command;

use crate::{HYP_TARGET, cargo_command, run_command, workspace_root};

/// A built hypervisor.
#[derive(Debug)]
pub struct Built {
    /// The ELF, with symbols (for `objdump`, `gdb`, `addr2line`).
    #[allow(
        dead_code,
        reason = "printed by `build` callers that want it; kept for debugging"
    )]
    pub elf: PathBuf,
    /// The boot image.
    pub image: PathBuf,
}

/// Builds `hyp` for `board` with cargo `features` into
/// `build/images/<board>[+features]/`.
pub fn build(board: &str, features: &[String]) -> Result<Built, String> {
    let spec = board_configs::find(board).ok_or_else(|| format!("unknown board `{board}`"))?;
    let root = workspace_root();
    // The root task first: hyp embeds it. Features `init/<name>` are the
    // root task's; the others are hyp's.
    let (init_features, hyp_features): (Vec<&String>, Vec<&String>) = features
        .iter()
        .partition(|feature| feature.starts_with("init/"));
    let mut init = cargo_command();
    init.args(["build", "--release", "--target", HYP_TARGET, "-p", "init"]);
    if !init_features.is_empty() {
        let names: Vec<&str> = init_features
            .iter()
            .map(|feature| feature.trim_start_matches("init/"))
            .collect();
        init.args(["--features", &names.join(",")]);
    }
    run_command(&mut init)?;
    let built_init = root
        .join("target")
        .join(HYP_TARGET)
        .join("release")
        .join("init");
    // hyp embeds the root task from a path of this configuration's own:
    // cargo may hand back an earlier build of init (another feature set)
    // with its old modification time, which `rerun-if-changed` on one
    // shared path would not notice, and hyp would embed a stale init.
    let mut configuration = board.to_owned();
    for feature in features {
        configuration.push('+');
        configuration.push_str(&feature.replace('/', "-"));
    }
    let init_directory = root.join("build").join("init").join(&configuration);
    std::fs::create_dir_all(&init_directory)
        .map_err(|error| format!("cannot create {}: {error}", init_directory.display()))?;
    let init_elf = init_directory.join("init.elf");
    let fresh = std::fs::read(&built_init)
        .map_err(|error| format!("cannot read {}: {error}", built_init.display()))?;
    if std::fs::read(&init_elf).ok().as_deref() != Some(fresh.as_slice()) {
        std::fs::write(&init_elf, &fresh)
            .map_err(|error| format!("cannot write {}: {error}", init_elf.display()))?;
    }

    let mut command = cargo_command();
    command
        .args(["build", "--release", "--target", HYP_TARGET, "-p", "hyp"])
        .env("HYP_BOARD", board)
        .env("HYP_INIT_ELF", &init_elf);
    if !hyp_features.is_empty() {
        let names: Vec<&str> = hyp_features
            .iter()
            .map(|feature| feature.as_str())
            .collect();
        command.args(["--features", &names.join(",")]);
    }
    run_command(&mut command)?;

    let elf_built = root
        .join("target")
        .join(HYP_TARGET)
        .join("release")
        .join("hyp");
    let mut name = board.to_owned();
    for feature in features {
        name.push('+');
        name.push_str(feature);
    }
    let directory = root.join("build").join("images").join(name);
    std::fs::create_dir_all(&directory)
        .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let elf = directory.join("hyp.elf");
    let image = directory.join("hyp.img");
    std::fs::copy(&elf_built, &elf)
        .map_err(|error| format!("cannot copy {}: {error}", elf_built.display()))?;
    run_command(
        Command::new(objcopy()?)
            .args(["-O", "binary"])
            .arg(&elf)
            .arg(&image),
    )?;

    let bytes = std::fs::read(&image)
        .map_err(|error| format!("cannot read {}: {error}", image.display()))?;
    check_header(&bytes, spec.load_address - spec.ram_base)
        .map_err(|problem| format!("{}: {problem}", image.display()))?;
    Ok(Built { elf, image })
}

/// Builds `hyp` for `board` and packs the system description `system`
/// with the guest images it names after it (`system.rs`, `payload.rs`):
/// `build/images/<board>[+features]/hyp+<system>.img`.
pub fn build_with_system(board: &str, features: &[String], system: &str) -> Result<Built, String> {
    let spec = board_configs::find(board).ok_or_else(|| format!("unknown board `{board}`"))?;
    let built = build(board, features)?;
    let payload = crate::system::build_payload(system, board)?;
    let mut bytes = std::fs::read(&built.image)
        .map_err(|error| format!("cannot read {}: {error}", built.image.display()))?;
    crate::payload::append(&mut bytes, &payload)?;
    check_header(&bytes, spec.load_address - spec.ram_base)?;
    let stem = std::path::Path::new(system).file_stem().map_or_else(
        || "system".to_owned(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    let image = built.image.with_file_name(format!("hyp+{stem}.img"));
    std::fs::write(&image, &bytes)
        .map_err(|error| format!("cannot write {}: {error}", image.display()))?;
    println!(
        "xtask: boot image with system `{system}`: {} ({} MiB)",
        image.display(),
        bytes.len() >> 20
    );
    Ok(Built {
        elf: built.elf,
        image,
    })
}

/// Finds `llvm-objcopy` of the `llvm-tools` component of the pinned toolchain.
pub fn objcopy() -> Result<PathBuf, String> {
    let output = |arguments: &[&str]| -> Result<String, String> {
        let result = Command::new("rustc")
            .args(arguments)
            .current_dir(workspace_root())
            .output()
            .map_err(|error| format!("cannot run rustc: {error}"))?;
        Ok(String::from_utf8_lossy(&result.stdout).trim().to_owned())
    };
    let sysroot = output(&["--print", "sysroot"])?;
    let version = output(&["-vV"])?;
    let host = version
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .ok_or("cannot tell the host triple from `rustc -vV`")?;
    let path = PathBuf::from(sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-objcopy");
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} is missing: run scripts/setup (rustup component llvm-tools)",
            path.display()
        ))
    }
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let field = bytes.get(offset..offset + 8)?;
    Some(u64::from_le_bytes(field.try_into().ok()?))
}

/// Checks that `bytes` start with a valid arm64 `Image` header for an image
/// loaded at `text_offset` past a 2 MiB aligned RAM base.
pub fn check_header(bytes: &[u8], text_offset: u64) -> Result<(), String> {
    const MAGIC: &[u8] = b"ARM\x64";
    if bytes.get(0x38..0x3c) != Some(MAGIC) {
        return Err("no arm64 Image header (magic \"ARM\\x64\" missing at offset 0x38)".into());
    }
    let header_offset = read_u64(bytes, 8).ok_or("truncated header")?;
    let image_size = read_u64(bytes, 16).ok_or("truncated header")?;
    let flags = read_u64(bytes, 24).ok_or("truncated header")?;
    if header_offset != text_offset {
        return Err(format!(
            "text_offset is {header_offset:#x}, the board needs {text_offset:#x}"
        ));
    }
    if image_size < bytes.len() as u64 || image_size % 4096 != 0 {
        return Err(format!(
            "image_size {image_size:#x} must cover the file ({:#x} bytes) and be page aligned",
            bytes.len()
        ));
    }
    if flags & 0b111 != 0b010 {
        return Err(format!(
            "flags {flags:#x}: expected little endian, 4 KiB pages"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; 0x1000];
        bytes[8..16].copy_from_slice(&text_offset.to_le_bytes());
        bytes[16..24].copy_from_slice(&image_size.to_le_bytes());
        bytes[24..32].copy_from_slice(&flags.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
        bytes
    }

    #[test]
    fn accepts_a_good_header() {
        assert_eq!(check_header(&header(0x80000, 0x2000, 2), 0x80000), Ok(()));
    }

    #[test]
    fn rejects_bad_headers_precisely() {
        assert_eq!(
            check_header(&header(0, 0x2000, 2), 0x80000).unwrap_err(),
            "text_offset is 0x0, the board needs 0x80000"
        );
        assert!(
            check_header(&header(0x80000, 0x800, 2), 0x80000)
                .unwrap_err()
                .contains("image_size")
        );
        assert!(
            check_header(&header(0x80000, 0x2000, 3), 0x80000)
                .unwrap_err()
                .contains("flags")
        );
        assert!(check_header(&[0; 16], 0).unwrap_err().contains("magic"));
    }
}
