//! `levelup-worker`: see the library docs. Stops cleanly on SIGTERM/SIGINT.

use levelup_common::{runtime::process, runtime::shutdown};

#[tokio::main]
async fn main() {
    let config = process::start("levelup-worker");
    let result = match config.metrics_bind.map(levelup_common::runtime::telemetry::serve_metrics).transpose() {
        Ok(_) => levelup_worker::run(config, shutdown::on_signal()).await,
        Err(err) => Err(err),
    };
    process::exit_on_error("levelup-worker", result);
}
