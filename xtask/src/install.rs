//! `cargo xtask install`: the binary, the systemd unit, the example configuration and the
//! operator docs, where docs/operations.md says they go. Re-running it upgrades the binary
//! and unit and never overwrites an operator's configuration.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where to install.
#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// Prefix of the binary and docs (`<prefix>/bin/collector`).
    #[arg(long, default_value = "/usr/local")]
    prefix: PathBuf,
    /// Stage everything under this directory instead of `/` (packaging, tests).
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Install what is already built (`target/release/collector`) without building.
    #[arg(long)]
    no_build: bool,
}

fn under(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Write beside and rename: a running daemon's binary is replaced, not truncated.
    let tmp = to.with_extension("xtask-new");
    std::fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, to).with_context(|| format!("installing {}", to.display()))?;
    eprintln!("xtask: installed {}", to.display());
    Ok(())
}

pub fn install(args: &InstallArgs) -> Result<()> {
    if !args.no_build {
        crate::build()?;
    }
    let root = crate::root();
    let binary = root.join("target/release/collector");
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: run `cargo xtask build` (or drop --no-build)",
        binary.display()
    );
    let bin_path = args.prefix.join("bin/collector");
    copy(&binary, &under(&args.root, &bin_path), 0o755)?;

    let unit = std::fs::read_to_string(root.join("packaging/collector.service"))?
        .replace("/usr/local/bin/collector", &bin_path.display().to_string());
    let unit_path = under(
        &args.root,
        Path::new("/etc/systemd/system/collector.service"),
    );
    std::fs::create_dir_all(unit_path.parent().unwrap())?;
    std::fs::write(&unit_path, unit)?;
    eprintln!("xtask: installed {}", unit_path.display());

    let config = under(&args.root, Path::new("/etc/collector/config.toml"));
    let example = root.join("collector.example.toml");
    if config.exists() {
        copy(
            &example,
            &config.with_file_name("config.example.toml"),
            0o644,
        )?;
        eprintln!(
            "xtask: kept the existing {}; compare it with config.example.toml",
            config.display()
        );
    } else {
        copy(&example, &config, 0o644)?;
    }
    let docs = under(&args.root, &args.prefix.join("share/doc/collector"));
    for doc in ["operations.md", "kernel.md", "events.md"] {
        let from = root.join("docs").join(doc);
        if from.exists() {
            copy(&from, &docs.join(doc), 0o644)?;
        }
    }
    if args.root == Path::new("/") && Path::new("/run/systemd/system").exists() {
        crate::run(std::process::Command::new("systemctl").arg("daemon-reload"))?;
        eprintln!("xtask: start it with `systemctl enable --now collector`");
    } else {
        eprintln!("xtask: systemd is not running here; the unit is in place for when it is");
    }
    Ok(())
}
