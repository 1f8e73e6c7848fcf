//! Remembering that the brokers refused our credentials. librdkafka reports a failed SASL or
//! TLS handshake only through its error callback and keeps retrying, so a request made with
//! wrong credentials would otherwise end as a bare timeout; with this, readiness and publish
//! say that authentication failed and why.

use std::sync::{Arc, Mutex};

use rdkafka::{
    ClientContext,
    error::{KafkaError, RDKafkaErrorCode},
};

/// The producer's client context: logs librdkafka's errors and keeps the latest
/// authentication failure until a request succeeds again. Clones share it.
#[derive(Clone, Default)]
pub(super) struct AuthWatch {
    failure: Arc<Mutex<Option<String>>>,
}

impl AuthWatch {
    /// Why the brokers last refused us, if they did since the last success.
    pub(super) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A request went through: the credentials are accepted (again).
    pub(super) fn clear(&self) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl ClientContext for AuthWatch {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if matches!(
            code,
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
        ) {
            tracing::error!(%reason, "Kafka refused opsmesh's credentials (bus.kafka.security)");
            *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.to_owned());
        } else {
            tracing::error!(%error, %reason, "librdkafka error");
        }
    }
}
