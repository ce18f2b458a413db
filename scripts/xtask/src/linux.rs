//! The Linux guest: Debian's arm64 kernel with a busybox initramfs, and
//! `cargo xtask linux-bare`, which boots them without the hypervisor.
//!
//! - [`build_initramfs`] writes `build/guests/linux/initramfs.cpio` (an
//!   uncompressed newc archive, written by [`cpio`]) and copies the kernel to
//!   `build/guests/linux/Image`, from what `scripts/fetch-debian` unpacked
//!   into `build/debian/root/`. The archive is byte-identical across builds.
//! - `linux-bare [--gic 2|3]` boots them on QEMU `virt` at EL1, types a few
//!   commands at the guest's shell and powers it off: it checks the
//!   initramfs independently of the hypervisor.
//! - `linux-bare --bench` is the reference measurement: the instructions
//!   from power-on to a `poweroff -f` run first thing by `/init`, under
//!   `-icount shift=0` (see [`bench`] and `docs/linux-guest.md`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::systest::{Running, snapshot, start_recording_with_input, stop};
use crate::workspace_root;

/// Where the guest's files are written, under the workspace root.
pub const GUEST_DIR: &str = "build/guests/linux";
/// Where `scripts/fetch-debian` unpacks Debian's packages.
const DEBIAN_ROOT: &str = "build/debian/root";

/// The line `/init` prints first.
pub const REACHED_INIT: &str = "guest-init: reached /init";
/// The line `/init` prints just before it starts the shell.
pub const SHELL_READY: &str = "guest-init: shell ready";
/// The kernel argument that makes `/init` power off at once.
pub const BENCH_POWEROFF: &str = "bench-poweroff";

/// The busybox applets linked into `/bin`: those `/init` runs, those the
/// `linux-bare` test types, and a few for a person at the shell.
const APPLETS: &[&str] = &[
    "cat", "dmesg", "ls", "mount", "poweroff", "setsid", "sh", "uname",
];
/// Started through `setsid` so that the shell gets the console as its
/// controlling terminal (job control, Ctrl-C); optional.
const CTTYHACK: &str = "cttyhack";

/// The files the guest boots from.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The kernel, a raw arm64 `Image`.
    pub kernel: PathBuf,
    /// The initramfs, an uncompressed newc cpio archive.
    pub initramfs: PathBuf,
}

/// Writes `build/guests/linux/initramfs.cpio` and copies the kernel to
/// `build/guests/linux/Image`. Files whose contents did not change are not
/// rewritten.
pub fn build_initramfs() -> Result<Guest, String> {
    build_initramfs_in(&workspace_root())
}

/// [`build_initramfs`] for the workspace at `root`.
fn build_initramfs_in(root: &Path) -> Result<Guest, String> {
    let debian = root.join(DEBIAN_ROOT);
    if !debian.is_dir() {
        return Err(format!(
            "{} is missing: run scripts/fetch-debian first (it downloads Debian's arm64 \
             kernel and busybox-static and unpacks them there)",
            debian.display()
        ));
    }
    let kernel = find_kernel(&debian)?;
    let busybox_path = debian.join("bin/busybox");
    let busybox = std::fs::read(&busybox_path).map_err(|error| {
        format!(
            "cannot read {} ({error}); run scripts/fetch-debian again (remove build/debian/ first)",
            busybox_path.display()
        )
    })?;
    let missing: Vec<&str> = APPLETS
        .iter()
        .copied()
        .filter(|applet| !has_applet(&busybox, applet))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} has no applet(s) {missing:?}, which the initramfs needs",
            busybox_path.display()
        ));
    }
    let cttyhack = has_applet(&busybox, CTTYHACK);

    let archive = cpio::write_newc(&initramfs_entries(busybox, cttyhack))?;
    let out = root.join(GUEST_DIR);
    std::fs::create_dir_all(&out)
        .map_err(|error| format!("cannot create {}: {error}", out.display()))?;
    let guest = Guest {
        kernel: out.join("Image"),
        initramfs: out.join("initramfs.cpio"),
    };
    write_if_changed(&guest.initramfs, &archive)?;
    let image = std::fs::read(&kernel)
        .map_err(|error| format!("cannot read {}: {error}", kernel.display()))?;
    write_if_changed(&guest.kernel, &image)?;
    println!(
        "xtask: Linux guest: {} ({} KiB, from {}), {} ({} KiB)",
        guest.kernel.display(),
        image.len() / 1024,
        kernel.display(),
        guest.initramfs.display(),
        archive.len() / 1024
    );
    Ok(guest)
}

/// The newest `boot/vmlinuz-*` under Debian's root. Debian's arm64
/// `vmlinuz` is already a raw, uncompressed `Image`.
fn find_kernel(debian: &Path) -> Result<PathBuf, String> {
    let boot = debian.join("boot");
    let entries = std::fs::read_dir(&boot).map_err(|error| {
        format!(
            "cannot list {} ({error}); run scripts/fetch-debian",
            boot.display()
        )
    })?;
    let mut kernels: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("vmlinuz-"))
        .map(|entry| entry.path())
        .collect();
    kernels.sort();
    let kernel = kernels.pop().ok_or_else(|| {
        format!(
            "no vmlinuz-* in {}; run scripts/fetch-debian",
            boot.display()
        )
    })?;
    // An arm64 Image has "ARM\x64" at offset 56; a compressed vmlinuz does not.
    let mut header = Vec::with_capacity(64);
    std::fs::File::open(&kernel)
        .and_then(|file| file.take(64).read_to_end(&mut header))
        .map_err(|error| format!("cannot read {}: {error}", kernel.display()))?;
    if header.get(56..60) != Some(b"ARM\x64".as_slice()) {
        return Err(format!(
            "{} is not a raw arm64 Image (no ARM\\x64 magic at offset 56)",
            kernel.display()
        ));
    }
    Ok(kernel)
}

/// Whether the busybox binary `busybox` has the applet `name`: its applet
/// names are one block of NUL-terminated strings.
fn has_applet(busybox: &[u8], name: &str) -> bool {
    let mut needle = Vec::with_capacity(name.len() + 2);
    needle.push(0);
    needle.extend_from_slice(name.as_bytes());
    needle.push(0);
    busybox
        .windows(needle.len())
        .any(|window| window == needle.as_slice())
}

/// The `/init` script. `cttyhack` says whether busybox has that applet.
fn init_script(cttyhack: bool) -> String {
    let shell = if cttyhack {
        "# cttyhack reopens the console's real tty (ttyAMA0), which setsid's new\n\
         # session then has as its controlling terminal: job control and Ctrl-C work.\n\
         exec setsid cttyhack sh"
    } else {
        "# This busybox has no cttyhack: a shell without job control.\n\
         exec sh"
    };
    format!(
        "#!/bin/sh
# /init of the Linux guest's initramfs, written by `cargo xtask`
# (scripts/xtask/src/linux.rs). The kernel starts it with the console
# (/dev/console, a node in the archive) as stdin, stdout and stderr.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo '{REACHED_INIT}'
# `cargo xtask linux-bare --bench` measures the boot up to here.
read -r cmdline < /proc/cmdline
case \" $cmdline \" in
*' {BENCH_POWEROFF} '*) poweroff -f ;;
esac
# The virtio modules will be loaded here (they are not built in): copy
# virtio_mmio, virtio_blk, virtio_console, failover, net_failover and
# virtio_net from lib/modules/ into the archive and insmod them in that
# order.
echo '{SHELL_READY}'
{shell}
"
    )
}

/// Everything in the initramfs.
fn initramfs_entries(busybox: Vec<u8>, cttyhack: bool) -> Vec<cpio::Entry> {
    use cpio::Entry;
    let mut entries = vec![
        Entry::directory("bin", 0o755),
        Entry::directory("dev", 0o755),
        Entry::directory("proc", 0o755),
        Entry::directory("sys", 0o755),
        Entry::directory("tmp", 0o1777),
        // The kernel opens /dev/console before it runs /init; devtmpfs is
        // not mounted by then.
        Entry::char_device("dev/console", 0o600, 5, 1),
        Entry::file("bin/busybox", 0o755, busybox),
        Entry::file("init", 0o755, init_script(cttyhack).into_bytes()),
    ];
    let mut applets: Vec<&str> = APPLETS.to_vec();
    if cttyhack {
        applets.push(CTTYHACK);
    }
    for applet in applets {
        entries.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    entries
}

/// Writes `bytes` to `path` unless it already holds exactly them.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|error| format!("cannot write {}: {error}", path.display()))
}

/// A writer of "newc" cpio archives (the format of `cpio -H newc`, which
/// the kernel unpacks into its initial rootfs).
///
/// Each member is a 110-byte ASCII header (`070701` and 13 fields of 8 hex
/// digits), its NUL-terminated name padded to a multiple of 4 bytes
/// (counting the header), then its data padded to a multiple of 4. A member
/// named `TRAILER!!!` ends the archive.
pub mod cpio {
    /// `S_IFDIR`, `S_IFREG`, `S_IFLNK` and `S_IFCHR` of `st_mode`.
    const DIRECTORY: u32 = 0o040_000;
    const REGULAR: u32 = 0o100_000;
    const SYMLINK: u32 = 0o120_000;
    const CHAR_DEVICE: u32 = 0o020_000;
    /// The magic number of the newc format (no checksums).
    const MAGIC: &str = "070701";
    const TRAILER: &str = "TRAILER!!!";
    /// The length of a header.
    pub const HEADER_LEN: usize = 110;

    /// What one member is.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Kind {
        Directory,
        File(Vec<u8>),
        /// A symbolic link to the target.
        Symlink(String),
        CharDevice {
            major: u32,
            minor: u32,
        },
    }

    /// One member: a path relative to the root (no leading `/`), the
    /// permission bits and what it is. Owner root, time 0.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Entry {
        pub path: String,
        pub permissions: u32,
        pub kind: Kind,
    }

    impl Entry {
        pub fn directory(path: &str, permissions: u32) -> Entry {
            Entry {
                path: path.into(),
                permissions,
                kind: Kind::Directory,
            }
        }

        pub fn file(path: &str, permissions: u32, data: Vec<u8>) -> Entry {
            Entry {
                path: path.into(),
                permissions,
                kind: Kind::File(data),
            }
        }

        pub fn symlink(path: &str, target: &str) -> Entry {
            Entry {
                path: path.into(),
                permissions: 0o777,
                kind: Kind::Symlink(target.into()),
            }
        }

        pub fn char_device(path: &str, permissions: u32, major: u32, minor: u32) -> Entry {
            Entry {
                path: path.into(),
                permissions,
                kind: Kind::CharDevice { major, minor },
            }
        }

        fn mode(&self) -> u32 {
            let kind = match self.kind {
                Kind::Directory => DIRECTORY,
                Kind::File(_) => REGULAR,
                Kind::Symlink(_) => SYMLINK,
                Kind::CharDevice { .. } => CHAR_DEVICE,
            };
            kind | (self.permissions & 0o7777)
        }

        fn data(&self) -> &[u8] {
            match &self.kind {
                Kind::File(data) => data,
                Kind::Symlink(target) => target.as_bytes(),
                Kind::Directory | Kind::CharDevice { .. } => &[],
            }
        }
    }

    /// The archive of `entries`, sorted by path (so every directory comes
    /// before what it holds), with inode numbers 1, 2, ... in that order,
    /// uid, gid and mtime 0: the same entries always give the same bytes.
    /// Fails on an empty, absolute or duplicate path, a member bigger than
    /// the format allows (4 GiB), or a path whose parent is not a
    /// directory in the archive.
    pub fn write_newc(entries: &[Entry]) -> Result<Vec<u8>, String> {
        let mut sorted: Vec<&Entry> = entries.iter().collect();
        sorted.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in sorted.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(format!("cpio: `{}` is in the archive twice", pair[0].path));
            }
        }
        let mut out = Vec::new();
        for (index, entry) in sorted.iter().enumerate() {
            let path = entry.path.as_str();
            if path.is_empty() || path.starts_with('/') || path.contains('\0') {
                return Err(format!("cpio: bad path `{path}` (relative and not empty)"));
            }
            if let Some((parent, _)) = path.rsplit_once('/') {
                let is_directory = sorted
                    .iter()
                    .any(|other| other.path == parent && other.kind == Kind::Directory);
                if !is_directory {
                    return Err(format!(
                        "cpio: `{path}` is in `{parent}`, which is no directory of the archive"
                    ));
                }
            }
            let (major, minor) = match entry.kind {
                Kind::CharDevice { major, minor } => (major, minor),
                _ => (0, 0),
            };
            let inode = u32::try_from(index + 1)
                .map_err(|_| "cpio: more than 4 billion members".to_owned())?;
            let links = if entry.kind == Kind::Directory { 2 } else { 1 };
            member(
                &mut out,
                path,
                inode,
                entry.mode(),
                links,
                (major, minor),
                entry.data(),
            )?;
        }
        member(&mut out, TRAILER, 0, 0, 1, (0, 0), &[])?;
        Ok(out)
    }

    /// Appends one member.
    fn member(
        out: &mut Vec<u8>,
        name: &str,
        inode: u32,
        mode: u32,
        links: u32,
        (rdev_major, rdev_minor): (u32, u32),
        data: &[u8],
    ) -> Result<(), String> {
        let size = u32::try_from(data.len())
            .map_err(|_| format!("cpio: `{name}` is bigger than 4 GiB"))?;
        let name_size = u32::try_from(name.len() + 1)
            .map_err(|_| format!("cpio: the name `{name}` is too long"))?;
        // c_ino, c_mode, c_uid, c_gid, c_nlink, c_mtime, c_filesize, c_devmajor,
        // c_devminor, c_rdevmajor, c_rdevminor, c_namesize, c_check.
        let fields: [u32; 13] = [
            inode, mode, 0, 0, links, 0, size, 0, 0, rdev_major, rdev_minor, name_size, 0,
        ];
        let start = out.len();
        out.extend_from_slice(MAGIC.as_bytes());
        for field in fields {
            out.extend_from_slice(format!("{field:08X}").as_bytes());
        }
        debug_assert_eq!(out.len() - start, HEADER_LEN);
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        pad(out);
        out.extend_from_slice(data);
        pad(out);
        Ok(())
    }

    /// Pads `out` with NULs to a multiple of 4 bytes (every member starts
    /// aligned, so the archive's length is the offset that counts).
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
}

/// How long a `linux-bare` run may take.
const TIMEOUT: Duration = Duration::from_secs(120);
/// How many console lines a failure report shows.
const REPORT_LINES: usize = 40;
/// The RAM of a bare boot (`-m`): the reference figure's.
pub const BARE_MEMORY: &str = "512M";

/// Options of `linux-bare`.
#[derive(Debug, PartialEq, Eq)]
struct BareOptions {
    gic: u8,
    bench: bool,
}

impl BareOptions {
    fn parse(arguments: &[String]) -> Result<BareOptions, String> {
        let mut options = BareOptions {
            gic: 2,
            bench: false,
        };
        let mut iterator = arguments.iter();
        while let Some(flag) = iterator.next() {
            match flag.as_str() {
                "--gic" => {
                    let text = iterator
                        .next()
                        .ok_or_else(|| "option --gic needs a value".to_owned())?;
                    options.gic = match text.as_str() {
                        "2" => 2,
                        "3" => 3,
                        _ => return Err(format!("--gic takes 2 or 3, not `{text}`")),
                    };
                }
                "--bench" => options.bench = true,
                other => {
                    return Err(format!(
                        "unknown option `{other}` (usage: cargo xtask linux-bare [--gic 2|3] [--bench])"
                    ));
                }
            }
        }
        Ok(options)
    }
}

/// `cargo xtask linux-bare [--gic 2|3] [--bench]`.
pub fn run_bare(arguments: &[String]) -> Result<(), String> {
    let options = BareOptions::parse(arguments)?;
    let guest = build_initramfs()?;
    if options.bench {
        bench::run(&guest, options.gic, BARE_MEMORY).map(|_| ())
    } else {
        shell_test(&guest, options.gic)
    }
}

/// The QEMU command that boots `guest` bare (at EL1) on `virt` with
/// `gic_version` and `memory` of RAM (`-m`): `machine_options` are
/// appended to `-M virt,...`, `kernel_arguments` to the command line. The
/// console (and QEMU's monitor, behind Ctrl-A) is on stdio.
pub fn bare_command(
    guest: &Guest,
    gic_version: u8,
    memory: &str,
    machine_options: &str,
    kernel_arguments: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new("qemu-system-aarch64");
    command
        .arg("-M")
        .arg(format!("virt,gic-version={gic_version}{machine_options}"))
        .args(["-cpu", "cortex-a72", "-m", memory, "-nographic"])
        // No default network card (it wants a boot ROM QEMU lacks here).
        .args(["-nic", "none"])
        .arg("-kernel")
        .arg(&guest.kernel)
        .arg("-initrd")
        .arg(&guest.initramfs)
        .arg("-append")
        .arg(format!(
            "console=ttyAMA0 earlycon nokaslr{kernel_arguments}"
        ));
    command
}

/// A QEMU run whose console is recorded and typed into (`linux-bare` and
/// `bench-linux`).
pub(crate) struct Console {
    child: Child,
    stdin: Option<ChildStdin>,
    transcript: Arc<Mutex<Vec<u8>>>,
    readers: [Option<thread::JoinHandle<()>>; 2],
    /// When QEMU started.
    pub(crate) started: Instant,
    /// The command whose failures this run reports (`linux-bare`, ...).
    program: &'static str,
}

impl Console {
    /// Starts `command` for `program` (which names it in failure reports).
    pub(crate) fn start(
        command: std::process::Command,
        program: &'static str,
    ) -> Result<Console, String> {
        println!("xtask: {command:?}");
        let Running {
            mut child,
            transcript,
            readers,
        } = start_recording_with_input(command)
            .map_err(|error| format!("cannot start qemu-system-aarch64: {error}"))?;
        let stdin = child.stdin.take();
        Ok(Console {
            child,
            stdin,
            transcript,
            readers,
            started: Instant::now(),
            program,
        })
    }

    /// The console output so far (carriage returns removed).
    pub(crate) fn text(&self) -> String {
        snapshot(&self.transcript)
    }

    /// Waits until `found` finds something in the output from byte `from`
    /// on and returns what it returns. Fails, saying `waiting_for`, if
    /// QEMU exits or the run's time is up.
    fn wait_for<T>(
        &mut self,
        from: usize,
        waiting_for: &str,
        found: impl Fn(&str) -> Option<T>,
    ) -> Result<T, String> {
        loop {
            let text = self.text();
            if let Some(result) = found(&text[text.floor_char_boundary(from)..]) {
                return Ok(result);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(&format!(
                    "QEMU exited ({status}) while waiting for {waiting_for}"
                )));
            }
            if self.started.elapsed() > TIMEOUT {
                return Err(
                    self.failure(&format!("no {waiting_for} within {} s", TIMEOUT.as_secs()))
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `line` and a newline at the guest's console.
    fn type_line(&mut self, line: &str) -> Result<(), String> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| "QEMU's stdin is not a pipe".to_owned())?;
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .map_err(|error| format!("cannot type `{line}` at the console: {error}"))
    }

    /// Runs `command` at the guest's shell and returns what it printed.
    /// The end marker is typed as `END-OF-""NAME` so that only its output,
    /// not the echo of the typed line, matches `END-OF-NAME`.
    fn run(&mut self, command: &str, name: &str) -> Result<String, String> {
        let from = self.text().len();
        self.type_line(&format!("{command}; echo END-OF-\"\"{name}"))?;
        let marker = format!("\nEND-OF-{name}\n");
        let answer = self.wait_for(from, &format!("the output of `{command}`"), |text| {
            text.find(&marker).map(|end| text[..end].to_owned())
        })?;
        // Leave out the echo of the typed line.
        Ok(answer
            .split_once('\n')
            .map_or(String::new(), |(_, rest)| rest.to_owned()))
    }

    /// Fails if QEMU has exited or `deadline` has passed.
    pub(crate) fn check_running(
        &mut self,
        waiting_for: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(self.failure(&format!("QEMU exited ({status}) before {waiting_for}")));
        }
        if Instant::now() > deadline {
            return Err(self.failure(&format!("no {waiting_for} within {} s", TIMEOUT.as_secs())));
        }
        Ok(())
    }

    /// Connects to QEMU's `what` on `port`, retrying while QEMU starts.
    pub(crate) fn connect(&mut self, port: u16, what: &str) -> Result<TcpStream, String> {
        let started = Instant::now();
        loop {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(stream) => return Ok(stream),
                Err(error) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(self.failure(&format!(
                            "QEMU exited ({status}) before its {what} took connections"
                        )));
                    }
                    if started.elapsed() > Duration::from_secs(10) {
                        return Err(self.failure(&format!(
                            "cannot connect to QEMU's {what} on port {port}: {error}"
                        )));
                    }
                    thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    /// A failure report: `why`, then the last console lines.
    pub(crate) fn failure(&self, why: &str) -> String {
        let text = self.text();
        let lines: Vec<&str> = text.lines().collect();
        let first = lines.len().saturating_sub(REPORT_LINES);
        format!(
            "{}: FAILED after {:.1} s: {why}\n----- last {} console lines -----\n{}\n----- end -----",
            self.program,
            self.started.elapsed().as_secs_f64(),
            lines.len() - first,
            lines[first..].join("\n")
        )
    }

    /// Kills QEMU (if it still runs) and collects the reader threads.
    pub(crate) fn finish(mut self) {
        drop(self.stdin.take());
        stop(&mut self.child);
        for reader in self.readers.into_iter().flatten() {
            let _ = reader.join();
        }
    }
}

/// A TCP port nobody listens on now (QEMU takes it a moment later).
pub(crate) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|error| format!("cannot find a free TCP port: {error}"))
}

/// Boots the guest, checks its shell answers, and powers it off.
fn shell_test(guest: &Guest, gic_version: u8) -> Result<(), String> {
    let mut console = Console::start(
        bare_command(guest, gic_version, BARE_MEMORY, "", ""),
        "linux-bare",
    )?;
    let outcome = shell_session(&mut console, gic_version);
    let seconds = console.started.elapsed().as_secs_f64();
    console.finish();
    outcome?;
    println!("linux-bare: ok (GICv{gic_version}, {seconds:.1} s)");
    Ok(())
}

fn shell_session(console: &mut Console, gic_version: u8) -> Result<(), String> {
    let ready = console.wait_for(0, &format!("`{SHELL_READY}`"), |text| {
        text.find(SHELL_READY).map(|at| at + SHELL_READY.len())
    })?;
    // The prompt of busybox's shell as root ends in "# ".
    console.wait_for(ready, "the shell's prompt", |text| text.find("# "))?;
    println!(
        "linux-bare: shell ready after {:.1} s",
        console.started.elapsed().as_secs_f64()
    );

    let uname = console.run("uname -a", "UNAME")?;
    for expected in ["Linux", "aarch64"] {
        if !uname.contains(expected) {
            return Err(console.failure(&format!("`uname -a` printed no `{expected}`")));
        }
    }
    println!("linux-bare: uname -a: {}", uname.trim());

    let interrupts = console.run("cat /proc/interrupts", "INTERRUPTS")?;
    // The interrupt controller's name in /proc/interrupts: Linux calls the
    // GICv2 "GIC-0" and the GICv3 "GICv3".
    let gic = if gic_version == 3 { "GICv3" } else { "GIC-0" };
    let timer = interrupts
        .lines()
        .find(|line| line.contains("arch_timer") && line.contains(gic));
    let Some(timer) = timer else {
        return Err(console.failure(&format!(
            "/proc/interrupts has no line with both `arch_timer` and `{gic}` (the GICv{gic_version})"
        )));
    };
    println!("linux-bare: /proc/interrupts: {}", timer.trim());

    console.type_line("poweroff -f")?;
    loop {
        match console.child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(console.failure(&format!(
                    "QEMU exited with {status} after `poweroff -f` (PSCI SYSTEM_OFF should exit 0)"
                )));
            }
            Ok(None) if console.started.elapsed() > TIMEOUT => {
                return Err(console.failure(&format!(
                    "QEMU still runs {} s after start; `poweroff -f` did not power off",
                    TIMEOUT.as_secs()
                )));
            }
            Ok(None) => thread::sleep(Duration::from_millis(50)),
            Err(error) => return Err(format!("cannot wait for QEMU: {error}")),
        }
    }
}

/// `linux-bare --bench`: the reference measurement of the bare guest.
///
/// QEMU runs with `-icount shift=0,sleep=off` (one instruction is one
/// nanosecond of virtual time), a fixed device tree and clock, the kernel
/// argument `bench-poweroff` (so `/init` runs `poweroff -f` first thing) and
/// `-action shutdown=pause`, so that the guest's PSCI `SYSTEM_OFF` stops
/// the machine instead of ending QEMU. It starts stopped (`-S`); the tool
/// attaches to QEMU's gdbstub before the first instruction, continues, and
/// gets the stop reply when the guest powers off: no race with a client
/// that attaches later (attaching stops a running machine).
///
/// Then it reads, through the gdbstub, `x0` (the PSCI function, to check
/// that it is `SYSTEM_OFF`), `pc` and `CNTFRQ_EL0`, and CNTPCT_EL0 or
/// CNTVCT_EL0 if the target description lists one. QEMU 10.0 lists
/// neither: its gdbstub leaves out every system register without a raw
/// value (`ARM_CP_NO_RAW`), and the counters are computed on each read. So
/// the instruction count comes from QEMU's QMP monitor: `query-replay`
/// answers the instructions the vCPU has executed (`icount`), whether or
/// not record/replay is on. That is the exact count; the counter would also
/// include the idle time `sleep=off` skips.
///
/// `cargo xtask bench-linux` (`linux_bench.rs`) runs it too, with the
/// guest's RAM as well as the reference 512 MiB.
pub mod bench {
    use std::time::{Duration, Instant};

    use super::{
        BENCH_POWEROFF, Console, Guest, REACHED_INIT, SHELL_READY, TIMEOUT, bare_command, free_port,
    };

    /// PSCI `SYSTEM_OFF` (SMC32 function ID), in `x0` when the guest powers off.
    const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
    /// The signal of the gdbstub's stop reply when the machine stops for a
    /// guest shutdown (QEMU reports `RUN_STATE_SHUTDOWN` as SIGQUIT).
    const SIGNAL_SHUTDOWN: u8 = 3;

    /// Boots `guest` bare with `memory` of RAM, prints the measurement
    /// and returns the instructions from power-on to its `SYSTEM_OFF`.
    pub fn run(guest: &Guest, gic_version: u8, memory: &str) -> Result<u64, String> {
        let gdb_port = free_port()?;
        let qmp_port = free_port()?;
        let mut command = bare_command(
            guest,
            gic_version,
            memory,
            ",dtb-randomness=off",
            &format!(" {BENCH_POWEROFF}"),
        );
        command
            .args(["-icount", "shift=0,sleep=off"])
            .args(["-rtc", "base=2024-01-01,clock=vm"])
            // A guest reboot would boot again: make it a shutdown, which
            // pauses, and the x0 check below tells the two apart.
            .args(["-action", "shutdown=pause,reboot=shutdown"])
            .arg("-S")
            .arg("-gdb")
            .arg(format!("tcp:127.0.0.1:{gdb_port}"))
            .arg("-qmp")
            .arg(format!("tcp:127.0.0.1:{qmp_port},server,wait=off"));
        let mut console = Console::start(command, "linux-bare")?;
        let outcome = measure(&mut console, gdb_port, qmp_port);
        console.finish();
        let measurement = outcome?;
        println!(
            "linux-bare: stopped at PSCI SYSTEM_OFF (x0 {:#x}), pc {:#x}, after {:.1} s",
            measurement.x0, measurement.pc, measurement.seconds
        );
        let counter = match measurement.counter {
            Some((name, value)) => format!(
                "counter {value} at {} Hz ({name}), {} instructions by the counter",
                measurement.frequency,
                u128::from(value) * 1_000_000_000 / u128::from(measurement.frequency.max(1))
            ),
            None => format!(
                "QEMU's icount; CNTPCT_EL0/CNTVCT_EL0 are not readable through its gdbstub, \
                 CNTFRQ_EL0 {} Hz",
                measurement.frequency
            ),
        };
        println!(
            "linux-bare: power-on to poweroff at /init: {} instructions ({counter})",
            measurement.instructions
        );
        Ok(measurement.instructions)
    }

    /// What the measurement found.
    #[derive(Debug)]
    struct Measurement {
        instructions: u64,
        frequency: u64,
        /// The counter register's name and value, if the gdbstub has one.
        counter: Option<(&'static str, u64)>,
        x0: u64,
        pc: u64,
        seconds: f64,
    }

    fn measure(console: &mut Console, gdb_port: u16, qmp_port: u16) -> Result<Measurement, String> {
        let deadline = console.started + TIMEOUT;
        let stream = console.connect(gdb_port, "gdbstub")?;
        let mut gdb = super::rsp::Client::new(stream)?;
        let registers = gdb.target_registers(deadline)?;
        let number = |name: &str| super::rsp::number_of(&registers, name);
        let missing = |name: &str| format!("the gdbstub's target description has no {name}");
        let x0 = number("x0").ok_or_else(|| missing("x0"))?;
        let pc = number("pc").ok_or_else(|| missing("pc"))?;
        let frequency = number("CNTFRQ_EL0").ok_or_else(|| missing("CNTFRQ_EL0"))?;
        let counter = ["CNTPCT_EL0", "CNTVCT_EL0"]
            .into_iter()
            .find_map(|name| number(name).map(|number| (name, number)));

        gdb.send(b"c", deadline)?;
        let stop = loop {
            if let Some(reply) = gdb.receive_until(Instant::now() + Duration::from_millis(200))? {
                break reply;
            }
            if let Ok(Some(status)) = console.child.try_wait() {
                return Err(console.failure(&format!(
                    "QEMU exited ({status}) before the guest powered off"
                )));
            }
            if Instant::now() > deadline {
                return Err(console.failure(&format!(
                    "the guest did not power off within {} s",
                    TIMEOUT.as_secs()
                )));
            }
        };
        let seconds = console.started.elapsed().as_secs_f64();
        match super::rsp::stop_signal(&stop) {
            Some(SIGNAL_SHUTDOWN) => {}
            _ => {
                return Err(console.failure(&format!(
                    "the machine stopped with `{}`, not for a guest shutdown",
                    String::from_utf8_lossy(&stop)
                )));
            }
        }
        let x0 = gdb.read_register(x0, deadline)?;
        if x0 != PSCI_SYSTEM_OFF {
            return Err(console.failure(&format!(
                "the guest stopped QEMU with x0 {x0:#x}, not PSCI SYSTEM_OFF ({PSCI_SYSTEM_OFF:#x})"
            )));
        }
        let text = console.text();
        if !text.contains(REACHED_INIT) || text.contains(SHELL_READY) {
            return Err(console.failure(&format!(
                "the guest powered off, but not from /init's `{BENCH_POWEROFF}` path"
            )));
        }
        let pc = gdb.read_register(pc, deadline)?;
        let frequency = gdb.read_register(frequency, deadline)?;
        let counter = match counter {
            Some((name, number)) => Some((name, gdb.read_register(number, deadline)?)),
            None => None,
        };

        let stream = console.connect(qmp_port, "QMP monitor")?;
        let mut qmp = super::qmp::Client::new(stream, deadline)?;
        let reply = qmp.execute("query-replay", deadline)?;
        let instructions = super::qmp::icount(&reply)
            .ok_or_else(|| format!("QMP query-replay answered without an icount: {reply}"))?;
        Ok(Measurement {
            instructions,
            frequency,
            counter,
            x0,
            pc,
            seconds,
        })
    }
}

/// A client of the GDB remote serial protocol, enough to read registers of
/// QEMU's gdbstub: packets `$data#checksum` (the checksum is the sum of the
/// data bytes modulo 256, two hex digits), each answered with `+` (or `-`
/// to have it sent again). In answers, `}` escapes the next byte (XOR 0x20)
/// and `X*n` repeats `X` `n - 29` more times.
pub mod rsp {
    use std::io::{ErrorKind, Read, Write};
    use std::net::TcpStream;
    use std::time::{Duration, Instant};

    /// `data` as a packet.
    pub fn encode(data: &[u8]) -> Vec<u8> {
        let checksum = data.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
        let mut packet = Vec::with_capacity(data.len() + 4);
        packet.push(b'$');
        packet.extend_from_slice(data);
        packet.extend_from_slice(format!("#{checksum:02x}").as_bytes());
        packet
    }

    /// Takes the first complete packet out of `pending`, dropping what
    /// comes before it (acknowledgements). `None`: no complete packet yet.
    /// `Some(Err)`: a packet with a wrong checksum (taken out too).
    pub fn take_packet(pending: &mut Vec<u8>) -> Option<Result<Vec<u8>, String>> {
        let start = pending.iter().position(|byte| *byte == b'$')?;
        let end = start + 1 + pending[start + 1..].iter().position(|byte| *byte == b'#')?;
        if pending.len() < end + 3 {
            return None;
        }
        let raw = pending[start + 1..end].to_vec();
        let sent = std::str::from_utf8(&pending[end + 1..end + 3])
            .ok()
            .and_then(|digits| u8::from_str_radix(digits, 16).ok());
        pending.drain(..end + 3);
        let checksum = raw.iter().fold(0u8, |sum, byte| sum.wrapping_add(*byte));
        if sent != Some(checksum) {
            return Some(Err(format!(
                "packet with a bad checksum: {}",
                String::from_utf8_lossy(&raw)
            )));
        }
        Some(decode(&raw))
    }

    /// Undoes the escapes and run-length encoding of a packet's data.
    pub fn decode(raw: &[u8]) -> Result<Vec<u8>, String> {
        let mut data = Vec::with_capacity(raw.len());
        let mut bytes = raw.iter();
        while let Some(&byte) = bytes.next() {
            match byte {
                b'}' => {
                    let escaped = bytes.next().ok_or("packet ends in an escape")?;
                    data.push(escaped ^ 0x20);
                }
                b'*' => {
                    let count = bytes.next().ok_or("packet ends in a repeat")?;
                    let last = *data.last().ok_or("packet starts with a repeat")?;
                    let repeats = usize::from(count.checked_sub(29).ok_or("bad repeat count")?);
                    data.extend(std::iter::repeat_n(last, repeats));
                }
                _ => data.push(byte),
            }
        }
        Ok(data)
    }

    /// The signal of a stop reply (`S05`, `T05thread:01;`), if it is one.
    pub fn stop_signal(reply: &[u8]) -> Option<u8> {
        match reply {
            [b'S' | b'T', high, low, ..] => {
                u8::from_str_radix(std::str::from_utf8(&[*high, *low]).ok()?, 16).ok()
            }
            _ => None,
        }
    }

    /// A register value from the hex bytes of a `p` answer (target byte
    /// order: little-endian on AArch64).
    pub fn register_value(reply: &[u8]) -> Result<u64, String> {
        let text = std::str::from_utf8(reply).map_err(|_| "register value is not text")?;
        if text.is_empty()
            || !text.len().is_multiple_of(2)
            || text.len() > 16
            || text.starts_with('E')
        {
            return Err(format!("not a register value: `{text}`"));
        }
        let mut value = 0u64;
        for (index, pair) in text.as_bytes().chunks(2).enumerate() {
            let digits = std::str::from_utf8(pair).map_err(|_| "register value is not text")?;
            let byte = u8::from_str_radix(digits, 16)
                .map_err(|_| format!("not a register value: `{text}`"))?;
            value |= u64::from(byte) << (8 * index);
        }
        Ok(value)
    }

    /// One register of a target description.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Register {
        pub name: String,
        pub number: u32,
        pub bits: u32,
    }

    /// The number of the register called `name` in a target description.
    pub fn number_of(registers: &[Register], name: &str) -> Option<u32> {
        registers
            .iter()
            .find(|register| register.name == name)
            .map(|register| register.number)
    }

    /// The `href`s of a target description's `<xi:include>`s, in order.
    pub fn includes(xml: &str) -> Vec<String> {
        tags(xml, "xi:include")
            .filter_map(|tag| attribute(tag, "href"))
            .map(str::to_owned)
            .collect()
    }

    /// The registers of the target description `features`: the main
    /// document and its included features, in order. As in GDB, a
    /// register without a `regnum` takes the number after the previous
    /// register's.
    pub fn registers(features: &[String]) -> Result<Vec<Register>, String> {
        let mut found = Vec::new();
        let mut next = 0u32;
        for xml in features {
            for tag in tags(xml, "reg") {
                let name =
                    attribute(tag, "name").ok_or_else(|| format!("<reg> without a name: {tag}"))?;
                let number = match attribute(tag, "regnum") {
                    Some(text) => text.parse().map_err(|_| format!("bad regnum in {tag}"))?,
                    None => next,
                };
                let bits = attribute(tag, "bitsize")
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| format!("<reg> without a bitsize: {tag}"))?;
                next = number + 1;
                found.push(Register {
                    name: name.to_owned(),
                    number,
                    bits,
                });
            }
        }
        Ok(found)
    }

    /// The insides of every `<name ...>` tag of `xml`.
    fn tags<'a>(xml: &'a str, name: &str) -> impl Iterator<Item = &'a str> {
        let open = format!("<{name}");
        xml.match_indices(open.as_str())
            .map(|(at, _)| &xml[at + open.len()..])
            .filter(|rest| rest.starts_with(|c: char| c.is_whitespace() || c == '/' || c == '>'))
            .map(|rest| rest.find('>').map_or(rest, |end| &rest[..end]))
            .collect::<Vec<_>>()
            .into_iter()
    }

    /// The value of attribute `name` in the inside of a tag.
    fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
        let mut rest = tag;
        loop {
            let at = rest.find(name)?;
            let before = rest[..at].chars().next_back();
            let after = &rest[at + name.len()..];
            let after = after.trim_start();
            if before.is_some_and(char::is_whitespace) && after.starts_with('=') {
                let value = after[1..].trim_start();
                let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
                let value = &value[1..];
                return value.find(quote).map(|end| &value[..end]);
            }
            rest = &rest[at + name.len()..];
        }
    }

    /// A connection to a gdbstub.
    #[derive(Debug)]
    pub struct Client {
        stream: TcpStream,
        pending: Vec<u8>,
    }

    impl Client {
        pub fn new(stream: TcpStream) -> Result<Client, String> {
            stream
                .set_nodelay(true)
                .map_err(|error| format!("gdbstub socket: {error}"))?;
            Ok(Client {
                stream,
                pending: Vec::new(),
            })
        }

        /// Sends `data` and waits for its acknowledgement (sending it
        /// again after a `-`).
        pub fn send(&mut self, data: &[u8], deadline: Instant) -> Result<(), String> {
            let packet = encode(data);
            for _ in 0..5 {
                self.stream
                    .write_all(&packet)
                    .map_err(|error| format!("gdbstub: cannot send: {error}"))?;
                loop {
                    match self.pending.first() {
                        Some(b'+') => {
                            self.pending.remove(0);
                            return Ok(());
                        }
                        Some(b'-') => {
                            self.pending.remove(0);
                            break;
                        }
                        // An answer without an acknowledgement first.
                        Some(b'$') => return Ok(()),
                        Some(_) => {
                            self.pending.remove(0);
                        }
                        None => {
                            if !self.fill(deadline)? {
                                return Err(format!(
                                    "gdbstub: no acknowledgement of `{}`",
                                    String::from_utf8_lossy(data)
                                ));
                            }
                        }
                    }
                }
            }
            Err(format!(
                "gdbstub: `{}` refused 5 times",
                String::from_utf8_lossy(data)
            ))
        }

        /// The next packet, acknowledged; `None` if none came by `deadline`.
        pub fn receive_until(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, String> {
            loop {
                match take_packet(&mut self.pending) {
                    Some(Ok(data)) => {
                        self.acknowledge(b"+")?;
                        return Ok(Some(data));
                    }
                    Some(Err(_)) => self.acknowledge(b"-")?,
                    None => {
                        if !self.fill(deadline)? {
                            return Ok(None);
                        }
                    }
                }
            }
        }

        /// Sends `data` and returns the answer.
        pub fn request(&mut self, data: &[u8], deadline: Instant) -> Result<Vec<u8>, String> {
            self.send(data, deadline)?;
            self.receive_until(deadline)?
                .ok_or_else(|| format!("gdbstub: no answer to `{}`", String::from_utf8_lossy(data)))
        }

        /// Register `number` (`p` packet).
        pub fn read_register(&mut self, number: u32, deadline: Instant) -> Result<u64, String> {
            let reply = self.request(format!("p{number:x}").as_bytes(), deadline)?;
            register_value(&reply).map_err(|error| format!("gdbstub: register {number}: {error}"))
        }

        /// The document `annex` of the target description
        /// (`qXfer:features:read`, in pieces).
        pub fn read_feature(&mut self, annex: &str, deadline: Instant) -> Result<String, String> {
            let mut document = Vec::new();
            loop {
                let request = format!("qXfer:features:read:{annex}:{:x},3e8", document.len());
                let reply = self.request(request.as_bytes(), deadline)?;
                match reply.split_first() {
                    Some((b'm', data)) if !data.is_empty() => document.extend_from_slice(data),
                    Some((b'l', data)) => {
                        document.extend_from_slice(data);
                        break;
                    }
                    _ => {
                        return Err(format!(
                            "gdbstub: cannot read {annex}: `{}`",
                            String::from_utf8_lossy(&reply)
                        ));
                    }
                }
            }
            String::from_utf8(document).map_err(|_| format!("gdbstub: {annex} is not UTF-8"))
        }

        /// Every register of the target: `target.xml` and its includes.
        pub fn target_registers(&mut self, deadline: Instant) -> Result<Vec<Register>, String> {
            let supported = self.request(b"qSupported:xmlRegisters=aarch64", deadline)?;
            if !String::from_utf8_lossy(&supported).contains("qXfer:features:read+") {
                return Err("the gdbstub cannot send its target description".into());
            }
            let target = self.read_feature("target.xml", deadline)?;
            let mut features = Vec::new();
            for include in includes(&target) {
                features.push(self.read_feature(&include, deadline)?);
            }
            features.insert(0, target);
            registers(&features)
        }

        fn acknowledge(&mut self, ack: &[u8]) -> Result<(), String> {
            self.stream
                .write_all(ack)
                .map_err(|error| format!("gdbstub: cannot acknowledge: {error}"))
        }

        /// Reads what has arrived into `pending`; false if nothing came by
        /// `deadline`.
        fn fill(&mut self, deadline: Instant) -> Result<bool, String> {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|error| format!("gdbstub socket: {error}"))?;
            let mut buffer = [0u8; 4096];
            match self.stream.read(&mut buffer) {
                Ok(0) => Err("gdbstub: QEMU closed the connection".into()),
                Ok(count) => {
                    self.pending.extend_from_slice(&buffer[..count]);
                    Ok(true)
                }
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    Ok(false)
                }
                Err(error) => Err(format!("gdbstub: cannot read: {error}")),
            }
        }
    }
}

/// A client of QEMU's QMP monitor (JSON, one message a line), enough to run
/// commands without arguments.
pub mod qmp {
    use std::io::{BufRead, BufReader, ErrorKind, Write};
    use std::net::TcpStream;
    use std::time::Instant;

    /// A QMP connection in command mode.
    #[derive(Debug)]
    pub struct Client {
        reader: BufReader<TcpStream>,
    }

    impl Client {
        /// Reads the greeting and leaves capabilities negotiation.
        pub fn new(stream: TcpStream, deadline: Instant) -> Result<Client, String> {
            let mut client = Client {
                reader: BufReader::new(stream),
            };
            let greeting = client.line(deadline)?;
            if !greeting.contains("\"QMP\"") {
                return Err(format!("QMP: unexpected greeting {greeting}"));
            }
            client.execute("qmp_capabilities", deadline)?;
            Ok(client)
        }

        /// Runs `command` and returns its answer line (events are skipped).
        pub fn execute(&mut self, command: &str, deadline: Instant) -> Result<String, String> {
            let request = format!("{{\"execute\": \"{command}\"}}\n");
            self.reader
                .get_mut()
                .write_all(request.as_bytes())
                .map_err(|error| format!("QMP: cannot send {command}: {error}"))?;
            loop {
                let line = self.line(deadline)?;
                if line.starts_with("{\"return\"") {
                    return Ok(line);
                }
                if line.starts_with("{\"error\"") {
                    return Err(format!("QMP: {command} failed: {line}"));
                }
            }
        }

        fn line(&mut self, deadline: Instant) -> Result<String, String> {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err("QMP: out of time".into());
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|error| format!("QMP socket: {error}"))?;
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => Err("QMP: QEMU closed the connection".into()),
                Ok(_) => Ok(line.trim().to_owned()),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                {
                    Err("QMP: no answer in time".into())
                }
                Err(error) => Err(format!("QMP: cannot read: {error}")),
            }
        }
    }

    /// The `icount` of a `query-replay` answer.
    pub fn icount(answer: &str) -> Option<u64> {
        let key = "\"icount\":";
        let at = answer.find(key)? + key.len();
        let digits: String = answer[at..]
            .trim_start()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::cpio::{Entry, HEADER_LEN, write_newc};
    use super::*;

    /// One member of an archive, read back.
    #[derive(Debug, PartialEq, Eq)]
    struct Member {
        /// The 13 header fields after the magic.
        fields: [u32; 13],
        name: String,
        data: Vec<u8>,
        /// Where the header starts.
        offset: usize,
    }

    /// Reads an archive back, checking magic, NUL and padding bytes.
    fn read_members(archive: &[u8]) -> Vec<Member> {
        let mut members = Vec::new();
        let mut offset = 0;
        loop {
            assert_eq!(offset % 4, 0, "member at {offset} is not 4-byte aligned");
            let header = &archive[offset..offset + HEADER_LEN];
            assert_eq!(&header[..6], b"070701");
            let mut fields = [0u32; 13];
            for (index, field) in fields.iter_mut().enumerate() {
                let digits = std::str::from_utf8(&header[6 + 8 * index..14 + 8 * index]).unwrap();
                *field = u32::from_str_radix(digits, 16).unwrap();
            }
            let name_size = fields[11] as usize;
            let name_start = offset + HEADER_LEN;
            let name = &archive[name_start..name_start + name_size];
            assert_eq!(name.last(), Some(&0), "names end in NUL");
            let name = std::str::from_utf8(&name[..name_size - 1])
                .unwrap()
                .to_owned();
            let data_start = (name_start + name_size).next_multiple_of(4);
            assert!(
                archive[name_start + name_size..data_start]
                    .iter()
                    .all(|b| *b == 0)
            );
            let data_end = data_start + fields[6] as usize;
            let data = archive[data_start..data_end].to_vec();
            let next = data_end.next_multiple_of(4);
            assert!(archive[data_end..next].iter().all(|b| *b == 0));
            let trailer = name == "TRAILER!!!";
            members.push(Member {
                fields,
                name,
                data,
                offset,
            });
            offset = next;
            if trailer {
                assert_eq!(offset, archive.len(), "nothing after the trailer");
                return members;
            }
        }
    }

    #[test]
    fn cpio_header_fields_of_every_kind() {
        let archive = write_newc(&[
            Entry::file("bin/hello", 0o755, b"hello\n".to_vec()),
            Entry::directory("bin", 0o755),
            Entry::symlink("bin/sh", "hello"),
            Entry::directory("dev", 0o755),
            Entry::char_device("dev/console", 0o600, 5, 1),
        ])
        .unwrap();
        let members = read_members(&archive);
        let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bin",
                "bin/hello",
                "bin/sh",
                "dev",
                "dev/console",
                "TRAILER!!!"
            ],
            "sorted by path, trailer last"
        );
        // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
        // rdevmajor, rdevminor, namesize, check
        assert_eq!(
            members[0].fields,
            [1, 0o040_755, 0, 0, 2, 0, 0, 0, 0, 0, 0, 4, 0]
        );
        assert_eq!(
            members[1].fields,
            [2, 0o100_755, 0, 0, 1, 0, 6, 0, 0, 0, 0, 10, 0]
        );
        assert_eq!(members[1].data, b"hello\n");
        assert_eq!(
            members[2].fields,
            [3, 0o120_777, 0, 0, 1, 0, 5, 0, 0, 0, 0, 7, 0]
        );
        assert_eq!(members[2].data, b"hello", "a symlink's data is its target");
        assert_eq!(
            members[4].fields,
            [5, 0o020_600, 0, 0, 1, 0, 0, 0, 0, 5, 1, 12, 0]
        );
        assert_eq!(members[5].fields, [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0]);
        assert!(members[5].data.is_empty());
    }

    #[test]
    fn cpio_pads_names_and_data_to_4_bytes() {
        // Header 110 + "a\0" = 112: no name padding; data "xyz" + 1 NUL.
        let archive = write_newc(&[Entry::file("a", 0o644, b"xyz".to_vec())]).unwrap();
        assert_eq!(&archive[110..112], b"a\0");
        assert_eq!(&archive[112..116], b"xyz\0");
        assert_eq!(read_members(&archive)[1].offset, 116);
        // Header 110 + "ab\0" = 113: 3 bytes of padding; 4 bytes of data, none.
        let archive = write_newc(&[Entry::file("ab", 0o644, b"wxyz".to_vec())]).unwrap();
        assert_eq!(&archive[110..116], b"ab\0\0\0\0");
        assert_eq!(&archive[116..120], b"wxyz");
        assert_eq!(read_members(&archive)[1].offset, 120);
        // The header is upper-case hex, and the whole archive stays aligned.
        assert_eq!(&archive[..22], b"07070100000001000081A4");
        assert_eq!(archive.len() % 4, 0);
    }

    #[test]
    fn cpio_trailer_alone() {
        let archive = write_newc(&[]).unwrap();
        assert_eq!(
            archive.len(),
            124,
            "110 + \"TRAILER!!!\\0\" (11) padded to 124"
        );
        assert_eq!(&archive[110..121], b"TRAILER!!!\0");
    }

    #[test]
    fn cpio_is_deterministic_whatever_the_order() {
        let entries = vec![
            Entry::directory("x", 0o755),
            Entry::file("x/b", 0o644, vec![1, 2, 3]),
            Entry::file("x/a", 0o644, vec![4]),
        ];
        let mut reversed = entries.clone();
        reversed.reverse();
        assert_eq!(
            write_newc(&entries).unwrap(),
            write_newc(&reversed).unwrap()
        );
    }

    #[test]
    fn cpio_refuses_bad_entries() {
        let twice = write_newc(&[Entry::directory("a", 0o755), Entry::directory("a", 0o755)]);
        assert_eq!(twice.unwrap_err(), "cpio: `a` is in the archive twice");
        let orphan = write_newc(&[Entry::file("nowhere/file", 0o644, vec![])]);
        assert!(orphan.unwrap_err().contains("no directory of the archive"));
        let not_a_directory = write_newc(&[
            Entry::file("f", 0o644, vec![]),
            Entry::file("f/g", 0o644, vec![]),
        ]);
        assert!(not_a_directory.is_err());
        assert!(write_newc(&[Entry::directory("/abs", 0o755)]).is_err());
        assert!(write_newc(&[Entry::directory("", 0o755)]).is_err());
    }

    #[test]
    fn the_initramfs_has_console_init_and_applets() {
        let busybox = b"\x7fELF...\0[\0[[\0cat\0cttyhack\0sh\0".to_vec();
        let archive = write_newc(&initramfs_entries(busybox.clone(), true)).unwrap();
        let members = read_members(&archive);
        let find = |name: &str| members.iter().find(|m| m.name == name).unwrap();
        let console = find("dev/console");
        assert_eq!(console.fields[1], 0o020_600);
        assert_eq!((console.fields[9], console.fields[10]), (5, 1));
        assert_eq!(find("bin/busybox").data, busybox);
        assert_eq!(find("init").fields[1], 0o100_755);
        for directory in ["bin", "dev", "proc", "sys", "tmp"] {
            assert_eq!(find(directory).fields[1] & 0o170_000, 0o040_000);
        }
        for applet in APPLETS.iter().chain([&CTTYHACK]) {
            let link = find(&format!("bin/{applet}"));
            assert_eq!(link.fields[1], 0o120_777);
            assert_eq!(link.data, b"busybox");
        }
        let without = write_newc(&initramfs_entries(busybox, false)).unwrap();
        assert!(
            !read_members(&without)
                .iter()
                .any(|m| m.name == "bin/cttyhack")
        );
    }

    #[test]
    fn init_script_says_what_the_tests_wait_for() {
        let script = init_script(true);
        assert!(script.starts_with("#!/bin/sh\n"));
        for line in [
            "mount -t proc proc /proc",
            "mount -t sysfs sysfs /sys",
            "mount -t devtmpfs devtmpfs /dev",
            "echo 'guest-init: reached /init'",
            "*' bench-poweroff '*) poweroff -f ;;",
            "echo 'guest-init: shell ready'",
            "exec setsid cttyhack sh",
        ] {
            assert!(
                script.lines().any(|l| l == line),
                "no line `{line}` in\n{script}"
            );
        }
        let reached = script.find(REACHED_INIT).unwrap();
        let poweroff = script.find("poweroff -f").unwrap();
        let ready = script.find(SHELL_READY).unwrap();
        assert!(reached < poweroff && poweroff < ready);
        assert!(init_script(false).lines().any(|l| l == "exec sh"));
        assert!(!init_script(false).contains("cttyhack sh"));
    }

    /// A fresh directory for one test.
    fn scratch(name: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("xtask-linux-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        path
    }

    #[test]
    fn without_debian_the_error_names_fetch_debian() {
        let root = scratch("no-debian");
        let error = build_initramfs_in(&root).unwrap_err();
        assert!(error.contains("build/debian/root is missing"), "{error}");
        assert!(error.contains("run scripts/fetch-debian"), "{error}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn builds_the_same_files_twice() {
        let root = scratch("build");
        let debian = root.join(DEBIAN_ROOT);
        std::fs::create_dir_all(debian.join("boot")).unwrap();
        std::fs::create_dir_all(debian.join("bin")).unwrap();
        let mut image = vec![0u8; 4096];
        image[56..60].copy_from_slice(b"ARM\x64");
        std::fs::write(debian.join("boot/vmlinuz-6.1.0-1-arm64"), &image).unwrap();
        std::fs::write(debian.join("boot/vmlinuz-6.1.0-2-arm64"), &image).unwrap();
        let mut busybox = b"\x7fELF\0".to_vec();
        for applet in APPLETS {
            busybox.extend_from_slice(applet.as_bytes());
            busybox.push(0);
        }
        std::fs::write(debian.join("bin/busybox"), &busybox).unwrap();

        let guest = build_initramfs_in(&root).unwrap();
        assert_eq!(guest.kernel, root.join("build/guests/linux/Image"));
        assert_eq!(std::fs::read(&guest.kernel).unwrap(), image);
        let first = std::fs::read(&guest.initramfs).unwrap();
        let members = read_members(&first);
        assert!(members.iter().any(|m| m.name == "dev/console"));
        assert!(
            !members.iter().any(|m| m.name == "bin/cttyhack"),
            "not in this busybox"
        );
        let init = members.iter().find(|m| m.name == "init").unwrap();
        assert!(String::from_utf8_lossy(&init.data).contains("\nexec sh\n"));
        build_initramfs_in(&root).unwrap();
        assert_eq!(
            std::fs::read(&guest.initramfs).unwrap(),
            first,
            "byte-identical"
        );

        // A compressed or foreign kernel is refused.
        std::fs::write(debian.join("boot/vmlinuz-6.1.0-3-arm64"), b"\x1f\x8b gzip").unwrap();
        let error = build_initramfs_in(&root).unwrap_err();
        assert!(
            error.contains("vmlinuz-6.1.0-3-arm64 is not a raw arm64 Image"),
            "{error}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn console_types_and_reports_the_last_lines() {
        // A stand-in for QEMU: a shell that answers one command, then exits.
        let mut command = std::process::Command::new("sh");
        command.args([
            "-c",
            "echo booting; echo '# '; read line; eval \"$line\"; exit 3",
        ]);
        let mut console = Console::start(command, "linux-bare").unwrap();
        console
            .wait_for(0, "the prompt", |text| text.find("# "))
            .unwrap();
        let answer = console.run("echo answer", "ECHO");
        // The stand-in has no tty that echoes the typed line: the first
        // line of the answer is dropped as that echo, leaving nothing.
        assert_eq!(answer.unwrap(), "");
        let error = console
            .wait_for(0, "`never`", |text| text.find("never"))
            .unwrap_err();
        assert!(
            error.contains("QEMU exited (exit status: 3) while waiting for `never`"),
            "{error}"
        );
        assert!(
            error.contains("----- last 4 console lines -----\nbooting\n# \nanswer\nEND-OF-ECHO\n"),
            "{error}"
        );
        console.finish();
    }

    #[test]
    fn finds_applets_in_the_name_table() {
        let busybox = b"junk\0[\0[[\0cat\0sh\0uname\0\0more";
        assert!(has_applet(busybox, "cat"));
        assert!(has_applet(busybox, "sh"));
        assert!(has_applet(busybox, "uname"));
        assert!(!has_applet(busybox, "ca"));
        assert!(!has_applet(busybox, "cttyhack"));
    }

    #[test]
    fn parses_linux_bare_options() {
        let parse = |words: &[&str]| {
            BareOptions::parse(&words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>())
        };
        assert_eq!(
            parse(&[]).unwrap(),
            BareOptions {
                gic: 2,
                bench: false
            }
        );
        assert_eq!(
            parse(&["--bench", "--gic", "3"]).unwrap(),
            BareOptions {
                gic: 3,
                bench: true
            }
        );
        assert_eq!(
            parse(&["--gic", "4"]).unwrap_err(),
            "--gic takes 2 or 3, not `4`"
        );
        assert_eq!(parse(&["--gic"]).unwrap_err(), "option --gic needs a value");
        assert!(
            parse(&["--smp", "2"])
                .unwrap_err()
                .starts_with("unknown option `--smp`")
        );
    }

    #[test]
    fn rsp_encodes_packets() {
        assert_eq!(rsp::encode(b"g"), b"$g#67");
        assert_eq!(rsp::encode(b"p20"), b"$p20#d2");
        assert_eq!(rsp::encode(b""), b"$#00");
        // 'q' + 'S' + ... wraps modulo 256.
        assert_eq!(rsp::encode(b"qSupported"), b"$qSupported#37");
    }

    #[test]
    fn rsp_takes_packets_from_a_stream() {
        let mut pending = b"++$OK#9a$T05thread:01;#07$par".to_vec();
        assert_eq!(rsp::take_packet(&mut pending), Some(Ok(b"OK".to_vec())));
        assert_eq!(
            rsp::take_packet(&mut pending),
            Some(Ok(b"T05thread:01;".to_vec()))
        );
        assert_eq!(rsp::take_packet(&mut pending), None, "incomplete");
        pending.extend_from_slice(b"tial#");
        assert_eq!(
            rsp::take_packet(&mut pending),
            None,
            "checksum not there yet"
        );
        pending.extend_from_slice(b"e");
        assert_eq!(rsp::take_packet(&mut pending), None, "half a checksum");
        pending.extend_from_slice(b"d");
        assert_eq!(
            rsp::take_packet(&mut pending),
            Some(Ok(b"partial".to_vec()))
        );
        assert!(pending.is_empty());

        let mut bad = b"$OK#00".to_vec();
        assert!(matches!(rsp::take_packet(&mut bad), Some(Err(_))));
        assert!(bad.is_empty(), "a bad packet is taken out too");
    }

    #[test]
    fn rsp_decodes_escapes_and_repeats() {
        // "}\x03" is '#' (0x23) escaped; "}]" is '}' escaped.
        assert_eq!(rsp::decode(b"a}\x03b}]").unwrap(), b"a#b}");
        // "0* " repeats '0' (' ' is 32: 3 more times).
        assert_eq!(rsp::decode(b"0* 1").unwrap(), b"00001");
        assert!(rsp::decode(b"abc}").is_err());
        assert!(rsp::decode(b"*#").is_err());
        // The checksum covers the raw bytes.
        let mut pending = rsp::encode(b"x}\x03");
        assert_eq!(rsp::take_packet(&mut pending), Some(Ok(b"x#".to_vec())));
    }

    #[test]
    fn rsp_reads_stop_replies_and_register_values() {
        assert_eq!(rsp::stop_signal(b"T03thread:01;"), Some(3));
        assert_eq!(rsp::stop_signal(b"S05"), Some(5));
        assert_eq!(rsp::stop_signal(b"W00"), None);
        assert_eq!(rsp::stop_signal(b"OK"), None);
        // What QEMU answered for CNTFRQ_EL0, x0 and pc at SYSTEM_OFF.
        assert_eq!(rsp::register_value(b"a0acb90300000000"), Ok(62_500_000));
        assert_eq!(rsp::register_value(b"0800008400000000"), Ok(0x8400_0008));
        assert_eq!(
            rsp::register_value(b"b88502080080ffff"),
            Ok(0xffff_8000_0802_85b8)
        );
        assert_eq!(rsp::register_value(b"2a000000"), Ok(42));
        assert!(rsp::register_value(b"E14").is_err());
        assert!(rsp::register_value(b"").is_err());
        assert!(rsp::register_value(b"xyz0").is_err());
    }

    /// Excerpts of what QEMU 10.0's gdbstub sends for a Cortex-A72.
    const TARGET_XML: &str = r#"<?xml version="1.0"?><!DOCTYPE target SYSTEM "gdb-target.dtd"><target><architecture>aarch64</architecture><xi:include href="aarch64-core.xml"/><xi:include href="aarch64-fpu.xml"/><xi:include href="system-registers.xml"/></target>"#;
    const CORE_XML: &str = r#"<?xml version="1.0"?>
<feature name="org.gnu.gdb.aarch64.core">
  <reg name="x0" bitsize="64"/>
  <reg name="x1" bitsize="64"/>
  <reg name="sp" bitsize="64" type="data_ptr"/>
  <reg name="pc" bitsize="64" type="code_ptr" regnum="32"/>
  <reg name="cpsr" bitsize="32" type="cpsr_flags"/>
</feature>"#;
    const FPU_XML: &str = r#"<feature name="org.gnu.gdb.aarch64.fpu">
  <reg name="v0" bitsize="128" type="aarch64v"/>
  <reg name="fpsr" bitsize="32"/>
</feature>"#;
    const SYSTEM_XML: &str = r#"<?xml version="1.0"?><!DOCTYPE feature SYSTEM "gdb-target.dtd"><feature name="org.qemu.gdb.arm.sys.regs"><reg name="ID_MMFR5" bitsize="64" regnum="68" type="int" group="cp_regs"/><reg name="CNTKCTL" bitsize="64" regnum="77" type="int" group="cp_regs"/><reg name="CNTFRQ_EL0" bitsize="64" regnum="92" type="int" group="cp_regs"/><reg name="CNTV_CVAL_EL0" bitsize="64" regnum="162" type="int" group="cp_regs"/></feature>"#;

    #[test]
    fn finds_register_numbers_in_the_target_description() {
        assert_eq!(
            rsp::includes(TARGET_XML),
            [
                "aarch64-core.xml",
                "aarch64-fpu.xml",
                "system-registers.xml"
            ]
        );
        let features: Vec<String> = [TARGET_XML, CORE_XML, FPU_XML, SYSTEM_XML]
            .iter()
            .map(|xml| (*xml).to_owned())
            .collect();
        let registers = rsp::registers(&features).unwrap();
        let number = |name: &str| {
            registers
                .iter()
                .find(|register| register.name == name)
                .map(|register| (register.number, register.bits))
        };
        assert_eq!(number("x0"), Some((0, 64)));
        assert_eq!(number("x1"), Some((1, 64)));
        assert_eq!(number("sp"), Some((2, 64)));
        assert_eq!(number("pc"), Some((32, 64)), "an explicit regnum");
        assert_eq!(number("cpsr"), Some((33, 32)), "numbered after pc");
        assert_eq!(
            number("v0"),
            Some((34, 128)),
            "numbering goes on across features"
        );
        assert_eq!(number("fpsr"), Some((35, 32)));
        assert_eq!(number("CNTFRQ_EL0"), Some((92, 64)));
        assert_eq!(number("CNTV_CVAL_EL0"), Some((162, 64)));
        assert_eq!(
            number("CNTPCT_EL0"),
            None,
            "QEMU 10.0 does not list the counters"
        );
        assert_eq!(number("CNTVCT_EL0"), None);
    }

    #[test]
    fn reads_xml_attributes_exactly() {
        let features = vec![
            r#"<feature><reg typename="no" name = 'a' bitsize="8"/><regs/><reg bitsize="16" regnum="7" name="b"></reg></feature>"#
                .to_owned(),
        ];
        let registers = rsp::registers(&features).unwrap();
        assert_eq!(
            registers,
            [
                rsp::Register {
                    name: "a".into(),
                    number: 0,
                    bits: 8
                },
                rsp::Register {
                    name: "b".into(),
                    number: 7,
                    bits: 16
                },
            ]
        );
        assert!(rsp::registers(&[r#"<reg bitsize="8"/>"#.to_owned()]).is_err());
    }

    #[test]
    fn reads_icount_from_query_replay() {
        let answer = r#"{"return": {"icount": 914503445, "mode": "none"}}"#;
        assert_eq!(qmp::icount(answer), Some(914_503_445));
        assert_eq!(qmp::icount(r#"{"return": {"mode": "none"}}"#), None);
    }
}
