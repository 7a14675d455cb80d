//! `cargo xtask`: the build driver. It owns the guest build (plugins, example plugins and test
//! fixtures compiled to wasm and made into components) and the two quick-start commands.
//!
//! - `cargo xtask plugins` — build every guest into `target/plugins/` (first-party),
//!   `target/examples/`, `target/fixtures/`, and their raw core modules into
//!   `target/core-modules/`.
//! - `cargo xtask test [ARGS]` — `plugins`, then the whole test suite.
//! - `cargo xtask serve [ARGS]` — `plugins`, then `wayline serve` with the first-party plugins.
//!
//! The guest toolchain is found or installed here (see ../shared/TOOLCHAIN.md): rustup's wasm
//! target if present, else Debian's compiler with its std source and `-Zbuild-std`.

mod toolchain;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("plugins") => build_guests().map(drop),
        Some("test") => build_guests().and_then(|dirs| test(&dirs, &args[1..])),
        Some("serve") => build_guests().and_then(|dirs| serve(&dirs, &args[1..])),
        _ => {
            eprintln!("usage: cargo xtask (plugins | test [ARGS] | serve [ARGS])");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ lives in the repo")
        .to_owned()
}

/// Where the built guests go.
struct GuestDirs {
    plugins: PathBuf,
    examples: PathBuf,
    fixtures: PathBuf,
    core_modules: PathBuf,
}

struct Guest {
    name: String,
    manifest_dir: PathBuf,
}

/// Members of the guest workspace, from `cargo metadata`.
fn guests(root: &Path) -> Result<Vec<Guest>> {
    let output = cargo_host()
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(root.join("plugins/Cargo.toml"))
        .output()
        .context("running cargo metadata")?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let packages = metadata["packages"]
        .as_array()
        .context("cargo metadata lists packages")?;
    Ok(packages
        .iter()
        .filter(|p| {
            p["targets"].as_array().is_some_and(|ts| {
                ts.iter().any(|t| {
                    t["crate_types"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c == "cdylib"))
                })
            })
        })
        .map(|p| Guest {
            name: p["name"].as_str().unwrap_or_default().to_owned(),
            manifest_dir: Path::new(p["manifest_path"].as_str().unwrap_or_default())
                .parent()
                .unwrap_or(Path::new(""))
                .to_owned(),
        })
        .collect())
}

fn build_guests() -> Result<GuestDirs> {
    let root = repo_root();
    let target = root.join("target");
    let dirs = GuestDirs {
        plugins: target.join("plugins"),
        examples: target.join("examples"),
        fixtures: target.join("fixtures"),
        core_modules: target.join("core-modules"),
    };
    let guests = guests(&root)?;
    let wasm_target_dir = target.join("wasm");
    toolchain::guest_build(&root.join("plugins"), &wasm_target_dir)?;
    for dir in [
        &dirs.plugins,
        &dirs.examples,
        &dirs.fixtures,
        &dirs.core_modules,
    ] {
        // Start empty: a renamed or removed guest must not linger where `wayline serve
        // --plugins` would load it.
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
    }
    let fixtures_root = root.join("tests/fixtures");
    for guest in guests {
        let module_path = wasm_target_dir
            .join("wasm32-unknown-unknown/release")
            .join(format!("{}.wasm", guest.name.replace('-', "_")));
        let module = std::fs::read(&module_path)
            .with_context(|| format!("reading {}", module_path.display()))?;
        std::fs::write(
            dirs.core_modules.join(format!("{}.wasm", guest.name)),
            &module,
        )?;
        let is_fixture = guest.manifest_dir.starts_with(&fixtures_root);
        let out_dir = if is_fixture {
            &dirs.fixtures
        } else if guest.manifest_dir.starts_with(root.join("examples")) {
            &dirs.examples
        } else {
            &dirs.plugins
        };
        let component = wit_component::ComponentEncoder::default()
            .module(&module)
            .and_then(|encoder| encoder.validate(true).encode());
        match component {
            Ok(component) => {
                let out = out_dir.join(format!("{}.wasm", guest.name));
                std::fs::write(&out, &component)?;
                println!(
                    "{:>8} bytes  {}",
                    component.len(),
                    out.strip_prefix(&root).unwrap_or(&out).display()
                );
            }
            // A fixture may be broken on purpose; the tests use its core module.
            Err(error) if is_fixture => println!(
                "note: fixture {} is not a component ({error}); core module only",
                guest.name
            ),
            Err(error) => bail!(
                "plugin {} cannot be made into a component: {error:#}",
                guest.name
            ),
        }
    }
    Ok(dirs)
}

/// The rustup toolchain's cargo for host builds, never Debian's.
fn cargo_host() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn with_guest_env(command: &mut Command, dirs: &GuestDirs) {
    command
        .env("WAYLINE_PLUGIN_DIR", &dirs.plugins)
        .env("WAYLINE_FIXTURE_DIR", &dirs.fixtures)
        .env("WAYLINE_CORE_MODULE_DIR", &dirs.core_modules);
}

fn run(mut command: Command, what: &str) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The real peers the tests talk to the server with (tests/clients/requirements.txt): the
/// Segment client, the aiosmtpd SMTP server, and schemathesis with an OpenAPI validator for
/// the served API document, from PyPI, installed for python3 when they are not there yet.
fn test_clients(root: &Path) -> Result<()> {
    let present = Command::new("python3")
        .args([
            "-c",
            "import segment.analytics, aiosmtpd, schemathesis, openapi_spec_validator",
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .context("starting python3 (the Segment client and SMTP server tests need it)")?;
    if present.success() {
        return Ok(());
    }
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-r",
    ])
    .arg(root.join("tests/clients/requirements.txt"));
    run(pip, "pip install of the test clients")
}

fn test(dirs: &GuestDirs, args: &[String]) -> Result<()> {
    let root = repo_root();
    test_clients(&root)?;
    // The first-party plugins' unit tests (their pure logic) run natively; fixtures are only
    // meaningful as wasm.
    let mut guests = cargo_host();
    guests.current_dir(&root).args([
        "test",
        "--release",
        "--workspace",
        "--manifest-path",
        "plugins/Cargo.toml",
    ]);
    for fixture in self::guests(&root)?
        .iter()
        .filter(|g| g.manifest_dir.starts_with(root.join("tests/fixtures")))
    {
        guests.args(["--exclude", &fixture.name]);
    }
    run(guests, "guest unit tests")?;
    let mut host = cargo_host();
    host.current_dir(&root)
        .args(["test", "--release", "--workspace"])
        .args(args);
    with_guest_env(&mut host, dirs);
    run(host, "cargo test")
}

fn serve(dirs: &GuestDirs, args: &[String]) -> Result<()> {
    let mut server = cargo_host();
    server
        .current_dir(repo_root())
        .args([
            "run",
            "--release",
            "-p",
            "wayline",
            "--",
            "serve",
            "--plugins",
        ])
        .arg(&dirs.plugins)
        .arg("--channels")
        .arg(repo_root().join("examples/channels"))
        .arg("--templates")
        .arg(repo_root().join("examples/templates"))
        .arg("--scoring")
        .arg(repo_root().join("examples/scoring"))
        .arg("--audiences")
        .arg(repo_root().join("examples/audiences"))
        .arg("--lifecycle")
        .arg(repo_root().join("examples/lifecycle/stages.json"))
        .arg("--journeys")
        .arg(repo_root().join("examples/journeys"))
        .args(args);
    with_guest_env(&mut server, dirs);
    run(server, "wayline serve")
}
