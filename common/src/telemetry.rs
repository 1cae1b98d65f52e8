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

static METRICS: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> = std::sync::OnceLock::new();

/// Installs the process-wide Prometheus recorder (once) and returns its handle, whose `render()`
/// is the `/metrics` text.
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    METRICS
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
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
