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

/// A SCRAM-SHA-512 user the broker knows (`tansu user create`).
#[derive(Debug, Clone)]
pub struct ScramUser {
    pub name: String,
    pub password: String,
}

pub struct Broker {
    port: u16,
    storage: Storage,
    /// With a user, the broker requires SASL authentication and probes readiness as that user.
    authenticate_as: Option<ScramUser>,
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
            authenticate_as: None,
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

    /// A SQLite broker that requires SASL/SCRAM-SHA-512 from every client and knows `users`.
    /// tansu 0.6 stores SCRAM credentials through its own Kafka API, which it refuses before
    /// authentication: the users are created on an open broker, which then restarts with
    /// authentication on over the same storage.
    pub fn sqlite_with_scram(users: &[ScramUser]) -> Self {
        let mut broker = Self::sqlite();
        for user in users {
            let output = Command::new(tansu_binary())
                .args(["user", "create", "--mechanism", "scram512", "--broker"])
                .arg(format!("tcp://{}", broker.address()))
                .args([&user.name, &user.password])
                .output()
                .expect("tansu user create runs");
            assert!(
                output.status.success(),
                "tansu user create {}: {}",
                user.name,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        broker.authenticate_as = Some(users.first().expect("at least one user").clone());
        broker.restart();
        broker
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
            .args(self.authenticate_as.is_some().then_some("--authentication"))
            .current_dir(workdir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        self.child = Some(child);
        self.wait_ready();
        if let Storage::Sqlite(path) = &self.storage {
            index_headers(path);
        }
    }

    /// Blocks until the broker answers a metadata request.
    fn wait_ready(&self) {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", self.address())
            .set("group.id", "opsmesh-test-probe");
        if let Some(user) = &self.authenticate_as {
            config
                .set("security.protocol", "sasl_plaintext")
                .set("sasl.mechanism", "SCRAM-SHA-512")
                .set("sasl.username", &user.name)
                .set("sasl.password", &user.password);
        }
        let consumer: BaseConsumer = config.create().expect("probe client");
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

/// tansu 0.6's SQLite schema has no index on `header`, and it looks a record's headers up by
/// `(topition, offset_id)` once per fetched record: every fetch scans the whole table, so
/// fetching costs grow with the square of what the broker holds (measured: 3.6 ms per record
/// at 9,000 records, fetches over 11 s, and every consumer group of the mesh losing its
/// session in a loop). opsmesh puts three headers on every message, as its contract says. The
/// index below is what the schema lacks; without it this broker, not the code under test, is
/// what a longer test measures. Anyone running tansu with SQLite wants it too (README).
fn index_headers(db: &std::path::Path) {
    let started = Instant::now();
    loop {
        let created = rusqlite::Connection::open(db).and_then(|c| {
            c.busy_timeout(Duration::from_secs(5))?;
            c.execute_batch(HEADER_INDEX)
        });
        match created {
            Ok(()) => return,
            // tansu creates its tables as it starts; wait for them.
            Err(err) if started.elapsed() < Duration::from_secs(30) => {
                eprintln!("tansu's header table not ready yet ({err}); retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(err) => panic!("indexing tansu's header table: {err}"),
        }
    }
}

/// The index tansu 0.6's SQLite schema lacks (see `index_headers`).
pub const HEADER_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS header_topition_offset ON header (topition, offset_id);";

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
