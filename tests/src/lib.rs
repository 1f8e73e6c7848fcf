//! Test support shared by the end-to-end tests: a real Kafka-protocol broker (tansu), the
//! opsmesh binaries as OS processes; the Splunk HEC test server and [`eventually`] come from
//! opsmesh-testkit.

pub mod broker;
pub mod chaos;
pub mod demo;
pub mod in_process;
pub mod keys;
pub mod mesh;
pub mod process;

pub use opsmesh_testkit::{eventually, hec};

use std::{net::TcpListener, path::PathBuf};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// `target/<profile>/` of this build, where the opsmesh binaries are.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test-binary>, or target/<profile>/opsmesh-bench
    let dir = exe.parent().expect("target directory");
    if dir.ends_with("deps") {
        dir.parent().expect("target directory").to_owned()
    } else {
        dir.to_owned()
    }
}

/// Path of a workspace binary, with a clear message when it was not built.
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (`cargo build --workspace --bins`, which \
         scripts/test.sh does)",
        path.display()
    );
    path
}

/// The checkout's root directory.
pub fn workspace_root() -> PathBuf {
    // Read at run time, not with `env!`: cargo does not rebuild when only the checkout's path
    // changes, so a target directory shared by two checkouts would keep the other's path.
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo")).join("..")
}

/// Path of a real-format Splunk / Alertmanager payload kept in `tests/samples/`.
pub fn sample(name: &str) -> PathBuf {
    workspace_root().join("tests/samples").join(name)
}
