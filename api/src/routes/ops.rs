//! Operations endpoints: liveness, readiness and Prometheus metrics.

use std::time::Duration;

use levelup_common::db;
use poem_openapi::{
    ApiResponse, Object, OpenApi, Tags,
    payload::{Json, PlainText},
};

use crate::{
    AppState,
    http::{error::ApiError, problem::Problem},
};

#[derive(Tags)]
enum OpsTags {
    /// Health and readiness probes for orchestrators and load balancers.
    Operations,
}

pub(crate) struct OpsApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct Liveness {
    status: String,
}

/// Whether this replica takes traffic: `ready`, `not_ready` (a dependency did not answer) or
/// `draining` (shutting down: still serving, but to be taken out of rotation; the dependencies
/// are not checked then).
#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct Readiness {
    status: String,
    postgres: Option<String>,
    redis: Option<String>,
}

#[derive(ApiResponse)]
enum ReadyResponse {
    /// Postgres and Redis both answered.
    #[oai(status = 200)]
    Ready(Json<Readiness>),
    /// A dependency is unreachable, or the replica is draining (SIGTERM received); take it out
    /// of rotation.
    #[oai(status = 503)]
    NotReady(Json<Readiness>),
}

#[derive(ApiResponse)]
enum Metrics {
    /// Prometheus text format: HTTP request counts and latency by route and status, queue and
    /// job metrics.
    #[oai(status = 200, content_type = "text/plain; version=0.0.4")]
    Ok(PlainText<String>),
}

crate::http::error::status!(
    /// Metrics are served elsewhere.
    MetricsElsewhere = 404,
    "Metrics are served on their own address (`LEVELUP_METRICS_BIND`), not on the API's."
);

const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[OpenApi(tag = "OpsTags::Operations")]
impl OpsApi {
    /// Liveness: the process is up and serving.
    #[oai(path = "/healthz", method = "get")]
    async fn healthz(&self) -> Json<Liveness> {
        Json(Liveness { status: "ok".into() })
    }

    /// Readiness: Postgres and Redis are reachable (503 otherwise), and the replica is not
    /// draining: from SIGTERM on it answers 503 for `LEVELUP_DRAIN_SECS` while still serving
    /// everything else, so load balancers stop routing to it before it stops accepting.
    #[oai(path = "/readyz", method = "get")]
    async fn readyz(&self) -> ReadyResponse {
        if self.state.draining.is_cancelled() {
            return ReadyResponse::NotReady(Json(Readiness { status: "draining".into(), postgres: None, redis: None }));
        }
        let (postgres, redis) = tokio::join!(db::ping(&self.state.db, PROBE_TIMEOUT), self.ping_redis());
        let describe = |result: &anyhow::Result<()>| match result {
            Ok(()) => "ok".to_owned(),
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "readiness probe failed");
                "unreachable".to_owned()
            }
        };
        let ready = postgres.is_ok() && redis.is_ok();
        let body = Readiness {
            status: if ready { "ready" } else { "not_ready" }.into(),
            postgres: Some(describe(&postgres)),
            redis: Some(describe(&redis)),
        };
        if ready { ReadyResponse::Ready(Json(body)) } else { ReadyResponse::NotReady(Json(body)) }
    }

    /// Prometheus metrics (never rate limited or shed); 404 when they are served on their own
    /// address (`LEVELUP_METRICS_BIND`) instead.
    #[oai(path = "/metrics", method = "get")]
    async fn metrics(&self) -> Result<Metrics, ApiError<MetricsElsewhere>> {
        if let Some(bind) = self.state.config.metrics_bind {
            return Err(ApiError::new(Problem::new(
                "not-found",
                "Not found",
                404,
                format!("metrics are served on LEVELUP_METRICS_BIND ({}), not here", bind.port()),
            )));
        }
        Ok(Metrics::Ok(PlainText(crate::http::metrics::render())))
    }
}

impl OpsApi {
    async fn ping_redis(&self) -> anyhow::Result<()> {
        let ping = async {
            let mut conn = self.state.redis.get().await?;
            let _: String = redis::cmd("PING").query_async(&mut conn).await?;
            anyhow::Ok(())
        };
        tokio::time::timeout(PROBE_TIMEOUT, ping).await.map_err(|_| anyhow::anyhow!("Redis did not answer in time"))?
    }
}
