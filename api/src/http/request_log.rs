//! One span per request and one line per response, like `poem::middleware::Tracing` but without
//! what must never reach a log: the values of credential query parameters (`?token=` links live
//! for years) are replaced by `REDACTED`, headers (`Authorization`) are never logged, and the
//! client address is the socket's, not a forgeable `X-Forwarded-For`.

use std::{sync::Arc, time::Instant};

use levelup_common::runtime::telemetry::redact_uri;
use poem::{Endpoint, IntoResponse, Request, Response};
use tracing::Instrument;

pub(crate) async fn log<E: Endpoint>(endpoint: Arc<E>, request: Request) -> poem::Result<Response> {
    let span = tracing::info_span!(
        "request",
        remote_addr = %request.remote_addr(),
        method = %request.method(),
        uri = %redact_uri(&request.original_uri().to_string()),
    );
    async move {
        let started = Instant::now();
        let result = endpoint.call(request).await.map(IntoResponse::into_response);
        let duration = started.elapsed();
        match &result {
            Ok(response) => tracing::info!(status = %response.status(), ?duration, "response"),
            // A handler's `ApiError`: a finished problem response (a 5xx was logged where it arose).
            Err(err) if err.is_from_response() => tracing::info!(status = %err.status(), ?duration, "response"),
            Err(err) => tracing::info!(status = %err.status(), error = %err, ?duration, "error"),
        }
        result
    }
    .instrument(span)
    .await
}
