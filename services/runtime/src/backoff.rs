//! Exponential backoff with jitter, shared by every retry loop of the runtime and services.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The pause before retry number `attempt` (1-based): `base` doubled per attempt, capped at
/// `max`, then scaled by a random factor in [0.5, 1.0) so replicas that failed together do
/// not retry in lockstep.
pub fn delay(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(16)));
    exp.min(max).mul_f64(0.5 + rand::random::<f64>() / 2.0)
}

/// `stop` came first: the retry loop gives up.
#[derive(Debug)]
pub struct Interrupted;

/// Sleeps [`delay`]`(base, max, attempt)`; `Err` when `stop` interrupts it.
pub async fn pause(
    base: Duration,
    max: Duration,
    attempt: u32,
    stop: &CancellationToken,
) -> Result<(), Interrupted> {
    tokio::select! {
        () = stop.cancelled() => Err(Interrupted),
        () = tokio::time::sleep(delay(base, max, attempt)) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_up_to_the_cap_with_jitter() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for _ in 0..100 {
            let first = delay(base, max, 1);
            assert!(first >= base / 2 && first < base, "{first:?}");
            let third = delay(base, max, 3);
            assert!(third >= base * 2 && third < base * 4, "{third:?}");
            let late = delay(base, max, 40);
            assert!(late >= max / 2 && late < max, "{late:?}");
        }
    }
}
