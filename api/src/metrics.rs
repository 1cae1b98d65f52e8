//! `GET /metrics`: Prometheus text, including HTTP request counts and latency by route and status.

use std::{sync::Arc, time::Instant};

use poem::{Endpoint, IntoResponse, Request, Response};

/// Every metric in the Prometheus text exposition format (version 0.0.4).
pub fn render() -> String {
    levelup_common::telemetry::metrics_handle().render()
}

/// The path with every segment that carries a value (digits: ids, ISO weeks) replaced by
/// `:param`, so the label set stays small.
fn route_label(path: &str) -> String {
    path.split('/')
        .map(|segment| if segment.chars().any(|c| c.is_ascii_digit()) { ":param" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// Counts and times every request, labelled by method, route (see [`route_label`]) and status.
pub async fn record<E: Endpoint>(endpoint: Arc<E>, request: Request) -> poem::Result<Response> {
    let method = request.method().to_string();
    let route = route_label(request.uri().path());
    let started = Instant::now();
    let result = endpoint.call(request).await.map(IntoResponse::into_response);
    let status = match &result {
        Ok(response) => response.status().as_u16(),
        Err(err) => err.status().as_u16(),
    };
    let labels = [("method", method), ("route", route), ("status", status.to_string())];
    ::metrics::counter!("levelup_http_requests_total", &labels).increment(1);
    ::metrics::histogram!("levelup_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    result
}
