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
        LogFormat::Human => registry.with(fmt::layer().with_target(false)).try_init(),
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
