//! `levelup-scheduler [run | trigger <ISO week>]`: run the scheduler (default), or create the run
//! for a week (e.g. `2026-W47`) for the running schedulers to carry out. Stops cleanly on
//! SIGTERM/SIGINT.

use levelup_common::{db, db::weekly_runs, domain::IsoWeek, runtime::process, runtime::shutdown};

const USAGE: &str = "usage: levelup-scheduler [run | trigger <ISO week, e.g. 2026-W47>]";

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = args.first().map(String::as_str).unwrap_or("run");
    let week = match (command, args.get(1)) {
        ("run", None) => None,
        ("trigger", Some(week)) => match IsoWeek::parse(week) {
            Ok(week) => Some(week),
            Err(err) => {
                eprintln!("levelup-scheduler: `{week}`: {err}");
                std::process::exit(2);
            }
        },
        ("-h" | "--help" | "help", _) => {
            println!("{USAGE}");
            return;
        }
        _ => {
            eprintln!("levelup-scheduler: {USAGE}");
            std::process::exit(2);
        }
    };
    let config = process::start("levelup-scheduler");
    let result = match week {
        None => match config.metrics_bind.map(levelup_common::runtime::telemetry::serve_metrics).transpose() {
            Ok(_) => levelup_scheduler::run(config, shutdown::on_signal()).await,
            Err(err) => Err(err),
        },
        Some(week) => {
            async {
                let pool = db::connect(&config).await?;
                let created = weekly_runs::create(&pool, week, "cli").await?;
                println!(
                    "{}",
                    if created { format!("run {week} created") } else { format!("run {week} already exists") }
                );
                anyhow::Ok(())
            }
            .await
        }
    };
    process::exit_on_error("levelup-scheduler", result);
}
