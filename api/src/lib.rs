//! The LevelUp HTTP API (poem + poem-openapi): subscriber and operator endpoints, health,
//! metrics, and the generated OpenAPI document. The API never sends mail: it writes to Postgres
//! and enqueues jobs.

mod http;
mod routes;
mod state;
mod views;

use std::net::TcpListener;

use anyhow::Context;
use levelup_common::{Config, runtime::shutdown::CancellationToken};
use poem::{EndpointExt, Route, middleware};
use poem_openapi::OpenApiService;

pub use http::guard::MAX_BODY_BYTES;
pub use state::AppState;

type Apis = (
    routes::ops::OpsApi,
    routes::subscriber::SubscriberApi,
    routes::pages::PagesApi,
    routes::admin::runs::AdminRunsApi,
    routes::admin::challenges::AdminChallengesApi,
    routes::admin::subscribers::AdminSubscribersApi,
    routes::admin::shopify::AdminShopifyApi,
    routes::admin::page::AdminPageApi,
    routes::webhooks::WebhooksApi,
);

/// The OpenAPI service: every route, so `/openapi.json` documents all of them, with the errors
/// the middleware adds (see [`documented`]).
fn openapi(state: &AppState, config: &Config) -> OpenApiService<http::documented::Documented<Apis>, ()> {
    let server = config.public_base_url.as_str().trim_end_matches('/').to_owned();
    let apis = (
        routes::ops::OpsApi { state: state.clone() },
        routes::subscriber::SubscriberApi { state: state.clone() },
        routes::pages::PagesApi { state: state.clone() },
        routes::admin::runs::AdminRunsApi { state: state.clone() },
        routes::admin::challenges::AdminChallengesApi { state: state.clone() },
        routes::admin::subscribers::AdminSubscribersApi { state: state.clone() },
        routes::admin::shopify::AdminShopifyApi { state: state.clone() },
        routes::admin::page::AdminPageApi { state: state.clone() },
        routes::webhooks::WebhooksApi { state: state.clone() },
    );
    OpenApiService::new(http::documented::Documented(apis), "LevelUp", env!("CARGO_PKG_VERSION"))
        .description("Weekly challenge emails for Shopify subscribers: subscriber and operator API.")
        .server(server)
}

/// Builds the whole application (routes and middleware) for `state`.
pub fn app(state: AppState) -> impl poem::Endpoint {
    let config = state.config.clone();
    let guards = http::guard::Guards::new(&config);
    let api = openapi(&state, &config);
    let spec = api.spec_endpoint();
    let document = api.spec();
    let allowed = http::protocol::AllowedMethods::from_spec(&document);
    let string_fields = http::strict_json::StringFields::from_spec(&document);
    let docs = api.swagger_ui();
    Route::new()
        .nest("/", api.around(http::strict_json::check).around(http::idempotency::guard))
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .around(http::protocol::allow_on_405)
        .around(http::guard::protect)
        .data(state)
        .data(guards)
        .data(allowed)
        .data(string_fields)
        .around(http::metrics::record)
        .around(http::request_log::log)
        .with(middleware::CatchPanic::new())
        .catch_all_error(http::problem::from_error)
        .around(http::protocol::security_headers)
}

/// Serves the API on `listener` until `shutdown` is cancelled; then drains for
/// `LEVELUP_DRAIN_SECS` (`/readyz` answers 503, everything else is still served, each connection
/// closed after its response), stops accepting, and lets the requests in flight finish within
/// `LEVELUP_SHUTDOWN_GRACE_SECS`.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    levelup_common::runtime::telemetry::metrics_handle();
    let state = AppState::new(config.clone()).await?;
    let lifecycle = http::server::Lifecycle::after(shutdown, state.draining.clone(), config.drain_period);
    listener.set_nonblocking(true).context("listener set_nonblocking")?;
    let address = listener.local_addr().context("listener address")?;
    let listener = tokio::net::TcpListener::from_std(listener).context("adopting the listener")?;
    tracing::info!(%address, "API listening");
    let limits = http::server::ServerLimits {
        header_timeout: config.api_header_timeout,
        max_connections_per_client: config.api_max_connections_per_client,
        shutdown_grace: config.shutdown_grace,
    };
    if let Some(bind) = config.metrics_bind {
        // Metrics on their own address (a port the internet does not reach), not on the API's.
        let metrics_listener = tokio::net::TcpListener::bind(bind)
            .await
            .with_context(|| format!("binding LEVELUP_METRICS_BIND={bind}"))?;
        tracing::info!(%bind, "metrics listening");
        let metrics_app = Route::new().at("/metrics", poem::get(http::metrics::serve_metrics));
        tokio::spawn(http::server::serve(metrics_listener, metrics_app, limits, lifecycle.clone()));
    }
    http::server::serve(listener, app(state), limits, lifecycle).await.context("API server")
}
