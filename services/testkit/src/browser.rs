//! Headless Chromium for the console's browser tests: the browser (Debian `chromium`,
//! installed with apt when missing), playwright-core from a lock file, and where screenshots
//! are kept. Fails, never skips, when they cannot be had.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// `/usr/bin/chromium` (or `OPSMESH_CHROMIUM`), installed from Debian when missing.
pub fn chromium() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("OPSMESH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()),
    );
    if !path.exists() {
        eprintln!("{} is missing; installing Debian chromium", path.display());
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        let mut apt = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        let status = apt
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        eprintln!("apt-get install chromium: {status:?}");
    }
    assert!(
        path.exists(),
        "Chromium is required for the console test and could not be installed at {} \
         (apt-get install -y chromium, or set OPSMESH_CHROMIUM)",
        path.display()
    );
    path
}

/// `dir/node_modules` (playwright-core) from `dir`'s lock file, unless already there.
pub fn node_modules(dir: &Path) {
    if dir
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .status()
        .expect("npm runs (Node.js is required for the console test)");
    assert!(status.success(), "npm ci in {} failed", dir.display());
}

/// `target/console-screenshots/<test>/<unix time>/` for this run of `test`.
pub fn screenshot_dir(test: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test binary> → target/
    let target = exe.ancestors().nth(3).expect("target directory").to_owned();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    target
        .join("console-screenshots")
        .join(test)
        .join(stamp.to_string())
}

/// Prints each screenshot's path and lists them in `<test>/LATEST` next to `dir`.
pub fn record_screenshots(dir: &Path, paths: &[&str]) {
    for shot in paths {
        eprintln!("console screenshot: {shot}");
    }
    if let Some(parent) = dir.parent() {
        let _ = std::fs::write(parent.join("LATEST"), paths.join("\n") + "\n");
    }
}
