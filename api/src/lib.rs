//! The LevelUp HTTP API (poem + poem-openapi): subscriber and operator endpoints, health,
//! metrics, and the generated OpenAPI document. The API never sends mail: it writes to Postgres
//! and enqueues jobs.

mod admin;
mod admin_data;
mod admin_page;
mod admin_sync;
mod auth;
mod documented;
mod guard;
mod idempotency;
mod metrics;
mod ops;
mod pages;
mod problem;
mod raw_body;
mod state;
mod subscriber;
mod webhooks;

use std::{net::TcpListener, sync::Arc};

use anyhow::Context;
use levelup_common::{Config, shutdown::CancellationToken};
use poem::{EndpointExt, Route, Server, listener::TcpAcceptor, middleware};
use poem_openapi::OpenApiService;

pub use state::AppState;

type Apis = (
    ops::OpsApi,
    subscriber::SubscriberApi,
    pages::PagesApi,
    admin::AdminApi,
    admin_data::AdminDataApi,
    admin_sync::AdminSyncApi,
    admin_page::AdminPageApi,
    webhooks::WebhooksApi,
);

/// The OpenAPI service: every route, so `/openapi.json` documents all of them, with the errors
/// the middleware adds (see [`documented`]).
fn openapi(state: &AppState, config: &Config) -> OpenApiService<documented::Documented<Apis>, ()> {
    let server = config.public_base_url.as_str().trim_end_matches('/').to_owned();
    let apis = (
        ops::OpsApi { state: state.clone() },
        subscriber::SubscriberApi { state: state.clone() },
        pages::PagesApi { state: state.clone() },
        admin::AdminApi { state: state.clone() },
        admin_data::AdminDataApi { state: state.clone() },
        admin_sync::AdminSyncApi { state: state.clone() },
        admin_page::AdminPageApi { state: state.clone() },
        webhooks::WebhooksApi { state: state.clone() },
    );
    OpenApiService::new(documented::Documented(apis), "LevelUp", env!("CARGO_PKG_VERSION"))
        .description("Weekly challenge emails for Shopify subscribers: subscriber and operator API.")
        .server(server)
}

/// Builds the whole application (routes and middleware) for `state`.
pub fn app(state: AppState) -> impl poem::Endpoint {
    let config = state.config.clone();
    let guards = guard::Guards::new(config.api_rate_per_second, config.api_burst, config.api_max_in_flight);
    let api = openapi(&state, &config);
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .nest("/", api.around(idempotency::guard).around(limit_body_size))
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .around(guard::protect)
        .data(state)
        .data(guards)
        .around(metrics::record)
        .with(middleware::Tracing)
        .with(middleware::CatchPanic::new())
        .catch_all_error(problem::from_error)
}

/// Serves the API on `listener` until `shutdown` is cancelled, then drains in-flight requests
/// for at most the configured grace period.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    levelup_common::telemetry::metrics_handle();
    let state = AppState::new(config.clone()).await?;
    listener.set_nonblocking(true).context("listener set_nonblocking")?;
    let address = listener.local_addr().context("listener address")?;
    let acceptor = TcpAcceptor::from_std(listener).context("adopting the listener")?;
    tracing::info!(%address, "API listening");
    Server::new_with_acceptor(acceptor)
        .run_with_graceful_shutdown(app(state), shutdown.cancelled_owned(), Some(config.shutdown_grace))
        .await
        .context("API server")
}

/// Largest request body accepted; larger ones are refused before a handler reads them.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Refuses a declared body over [`MAX_BODY_BYTES`] with 413, and caps an undeclared (chunked)
/// one at the same size. poem's `SizeLimit` would also refuse every GET without `Content-Length`.
async fn limit_body_size<E: poem::Endpoint>(
    endpoint: Arc<E>,
    mut request: poem::Request,
) -> poem::Result<poem::Response> {
    use poem::{IntoResponse, http::StatusCode};
    let declared = request
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        let problem = problem::Problem::new(
            "payload-too-large",
            "Payload too large",
            413,
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        );
        return Ok(poem::web::Json(serde_json::json!({
            "type": problem.kind, "title": problem.title, "status": problem.status, "detail": problem.detail
        }))
        .with_content_type("application/problem+json")
        .with_status(StatusCode::PAYLOAD_TOO_LARGE)
        .into_response());
    }
    if declared.is_none() {
        let body = request
            .take_body()
            .into_bytes_limit(MAX_BODY_BYTES)
            .await
            .map_err(|_| poem::Error::from_string("request body too large", StatusCode::PAYLOAD_TOO_LARGE))?;
        request.set_body(body);
    }
    endpoint.call(request).await.map(IntoResponse::into_response)
}
