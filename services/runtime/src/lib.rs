//! The runtime every opsmesh service shares: layered configuration, tracing, the Prometheus
//! registry, `/healthz` `/readyz` `/metrics`, graceful shutdown and the bus.

pub mod app;
pub mod backoff;
pub mod body_deadline;
pub mod bus;
pub mod config;
pub mod health;
pub mod keyed_lock;
pub mod launcher;
pub mod metrics;
pub mod problem;
pub mod secret;
pub mod settings;
pub mod shutdown;
pub mod signing;
pub mod telemetry;

pub use app::{Application, BoxError, Component, Context, ServiceDef, StartError};
pub use bus::{Bus, Handler, HandlerError, Publisher, Received};
pub use config::{ConfigError, ConfigTree, Validate};
pub use settings::Settings;

/// Every opsmesh process allocates through mimalloc: the request paths allocate many small,
/// short-lived buffers, which glibc malloc serves markedly slower (see `scripts/bench.sh`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
