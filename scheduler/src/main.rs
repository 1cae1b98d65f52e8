//! `levelup-scheduler`: see the library docs. Stops cleanly on SIGTERM/SIGINT.

use levelup_common::{process, shutdown};

#[tokio::main]
async fn main() {
    let config = process::start("levelup-scheduler");
    let result = levelup_scheduler::run(config, shutdown::on_signal()).await;
    process::exit_on_error("levelup-scheduler", result);
}
