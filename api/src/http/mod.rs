//! The HTTP layer: how requests are read, guarded and answered, whatever the route — errors as
//! problem+json, authentication, abuse guards, idempotency keys, strict JSON, protocol details,
//! request logs and metrics, and the server loop.

pub(crate) mod auth;
pub(crate) mod documented;
pub(crate) mod error;
pub(crate) mod guard;
pub(crate) mod idempotency;
pub(crate) mod json_string;
pub(crate) mod metrics;
pub(crate) mod optional_json;
pub(crate) mod problem;
pub(crate) mod protocol;
pub(crate) mod raw_body;
pub(crate) mod reply;
pub(crate) mod request_log;
pub(crate) mod server;
pub(crate) mod strict_json;
