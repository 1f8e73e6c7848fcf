//! Live updates for the console's pages (server-sent events).

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, http::header, web};
use futures::StreamExt;

use super::Console;

/// Server-sent events: one `update` event per change to any incident, a comment every 15 s.
pub(super) async fn events(console: web::Data<Console>, req: HttpRequest) -> HttpResponse {
    if let Err(refusal) = console.authenticate(&req) {
        return refusal.response();
    }
    let updates = tokio_stream_from(console.store.subscribe());
    let stop = console.shutdown.clone();
    let heartbeat = futures::stream::unfold((), |()| async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        Some((web::Bytes::from_static(b": keep-alive\n\n"), ()))
    });
    let hello = futures::stream::once(async { web::Bytes::from_static(b"retry: 3000\n\n") });
    let body = hello
        .chain(futures::stream::select(updates, heartbeat))
        .take_until(async move { stop.cancelled_owned().await })
        .map(Ok::<_, std::convert::Infallible>);
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body)
}

fn tokio_stream_from(
    receiver: tokio::sync::broadcast::Receiver<crate::timeline::Update>,
) -> impl futures::Stream<Item = web::Bytes> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        match receiver.recv().await {
            Ok(update) => {
                let data = serde_json::to_string(&update).unwrap_or_default();
                Some((
                    web::Bytes::from(format!("event: update\ndata: {data}\n\n")),
                    receiver,
                ))
            }
            // A slow client missed updates: tell it to refresh whatever it shows.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => Some((
                web::Bytes::from_static(b"event: update\ndata: {\"incident_id\":null}\n\n"),
                receiver,
            )),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => None,
        }
    })
}
