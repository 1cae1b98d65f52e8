//! `levelup-api [serve|migrate|seed-demo]`: the HTTP API, plus the one-shot operator commands
//! that set up its database.

use anyhow::Context;
use levelup_common::{db, db::demo, runtime::process, runtime::shutdown};

const USAGE: &str = "usage: levelup-api [serve | migrate | seed-demo]";

#[tokio::main]
async fn main() {
    let command = std::env::args().nth(1).unwrap_or_else(|| "serve".to_owned());
    if matches!(command.as_str(), "-h" | "--help" | "help") {
        println!("{USAGE}");
        return;
    }
    if !matches!(command.as_str(), "serve" | "migrate" | "seed-demo") {
        eprintln!("levelup-api: unknown command `{command}`; {USAGE}");
        std::process::exit(2);
    }
    let config = process::start("levelup-api");
    let result = async {
        match command.as_str() {
            "migrate" => {
                db::create_database_if_missing(&config).await?;
                db::migrate(&db::connect(&config).await?).await?;
                tracing::info!("migrations applied");
            }
            "seed-demo" => {
                let pool = db::connect(&config).await?;
                let seeded = demo::seed(&pool).await?;
                tracing::info!(challenges = seeded.challenges, subscribers = seeded.subscribers, "demo data seeded");
            }
            _ => {
                let listener = std::net::TcpListener::bind(config.api_bind)
                    .with_context(|| format!("binding LEVELUP_API_BIND={}", config.api_bind))?;
                levelup_api::run(config, listener, shutdown::on_signal()).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    process::exit_on_error("levelup-api", result);
}
