//! Headless Chromium for the console's browser tests: the browser (Debian `chromium`,
//! installed with apt when missing), playwright-core from a lock file, and where screenshots
//! are kept. Fails, never skips, when they cannot be had.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

/// `/usr/bin/chromium` (or `OPSMESH_CHROMIUM`), installed from Debian when missing.
fn chromium() -> PathBuf {
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
fn node_modules(dir: &Path) {
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

/// What a browser script reported: its last stdout line as JSON, and the screenshots it took.
pub struct BrowserRun {
    pub report: serde_json::Value,
    pub screenshots: Vec<PathBuf>,
}

/// Runs the playwright script `script` (in its folder, with `node_modules` there) in headless
/// Chromium, with `env` and `SCREENSHOT_DIR` = `target/console-screenshots/<test>/<unix
/// time>/`, for at most `limit`; prints the screenshots' paths and lists them in
/// `<test>/LATEST`; panics, with the script's output, unless it exits 0.
pub async fn run_script(
    script: &Path,
    test: &str,
    env: &[(&str, &str)],
    limit: Duration,
) -> BrowserRun {
    let chromium = chromium();
    let dir = script.parent().expect("the script's folder");
    node_modules(dir);
    let shots = screenshot_dir(test);
    let output = tokio::process::Command::new("node")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().copied())
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, output)
        .await
        .unwrap_or_else(|_| panic!("the browser script did not finish within {limit:?}"))
        .expect("node runs (Node.js is required for the console test)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_default();
    let screenshots: Vec<PathBuf> = report["screenshots"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().map(PathBuf::from))
        .collect();
    for shot in &screenshots {
        eprintln!("console screenshot: {}", shot.display());
    }
    if let Some(parent) = shots.parent() {
        let list: Vec<String> = screenshots
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        let _ = std::fs::write(parent.join("LATEST"), list.join("\n") + "\n");
    }
    assert!(
        output.status.success(),
        "browser script {} failed ({}):\nstdout: {stdout}\nstderr: {}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    BrowserRun {
        report,
        screenshots,
    }
}

/// `target/console-screenshots/<test>/<unix time>/`.
fn screenshot_dir(test: &str) -> PathBuf {
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
