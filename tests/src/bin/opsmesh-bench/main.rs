//! Benchmarks, printed rather than asserted (scripts/bench.sh drives them):
//!
//! - `bus`: publish→consume throughput and latency of the Kafka bus (a real broker) or the
//!   in-memory bus, with 1 KiB messages;
//! - `http`: a load generator for the receiver (signed Splunk alerts) and for Prometheus
//!   Alertmanager (`POST /api/v2/alerts`, one alert per request), printing requests/s and
//!   latency percentiles;
//! - `e2e`: alerts at a fixed rate through the whole mesh, 202 -> their events in HEC;
//! - `incidents`: distinct incidents as fast as senders can post them, 202 -> the incident's
//!   terminal ledger record indexed by HEC: incidents per second and latency percentiles.
//! - `chaos`: the chaos suite's harness (five processes on tansu with SQLite, the cluster
//!   simulator, HEC), larger: alerts accepted, lost, duplicated, models changed, time to settle.

mod bus;
mod chaos;
mod e2e;
mod http;
mod incidents;
mod mesh;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn usage() -> ! {
    eprintln!(
        "usage:\n  opsmesh-bench bus (--kafka BROKERS | --memory) [--messages N] [--size BYTES] [--in-flight N]\n  \
         opsmesh-bench http --url URL --kind splunk|alertmanager [--secret S] [--concurrency C] [--seconds S] [--warmup S] [--rate R]\n  \
         opsmesh-bench e2e (--kafka BROKERS | --memory) [--alerts N] [--rate R] [--hec-linger DURATION]\n  \
         opsmesh-bench incidents (--kafka BROKERS | --memory) [--alerts N] [--concurrency C] [--hec-linger DURATION]\n  \
         opsmesh-bench chaos [--alerts N] [--models M] [--senders C] [--storm SECONDS] [--hec-outage SECONDS] [--seed S] [--no-faults]"
    );
    std::process::exit(2)
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
    arg(args, name)
        .map(|v| v.parse().unwrap_or_else(|_| usage()))
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The HTTP load generator runs on one thread: pinned to one core, a multi-thread
    // runtime would only add cross-thread wake-ups to the cost of every request.
    let mut runtime = match args.first().map(String::as_str) {
        Some("http") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build().expect("tokio runtime");
    runtime.block_on(async {
        match args.first().map(String::as_str) {
            Some("bus") => bus::bus(&args).await,
            Some("http") => http::http(&args).await,
            Some("e2e") => e2e::e2e(&args).await,
            Some("incidents") => incidents::incidents(&args).await,
            Some("chaos") => chaos::chaos(&args).await,
            _ => usage(),
        }
    });
}

fn micros_since_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

struct Summary {
    count: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

impl Summary {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let index = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[index] as f64 / 1000.0
    }

    fn print(&mut self, label: &str, unit: &str) {
        self.latencies_us.sort_unstable();
        println!(
            "{label}: {} {unit} in {:.2}s = {:.0} {unit}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            self.count,
            self.elapsed.as_secs_f64(),
            self.count as f64 / self.elapsed.as_secs_f64(),
            self.percentile(0.50),
            self.percentile(0.99),
            self.percentile(1.0),
        );
    }
}
