//! `GET /admin`: a small server-rendered page for operators — queue depth, weekly runs with
//! progress, Shopify syncs, recent failures and dead letters. Authenticated with HTTP Basic (any user name, the
//! admin API key as password) so a browser can open it, or with the bearer key.

use askama::Template;
use levelup_common::{db::dead_letters, db::weekly_runs, jobs::queue};
use poem_openapi::{
    ApiResponse, OpenApi, Tags,
    payload::{Html, PlainText},
};

use crate::{
    AppState,
    http::auth::AdminPageAuth,
    views::{self, QueueDepthView},
};

#[derive(Tags)]
enum AdminPageTags {
    /// The operator's page, for a browser.
    AdminPage,
}

pub(crate) struct AdminPageApi {
    pub state: AppState,
}

#[derive(ApiResponse)]
#[oai(bad_request_handler = "ask_for_credentials")]
enum AdminPageReply {
    /// The page; it refreshes itself every 10 seconds.
    #[oai(status = 200)]
    Ok(Html<String>, #[oai(header = "Cache-Control")] String, #[oai(header = "Refresh")] String),
    /// The admin API key is required: HTTP Basic (any user name, the key as password) or bearer.
    #[oai(status = 401)]
    Unauthorized(PlainText<String>, #[oai(header = "WWW-Authenticate")] String),
    /// Failed on our side; the cause is logged.
    #[oai(status = 500)]
    Internal(PlainText<String>),
}

/// Missing or wrong credentials (the only thing this operation parses): ask the browser for them.
fn ask_for_credentials(_: poem::Error) -> AdminPageReply {
    AdminPageReply::Unauthorized(
        PlainText("admin API key required (user name: anything, password: the key)".to_owned()),
        "Basic realm=\"LevelUp admin\", charset=\"UTF-8\"".to_owned(),
    )
}

#[OpenApi(tag = "AdminPageTags::AdminPage")]
impl AdminPageApi {
    /// Queues, weekly runs with progress, recent failures and dead letters.
    #[oai(path = "/admin", method = "get")]
    async fn page(&self, _auth: AdminPageAuth) -> AdminPageReply {
        match render(&self.state).await {
            Ok(html) => AdminPageReply::Ok(Html(html), "no-store".to_owned(), "10".to_owned()),
            Err(err) => {
                tracing::error!(error = %format!("{err:#}"), "admin page failed");
                AdminPageReply::Internal(PlainText("admin page failed; see the logs".to_owned()))
            }
        }
    }
}

async fn render(state: &AppState) -> anyhow::Result<String> {
    let pool = &state.db;
    let depth = match state.redis.get().await {
        Ok(mut conn) => match queue::email_queue_depth(&state.config, &mut conn).await {
            Ok(d) => QueueDepthView::Known(d),
            Err(e) => QueueDepthView::Unavailable(e.to_string()),
        },
        Err(e) => QueueDepthView::Unreachable(e.to_string()),
    };
    let syncs = levelup_common::db::shopify_syncs::list(pool, 5).await?;
    let mut runs = Vec::new();
    for run in weekly_runs::list(pool, 8).await? {
        let p = weekly_runs::progress(pool, run.week).await?;
        runs.push((run, p));
    }
    let failures: Vec<views::FailedDelivery> = levelup_common::db::subscriber_admin::recent_failures(pool, 20).await?;
    let dead_letters = dead_letters::list_open(pool, 20).await?;
    Ok(views::AdminPage { depth, runs, syncs, failures, dead_letters }.render()?)
}
