//! What more than one LevelUp process needs, in layers (see `ARCHITECTURE.md`):
//!
//! - [`domain`]: parsed values and the states the database stores (no I/O);
//! - [`db`]: every SQL statement, one module per table or aggregate;
//! - [`flows`]: subscriber operations shared by the HTML pages and the JSON API;
//! - [`jobs`]: job payloads, queues and the plumbing every job shares;
//! - [`mail`], [`shopify`]: the only code that talks to SES/SNS and Shopify;
//! - [`resilience`]: retry policy, circuit breaker, fleet-wide rate limiter;
//! - [`runtime`]: process start-up, shutdown, telemetry and connections;
//! - [`config`]: the typed configuration every process reads once.

pub mod config;
pub mod db;
pub mod domain;
pub mod flows;
pub mod jobs;
pub mod mail;
pub mod resilience;
pub mod runtime;
pub mod shopify;

pub use config::Config;
