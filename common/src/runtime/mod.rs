//! What every process runs on: start-up and fatal errors, graceful shutdown, telemetry, and the
//! Redis connection (the Postgres pool is in [`crate::db`]).

pub mod process;
pub mod redis_conn;
pub mod shutdown;
pub mod telemetry;
