//! `tracing` set-up: human-readable or JSON lines, filtered by `LEVELUP_LOG` (`RUST_LOG` syntax).
//!
//! Policy: log subscriber ids, never raw email addresses; skip secrets and bodies in
//! `#[instrument]`.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::LogFormat;

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops).
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry
            .with(fmt::layer().json().flatten_event(true).with_current_span(true).with_span_list(false))
            .try_init(),
        // Colour only for a person at a terminal: files, pipes and log collectors get plain text.
        LogFormat::Human => {
            use std::io::IsTerminal;
            registry.with(fmt::layer().with_target(false).with_ansi(std::io::stdout().is_terminal())).try_init()
        }
    };
}

/// Masks an address for logs: `j***@example.com`.
pub fn redact_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().unwrap_or('*');
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

/// Bucket bounds (seconds) of every histogram: request and job latencies, 1 ms to 60 s.
const LATENCY_BUCKETS: &[f64] = &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Query parameters whose values are credentials: never logged.
const CREDENTIAL_PARAMETERS: &[&str] =
    &["token", "access_token", "key", "api_key", "apikey", "secret", "password", "signature", "sig", "code"];

/// `uri` (a path with an optional query) with the values of credential query parameters replaced
/// by `REDACTED`, for logs and traces. Other parameters are kept as sent.
pub fn redact_uri(uri: &str) -> String {
    let Some((path, query)) = uri.split_once('?') else { return uri.to_owned() };
    let redacted: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            let decoded = url::form_urlencoded::parse(name.as_bytes()).next().map(|(n, _)| n.to_ascii_lowercase());
            if decoded.is_some_and(|n| CREDENTIAL_PARAMETERS.contains(&n.as_str())) {
                format!("{name}=REDACTED")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{path}?{}", redacted.join("&"))
}

static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle, whose `render()`
/// is the `/metrics` text.
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets(LATENCY_BUCKETS)
                .expect("latency buckets are not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Histogram samples are buffered until they are drained into their buckets; without a
            // scraper that would be never. Drain them as we go.
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("starting the metrics upkeep thread");
            // Another recorder may exist (e.g. several services in one test process): keep ours
            // as a handle anyway so rendering works.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Serves Prometheus metrics on `bind` (`GET /metrics`) for processes without an HTTP API
/// (worker, scheduler), using the exporter's own listener.
pub fn serve_metrics(bind: std::net::SocketAddr) -> anyhow::Result<()> {
    use anyhow::Context;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(bind)
        .install()
        .with_context(|| format!("starting the metrics listener on LEVELUP_METRICS_BIND={bind}"))?;
    tracing::info!(%bind, "metrics listening");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_query_values_are_redacted() {
        assert_eq!(redact_uri("/level?token=v1.t1.abc.def"), "/level?token=REDACTED");
        assert_eq!(
            redact_uri("/x?a=1&TOKEN=s&t%6Fken=s2&q=token&sig"),
            "/x?a=1&TOKEN=REDACTED&t%6Fken=REDACTED&q=token&sig=REDACTED"
        );
        assert_eq!(redact_uri("/v1/admin/runs"), "/v1/admin/runs");
    }
}
