//! `/readyz` over HTTP from the instant an application starts serving: two components keep
//! their state on topics (as the diagnoser and the remediator do in one `opsmesh run`), and
//! each starts loading it only when the test lets it. The application is not ready until
//! both states are loaded, however long their components take to begin, and ready after.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::future::BoxFuture;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{Notify, mpsc},
};
use tokio_util::sync::CancellationToken;

use opsmesh_runtime::{
    Application, BoxError, Bus, Component, ConfigTree, Context,
    bus::{MemoryBus, MemorySettings, Outgoing, StateTopic, TopicFollower},
};

/// Records on each state topic; applying one takes a while, so loading is not instant.
const RECORDS: usize = 20;
const APPLY_TIME: Duration = Duration::from_millis(5);
const LIMIT: Duration = Duration::from_secs(30);

/// A component that keeps its state on `topic`: declared when it is built, loaded once the
/// test notifies `release` (it reports on `holding` that it runs and waits).
struct Loader {
    name: &'static str,
    ctx: Context,
    state: StateTopic,
    release: Arc<Notify>,
    holding: mpsc::UnboundedSender<&'static str>,
    applied: Arc<AtomicUsize>,
}

impl Loader {
    fn new(
        name: &'static str,
        ctx: &Context,
        holding: &mpsc::UnboundedSender<&'static str>,
    ) -> Self {
        Self {
            name,
            ctx: ctx.clone(),
            state: StateTopic::declare(&ctx.health, name),
            release: Arc::new(Notify::new()),
            holding: holding.clone(),
            applied: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn loaded(&self) -> bool {
        self.applied.load(Ordering::SeqCst) == RECORDS
    }
}

impl Component for Loader {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run(
        self: Arc<Self>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(async move {
            self.holding.send(self.name).expect("the test listens");
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                () = self.release.notified() => {}
            }
            let applied = self.applied.clone();
            let apply = move |_: &opsmesh_runtime::Received| {
                std::thread::sleep(APPLY_TIME);
                applied.fetch_add(1, Ordering::SeqCst);
            };
            let bus = self.ctx.bus().clone();
            let settings = &self.ctx.settings.bus.reader;
            if TopicFollower::start(bus, &self.state, settings, apply, &shutdown)
                .await
                .is_some()
            {
                shutdown.cancelled().await;
            }
            Ok(())
        })
    }
}

/// `GET /readyz` on `admin`: the status and the JSON body.
async fn readyz(admin: SocketAddr) -> (u16, Value) {
    let mut stream = TcpStream::connect(admin).await.expect("admin listener");
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("request sent");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("response read");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("status line: {head}"));
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// The error `/readyz` reports for check `name` (`None` when it passes).
fn check_error(readiness: &Value, name: &str) -> Option<String> {
    let check = readiness["checks"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no check {name} in {readiness}"));
    check["error"].as_str().map(str::to_owned)
}

/// Polls `/readyz` until `done` holds for an answer, checking `every` answer on the way.
async fn poll_until(
    admin: SocketAddr,
    what: &str,
    mut every: impl FnMut(u16, &Value),
    mut done: impl FnMut(u16, &Value) -> bool,
) -> usize {
    let started = tokio::time::Instant::now();
    let mut polls = 0;
    loop {
        let (status, readiness) = readyz(admin).await;
        polls += 1;
        every(status, &readiness);
        if done(status, &readiness) {
            return polls;
        }
        assert!(
            started.elapsed() < LIMIT,
            "{what} not within {LIMIT:?}: {readiness}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_from_the_first_probe_until_every_component_loaded_its_state() {
    let tree = ConfigTree::load_with_env(
        None,
        [
            ("OPSMESH__BUS__KIND", "memory"),
            ("OPSMESH__HTTP__LISTEN", "127.0.0.1:0"),
            ("OPSMESH__HTTP__ADMIN_LISTEN", "127.0.0.1:0"),
            ("OPSMESH__HTTP__WORKERS", "1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    )
    .expect("configuration");
    let bus = MemoryBus::new(&MemorySettings::default());
    for topic in ["incidents", "ledger"] {
        for n in 0..RECORDS {
            bus.publish(Outgoing {
                topic: topic.into(),
                key: format!("k{n}"),
                payload: n.to_string().into_bytes(),
                headers: Vec::new(),
            })
            .await
            .expect("published");
        }
    }
    let ctx = Context::new(tree.settings().expect("settings"), Arc::new(bus));
    let (holding, mut held) = mpsc::unbounded_channel();
    let incidents = Arc::new(Loader::new("incidents", &ctx, &holding));
    let ledger = Arc::new(Loader::new("ledger", &ctx, &holding));
    let app = Application::build(ctx, vec![incidents.clone(), ledger.clone()]).expect("builds");
    let admin = app.admin_addr();
    let stop = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());

    // From the first probe, while both components run but hold their loading back: not ready,
    // each state "loading state".
    let not_ready = |status: u16, readiness: &Value| {
        assert_eq!(
            status, 503,
            "ready before any state was loaded: {readiness}"
        );
        assert_eq!(readiness["ready"], false, "{readiness}");
        for state in ["state:incidents", "state:ledger"] {
            assert_eq!(
                check_error(readiness, state).as_deref(),
                Some("loading state"),
                "{readiness}"
            );
        }
    };
    let mut both_holding = 0;
    let mut polls_since = 0;
    poll_until(admin, "both components holding", not_ready, |_, _| {
        while held.try_recv().is_ok() {
            both_holding += 1;
        }
        if both_holding == 2 {
            polls_since += 1;
        }
        polls_since > 10
    })
    .await;

    // One state loaded: still not ready for the other.
    incidents.release.notify_one();
    poll_until(
        admin,
        "the incidents loaded",
        |status, readiness| {
            assert_eq!(status, 503, "ready with the ledger not loaded: {readiness}");
            assert!(!ledger.loaded(), "the ledger is held back");
            if check_error(readiness, "state:incidents").is_none() {
                assert!(
                    incidents.loaded(),
                    "incidents ready before loaded: {readiness}"
                );
            }
        },
        |_, readiness| check_error(readiness, "state:incidents").is_none(),
    )
    .await;

    // Both loaded: ready.
    ledger.release.notify_one();
    poll_until(
        admin,
        "ready",
        |status, readiness| {
            if status == 200 {
                assert!(
                    ledger.loaded(),
                    "ready before the ledger loaded: {readiness}"
                );
            } else {
                assert_eq!(
                    check_error(readiness, "state:ledger").as_deref(),
                    Some("loading state"),
                    "{readiness}"
                );
            }
        },
        |status, _| status == 200,
    )
    .await;
    assert!(incidents.loaded() && ledger.loaded());

    stop.cancel();
    running
        .await
        .expect("application task")
        .expect("stopped cleanly");
}
