//! tansu, a Kafka-compatible broker, started per test on a free loopback port.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    consumer::{BaseConsumer, Consumer},
};

use opsmesh_runtime::bus::{KafkaBus, KafkaSettings};

/// Where the test command installs tansu; `OPSMESH_TANSU` overrides.
fn tansu_binary() -> PathBuf {
    if let Ok(path) = std::env::var("OPSMESH_TANSU") {
        return PathBuf::from(path);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(home).join(".cache/opsmesh/tools/bin/tansu");
    assert!(
        cached.exists(),
        "tansu not found at {} (set OPSMESH_TANSU, or run scripts/test.sh, which installs it)",
        cached.display()
    );
    cached
}

pub enum Storage {
    Memory,
    /// Data and committed offsets survive a broker restart.
    Sqlite(PathBuf),
}

pub struct Broker {
    port: u16,
    storage: Storage,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub fn start(storage: Storage) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut broker = Self {
            port: crate::free_port(),
            storage,
            child: None,
            log: dir.path().join("tansu.log"),
            _dir: dir,
        };
        broker.launch();
        broker
    }

    pub fn memory() -> Self {
        Self::start(Storage::Memory)
    }

    /// A broker whose data lives in SQLite under a fresh temp dir.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.keep().join("tansu.db");
        Self::start(Storage::Sqlite(path))
    }

    fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let storage = match &self.storage {
            Storage::Memory => "memory://tansu/".to_owned(),
            // tansu reads the path after `sqlite://` relative to its working directory.
            Storage::Sqlite(path) => format!(
                "sqlite://{}",
                path.file_name().expect("file name").to_string_lossy()
            ),
        };
        let workdir = match &self.storage {
            Storage::Sqlite(path) => path.parent().expect("parent").to_owned(),
            Storage::Memory => self._dir.path().to_owned(),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log");
        let child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &storage])
            .current_dir(workdir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Blocks until the broker answers a metadata request.
    fn wait_ready(&self) {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .set("group.id", "opsmesh-test-probe")
            .create()
            .expect("probe client");
        let started = Instant::now();
        while consumer
            .fetch_metadata(None, Duration::from_millis(500))
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not answer metadata within 30s; log: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kafka_settings(&self) -> KafkaSettings {
        KafkaSettings {
            brokers: self.address(),
            partitions: 3,
            ..KafkaSettings::default()
        }
    }

    /// A bus client for the test itself (producing raw bytes, reading topics).
    pub fn bus(&self) -> KafkaBus {
        KafkaBus::new(&self.kafka_settings(), "opsmesh-test").expect("kafka client")
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        if let Storage::Sqlite(path) = &self.storage
            && let Some(dir) = path.parent()
        {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
