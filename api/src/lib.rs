//! The LevelUp HTTP API (poem + poem-openapi): subscriber and operator endpoints, health,
//! metrics, and the generated OpenAPI document. The API never sends mail: it writes to Postgres
//! and enqueues jobs.

mod ops;
mod state;

use std::net::TcpListener;

use anyhow::Context;
use levelup_common::{Config, shutdown::CancellationToken};
use poem::{EndpointExt, Route, Server, listener::TcpAcceptor, middleware};
use poem_openapi::OpenApiService;

pub use state::AppState;

/// The OpenAPI service: every API group, so `/openapi.json` documents all of them.
fn openapi(state: &AppState, config: &Config) -> OpenApiService<ops::OpsApi, ()> {
    let server = config.public_base_url.as_str().trim_end_matches('/').to_owned();
    OpenApiService::new(ops::OpsApi { state: state.clone() }, "LevelUp", env!("CARGO_PKG_VERSION"))
        .description("Weekly challenge emails for Shopify subscribers: subscriber and operator API.")
        .server(server)
}

/// Builds the whole application (routes and middleware) for `state`.
pub fn app(state: AppState) -> impl poem::Endpoint {
    let config = state.config.clone();
    let api = openapi(&state, &config);
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    Route::new()
        .nest("/", api)
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .with(middleware::Tracing)
        .with(middleware::CatchPanic::new())
}

/// Serves the API on `listener` until `shutdown` is cancelled, then drains in-flight requests
/// for at most the configured grace period.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
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
