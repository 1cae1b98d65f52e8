//! `GET /metrics`: Prometheus text, including HTTP request counts and latency by route and status.

use std::{sync::Arc, time::Instant};

use poem::{Endpoint, IntoResponse, PathPattern, Request, Response, http::Method};

/// Every metric in the Prometheus text exposition format (version 0.0.4).
pub(crate) fn render() -> String {
    levelup_common::runtime::telemetry::metrics_handle().render()
}

/// `GET /metrics` on `LEVELUP_METRICS_BIND`.
#[poem::handler]
pub(crate) fn serve_metrics() -> poem::Response {
    poem::Response::builder().content_type("text/plain; version=0.0.4").body(render())
}

/// The matched route's path template (poem records it on the response), or `unmatched` when no
/// route answered (unknown paths, requests refused by the guards), so the label set is bounded
/// by the routes we serve, whatever paths clients send.
fn route_label(response: Option<&PathPattern>) -> String {
    match response.map(|p| p.0.as_ref()) {
        Some(pattern) if pattern.len() > 1 => pattern.to_owned(),
        _ => "unmatched".to_owned(),
    }
}

/// The standard methods by name; anything else (clients may send any token) is `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Counts and times every request, labelled by method, route (see [`route_label`]) and status.
pub(crate) async fn record<E: Endpoint>(endpoint: Arc<E>, request: Request) -> poem::Result<Response> {
    let method = method_label(request.method());
    let started = Instant::now();
    let result = endpoint.call(request).await.map(IntoResponse::into_response);
    let (status, route) = match &result {
        Ok(response) => (response.status().as_u16(), route_label(response.data::<PathPattern>())),
        Err(err) => (err.status().as_u16(), route_label(err.data::<PathPattern>())),
    };
    let labels = [("method", method.to_owned()), ("route", route), ("status", status.to_string())];
    ::metrics::counter!("levelup_http_requests_total", &labels).increment(1);
    ::metrics::histogram!("levelup_http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
        assert_eq!(method_label(&Method::GET), "GET");
        assert_eq!(route_label(None), "unmatched");
        assert_eq!(route_label(Some(&PathPattern("/".into()))), "unmatched");
        assert_eq!(route_label(Some(&PathPattern("/v1/challenges/:id".into()))), "/v1/challenges/:id");
    }
}
