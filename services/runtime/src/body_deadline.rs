//! `http.body_timeout`: a request body that has not fully arrived this long after the request
//! reached its handler fails to read, so a client dribbling a body byte by byte cannot hold a
//! worker's buffer (and its connection) open. actix-web bounds the request head
//! (`client_request_timeout`), not the body.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use actix_web::{dev::Payload, error::PayloadError, web::Bytes};
use futures::{Stream, StreamExt};

/// The payload, failing with [`PayloadError::Io`] of kind [`io::ErrorKind::TimedOut`] once
/// its deadline passes while the body is still arriving.
pub struct BodyDeadline {
    inner: Payload,
    started: tokio::time::Instant,
    timeout: Duration,
    /// Armed the first time the body is not there yet: most bodies arrive with their head
    /// and never need a timer.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    expired: bool,
}

impl BodyDeadline {
    pub fn new(inner: Payload, timeout: Duration) -> Self {
        Self {
            inner,
            started: tokio::time::Instant::now(),
            timeout,
            timer: None,
            expired: false,
        }
    }

    /// Whether a payload error is this deadline passing.
    pub fn is_timeout(error: &PayloadError) -> bool {
        matches!(error, PayloadError::Io(e) if e.kind() == io::ErrorKind::TimedOut)
    }
}

impl Stream for BodyDeadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.expired {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.inner.poll_next_unpin(cx) {
            return Poll::Ready(item);
        }
        let deadline = self.started + self.timeout;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.expired = true;
                Poll::Ready(Some(Err(PayloadError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the request body did not arrive within {:?} (http.body_timeout)",
                        self.timeout
                    ),
                )))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_that_stops_arriving_fails_at_the_deadline() {
        let never: Payload = Payload::Stream {
            payload: Box::pin(futures::stream::pending::<Result<Bytes, PayloadError>>()),
        };
        let started = std::time::Instant::now();
        let mut body = BodyDeadline::new(never, Duration::from_millis(100));
        let error = body.next().await.expect("an item").unwrap_err();
        assert!(BodyDeadline::is_timeout(&error), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(body.next().await.is_none(), "nothing after the deadline");
    }

    #[tokio::test]
    async fn a_body_that_arrived_in_time_reads_whole() {
        let mut body = BodyDeadline::new(
            Payload::from(Bytes::from_static(b"{}")),
            Duration::from_millis(100),
        );
        assert_eq!(
            body.next().await.unwrap().unwrap(),
            Bytes::from_static(b"{}")
        );
        assert!(body.next().await.is_none());
    }
}
