//! What every binary does first: read configuration, install logging, and turn a fatal error
//! into one readable line and a non-zero exit.

use crate::{Config, runtime::telemetry};

/// Loads configuration and installs logging; on a configuration error prints one line naming the
/// variable and exits with status 2.
pub fn start(binary: &str) -> Config {
    match Config::from_env() {
        Ok(config) => {
            telemetry::init(config.log_format, &config.log_filter);
            config
        }
        Err(err) => {
            eprintln!("{binary}: {err}");
            std::process::exit(2);
        }
    }
}

/// Ends the process after a fatal error: the whole cause chain on one line, exit status 1.
pub fn exit_on_error(binary: &str, result: anyhow::Result<()>) {
    if let Err(err) = result {
        tracing::error!(error = %format!("{err:#}"), "fatal");
        eprintln!("{binary}: {err:#}");
        std::process::exit(1);
    }
}
