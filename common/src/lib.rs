//! What more than one LevelUp process needs: configuration, domain types, database access,
//! job payloads and queue names, the mail transports, resilience pieces and telemetry.

pub mod challenges;
pub mod config;
pub mod db;
pub mod dead_letters;
pub mod deliveries;
pub mod demo;
pub mod domain;
pub mod idempotency_keys;
pub mod jobs;
pub mod mail;
pub mod process;
pub mod queue;
pub mod redis_conn;
pub mod resilience;
pub mod shopify;
pub mod shopify_webhooks;
pub mod shutdown;
pub mod sns;
pub mod subscriber_admin;
pub mod subscribers;
pub mod telemetry;
pub mod tokens;
pub mod weekly_runs;

pub use config::Config;
