//! Finding (or installing) a compiler that can build wasm32-unknown-unknown guests.
//!
//! The trap on these machines: `rustup target add` hangs because rustup's download host is
//! unreachable. So, in order: rustup's target if already installed; Debian's `rustc-web` with
//! its std source and `-Zbuild-std`; installing those with apt when root on Debian; `rustup
//! target add` with a time limit (works on a laptop with internet); otherwise a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-unknown-unknown";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_STD_SOURCE: &str = "/usr/lib/rustlib/src/rust";
const DEBIAN_PACKAGES: [&str; 3] = ["rustc-web", "cargo-web", "rust-web-src"];

/// Environment that cargo sets for the xtask itself and that must not leak into a child build
/// with another toolchain.
const INHERITED_BUILD_ENV: [&str; 9] = [
    "CARGO",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "RUSTFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET",
    "CARGO_ENCODED_RUSTFLAGS",
];

/// Build every guest in the workspace at `workspace` (release, wasm32-unknown-unknown) into
/// `target_dir`.
pub fn guest_build(workspace: &Path, target_dir: &Path) -> Result<()> {
    let mut build = if rustup_has_target() {
        println!("guest toolchain: rustup's {TARGET} target");
        rustup_build()
    } else if debian_toolchain_present() {
        println!("guest toolchain: Debian rustc with -Zbuild-std");
        debian_build()?
    } else if can_apt_install() {
        println!(
            "guest toolchain: installing Debian's {} with apt-get",
            DEBIAN_PACKAGES.join(", ")
        );
        apt_install()?;
        debian_build()?
    } else if rustup_add_target(Duration::from_secs(120)) {
        println!("guest toolchain: rustup's {TARGET} target (just installed)");
        rustup_build()
    } else {
        bail!(
            "no compiler for {TARGET} guests. Either `rustup target add {TARGET}` (needs rustup's download host), \
             or on Debian install {} (as root: apt-get install {}) so the std library can be built from source.",
            DEBIAN_PACKAGES.join(", "),
            DEBIAN_PACKAGES.join(" ")
        );
    };
    build
        .current_dir(workspace)
        .args(["build", "--release", "--workspace", "--target", TARGET])
        .env("CARGO_TARGET_DIR", target_dir);
    let status = build.status().context("starting the guest build")?;
    if !status.success() {
        bail!("guest build failed ({status})");
    }
    Ok(())
}

fn clean(mut command: Command) -> Command {
    for var in INHERITED_BUILD_ENV {
        command.env_remove(var);
    }
    command
}

fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .is_ok_and(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|l| l.trim() == TARGET)
        })
}

fn rustup_build() -> Command {
    clean(Command::new("cargo"))
}

fn debian_toolchain_present() -> bool {
    Path::new(DEBIAN_RUSTC).exists()
        && Path::new(DEBIAN_CARGO).exists()
        && Path::new(DEBIAN_STD_SOURCE).join("library").exists()
}

/// rustup's bundled `rust-lld`, which links wasm for Debian's compiler too.
fn rust_lld() -> Result<PathBuf> {
    let output = clean(Command::new("rustc"))
        .args(["--print", "sysroot"])
        .output()
        .context("asking rustup's rustc for its sysroot")?;
    let sysroot = String::from_utf8(output.stdout)?.trim().to_owned();
    let host = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-gnu"]
        .into_iter()
        .map(|triple| {
            Path::new(&sysroot)
                .join("lib/rustlib")
                .join(triple)
                .join("bin/rust-lld")
        })
        .find(|path| path.exists());
    host.with_context(|| format!("rust-lld not found under {sysroot}/lib/rustlib/*/bin"))
}

fn debian_build() -> Result<Command> {
    let mut command = clean(Command::new(DEBIAN_CARGO));
    command
        // Only this child may use nightly features: build-std for a target rustup cannot fetch.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTC", DEBIAN_RUSTC)
        .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER", rust_lld()?)
        .env_remove("RUSTUP_TOOLCHAIN")
        // A `-Z` flag goes before the subcommand, which the caller appends.
        .arg("-Zbuild-std=std,panic_abort");
    Ok(command)
}

fn can_apt_install() -> bool {
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0");
    is_root && Path::new("/etc/debian_version").exists() && Path::new("/usr/bin/apt-get").exists()
}

fn apt_install() -> Result<()> {
    for args in [
        vec!["update"],
        ["install", "-y"]
            .into_iter()
            .chain(DEBIAN_PACKAGES)
            .collect(),
    ] {
        let status = Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
    }
    Ok(())
}

/// `rustup target add`, killed after `limit`: it hangs where rustup's host is unreachable.
fn rustup_add_target(limit: Duration) -> bool {
    let Ok(mut child) = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    let started = Instant::now();
    while started.elapsed() < limit {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(_) => return false,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}
