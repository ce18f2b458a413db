//! System descriptions at build time: find one (a shipped name or a
//! file), check it against the board and the images the build tool can
//! make (with the exact errors of `board_configs::system`), build those
//! images, and pack everything into the boot payload (`payload.rs`).

use std::path::{Path, PathBuf};
use std::process::Command;

use board_configs::system::{self, Limits};

use crate::payload::{self, Entry};
use crate::{HYP_TARGET, cargo_command, run_command, workspace_root};

/// The images the build tool knows how to make, by the names descriptions
/// use.
pub const IMAGES: &[&str] = &["linux", "initramfs", "test-guest"];

/// RAM the hypervisor and `init` keep for themselves on a board (kernel
/// objects, the page-info table, init's pool bookkeeping, the payload).
const RESERVED_RAM: u64 = 128 << 20;

/// What a board offers guests: cores and RAM (QEMU `virt` as the build
/// tool starts it, with 1 GiB; the Raspberry Pi 4 as QEMU models it).
fn limits(board: &str) -> Result<(u32, u64), String> {
    match board {
        "qemu-virt" => Ok((4, 1 << 30)),
        "rpi4" => Ok((4, 960 << 20)),
        other => Err(format!("no guest limits known for board `{other}`")),
    }
}

/// The text of the description `name`: a shipped one
/// (`board-configs/systems/<name>.sys`) or a file.
pub fn description(name: &str) -> Result<(String, String), String> {
    if let Some((found, text)) = system::shipped::ALL
        .iter()
        .find(|(shipped, _)| *shipped == name)
    {
        return Ok(((*found).to_owned(), (*text).to_owned()));
    }
    let path = Path::new(name);
    let text = std::fs::read_to_string(path).map_err(|error| {
        let known: Vec<&str> = system::shipped::ALL.iter().map(|(name, _)| *name).collect();
        format!(
            "no system description `{name}`: not a shipped one ({}) and not a readable file ({error})",
            known.join(", ")
        )
    })?;
    let stem = path.file_stem().map_or_else(
        || "custom".to_owned(),
        |stem| stem.to_string_lossy().into_owned(),
    );
    Ok((stem, text))
}

/// Checks `text` for `board`: parse, then validate against the board's
/// cores and RAM and the images the build tool makes. The description's
/// own `board` line names the board it was written for; another board
/// with the same guest-visible machine (every board here gives guests the
/// same `virt`-like machine) may run it.
pub fn check(text: &str, board: &str) -> Result<(), String> {
    let parsed = system::parse(text).map_err(|error| error.to_string())?;
    let (cores, ram_bytes) = limits(board)?;
    let limits = Limits {
        cores,
        ram_bytes: ram_bytes - RESERVED_RAM,
        images: IMAGES,
    };
    system::validate(&parsed, &limits).map_err(|error| error.to_string())?;
    Ok(())
}

/// Builds the payload for description `name` on `board`.
pub fn build_payload(name: &str, board: &str) -> Result<Vec<u8>, String> {
    let (found, text) = description(name)?;
    check(&text, board).map_err(|error| format!("system description `{found}`: {error}"))?;
    let parsed = system::parse(&text).map_err(|error| error.to_string())?;
    let mut entries = vec![Entry {
        name: "system".into(),
        data: text.clone().into_bytes(),
    }];
    let mut wanted: Vec<&str> = Vec::new();
    for guest in &parsed.guests {
        for image in std::iter::once(guest.kernel).chain(guest.initrd) {
            if !wanted.contains(&image) {
                wanted.push(image);
            }
        }
    }
    for image in wanted {
        let path = image_path(image)?;
        let data = std::fs::read(&path)
            .map_err(|error| format!("cannot read image {}: {error}", path.display()))?;
        println!(
            "xtask: payload entry `{image}`: {} ({} KiB)",
            path.display(),
            data.len() / 1024
        );
        entries.push(Entry {
            name: image.into(),
            data,
        });
    }
    payload::pack(&entries)
}

/// Makes image `name` and returns its file.
fn image_path(name: &str) -> Result<PathBuf, String> {
    match name {
        "linux" => Ok(crate::linux::build_initramfs()?.kernel),
        "initramfs" => Ok(crate::linux::build_initramfs()?.initramfs),
        "test-guest" => test_guest(),
        other => Err(format!(
            "unknown image `{other}` (the build tool makes: {})",
            IMAGES.join(", ")
        )),
    }
}

/// Builds the Rust test guest and turns it into a raw binary.
pub fn test_guest() -> Result<PathBuf, String> {
    let mut command = cargo_command();
    command.args([
        "build",
        "--release",
        "--target",
        HYP_TARGET,
        "-p",
        "test-guest",
    ]);
    run_command(&mut command)?;
    let root = workspace_root();
    let elf = root
        .join("target")
        .join(HYP_TARGET)
        .join("release")
        .join("test-guest");
    let directory = root.join("build/guests/test-guest");
    std::fs::create_dir_all(&directory)
        .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let binary = directory.join("test-guest.bin");
    run_command(
        Command::new(crate::image::objcopy()?)
            .args(["-O", "binary"])
            .arg(&elf)
            .arg(&binary),
    )?;
    Ok(binary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_descriptions_fit_every_board() {
        for (name, text) in system::shipped::ALL {
            for board in ["qemu-virt", "rpi4"] {
                assert_eq!(check(text, board), Ok(()), "{name} on {board}");
            }
        }
    }

    #[test]
    fn bad_descriptions_are_refused_with_the_exact_reason() {
        let too_many_cores =
            "board qemu-virt\nguest a\n    ram 16M\n    vcpus 5\n    kernel test-guest\n";
        assert_eq!(
            check(too_many_cores, "qemu-virt").unwrap_err(),
            "line 4: guest \"a\": 5 vCPUs but the board has 4 cores"
        );
        let unknown_image = "board qemu-virt\nguest a\n    ram 16M\n    kernel nothing\n";
        assert!(
            check(unknown_image, "qemu-virt")
                .unwrap_err()
                .contains("nothing"),
        );
        let too_much_ram = "board qemu-virt\nguest a\n    ram 1G\n    kernel test-guest\n";
        assert!(
            check(too_much_ram, "qemu-virt")
                .unwrap_err()
                .contains("RAM")
        );
        assert!(
            description("no-such-system")
                .unwrap_err()
                .contains("default, test-guest, vmm-crash, linux-bench, linux-smp")
        );
    }
}
