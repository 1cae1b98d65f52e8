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
mod json_string;
mod metrics;
mod ops;
mod pages;
mod problem;
mod protocol;
mod raw_body;
mod request_log;
mod server;
mod state;
mod strict_json;
mod subscriber;
mod webhooks;

use std::net::TcpListener;

use anyhow::Context;
use levelup_common::{Config, shutdown::CancellationToken};
use poem::{EndpointExt, Route, middleware};
use poem_openapi::OpenApiService;

pub use guard::MAX_BODY_BYTES;
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
    let guards = guard::Guards::new(&config);
    let api = openapi(&state, &config);
    let spec = api.spec_endpoint();
    let document = api.spec();
    let allowed = protocol::AllowedMethods::from_spec(&document);
    let string_fields = strict_json::StringFields::from_spec(&document);
    let docs = api.swagger_ui();
    Route::new()
        .nest("/", api.around(strict_json::check).around(idempotency::guard))
        .nest("/docs", docs)
        .at("/openapi.json", spec)
        .around(protocol::allow_on_405)
        .around(guard::protect)
        .data(state)
        .data(guards)
        .data(allowed)
        .data(string_fields)
        .around(metrics::record)
        .around(request_log::log)
        .with(middleware::CatchPanic::new())
        .catch_all_error(problem::from_error)
        .around(protocol::security_headers)
}

/// Serves the API on `listener` until `shutdown` is cancelled, then drains in-flight requests
/// for at most the configured grace period.
pub async fn run(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    levelup_common::telemetry::metrics_handle();
    let state = AppState::new(config.clone()).await?;
    listener.set_nonblocking(true).context("listener set_nonblocking")?;
    let address = listener.local_addr().context("listener address")?;
    let listener = tokio::net::TcpListener::from_std(listener).context("adopting the listener")?;
    tracing::info!(%address, "API listening");
    let limits = server::ServerLimits {
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
        let metrics_app = Route::new().at("/metrics", poem::get(metrics::serve_metrics));
        tokio::spawn(server::serve(metrics_listener, metrics_app, limits, shutdown.clone()));
    }
    server::serve(listener, app(state), limits, shutdown).await.context("API server")
}
