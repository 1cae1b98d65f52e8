//! `GET /admin`: a small server-rendered page for operators — queue depth, weekly runs with
//! progress, Shopify syncs, recent failures and dead letters. Authenticated with HTTP Basic (any user name, the
//! admin API key as password) so a browser can open it, or with the bearer key.

use levelup_common::{dead_letters, mail::render::escape_html, queue, weekly_runs};
use poem_openapi::{
    ApiResponse, OpenApi, Tags,
    payload::{Html, PlainText},
};

use crate::{AppState, auth::AdminPageAuth};

#[derive(Tags)]
enum AdminPageTags {
    /// The operator's page, for a browser.
    AdminPage,
}

pub struct AdminPageApi {
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
            Ok(d) => format!("<td>{}</td><td>{}</td><td>{}</td>", d.waiting, d.scheduled, d.inflight),
            Err(e) => format!("<td colspan=\"3\">unavailable: {}</td>", escape_html(&e.to_string())),
        },
        Err(e) => format!("<td colspan=\"3\">Redis unreachable: {}</td>", escape_html(&e.to_string())),
    };
    let syncs: String = levelup_common::shopify::sync::list(pool, 5)
        .await?
        .iter()
        .map(|s| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                s.id,
                escape_html(&s.status),
                escape_html(&s.trigger),
                s.customers_seen,
                s.created,
                s.unsubscribed,
                s.throttled,
                s.started_at.format("%Y-%m-%d %H:%M"),
                escape_html(s.error.as_deref().unwrap_or(""))
            )
        })
        .collect();
    let mut runs = String::new();
    for run in weekly_runs::list(pool, 8).await? {
        let p = weekly_runs::progress(pool, &run.week).await?;
        runs += &format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape_html(&run.week),
            escape_html(&run.status),
            run.total,
            p.queued + p.sending,
            p.sent,
            p.failed,
            p.skipped,
            p.ambiguous
        );
    }
    let failures: Vec<(i64, String, Option<String>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT id, week, reason, updated_at FROM deliveries WHERE state = 'failed' ORDER BY updated_at DESC LIMIT 20",
    )
    .fetch_all(pool)
    .await?;
    let failures: String = failures
        .iter()
        .map(|(id, week, reason, at)| {
            format!(
                "<tr><td>{id}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape_html(week),
                escape_html(reason.as_deref().unwrap_or("")),
                at.format("%Y-%m-%d %H:%M")
            )
        })
        .collect();
    let dead: String = dead_letters::list_open(pool, 20)
        .await?
        .iter()
        .map(|d| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                d.id,
                d.delivery_id.map(|id| id.to_string()).unwrap_or_default(),
                d.attempts,
                escape_html(&d.last_error)
            )
        })
        .collect();
    Ok(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>LevelUp admin</title><style>body{{font-family:system-ui,sans-serif;margin:1rem}}table{{border-collapse:collapse;margin-bottom:1.5rem}}\
         td,th{{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:left}}</style></head><body>\
         <h1>LevelUp admin</h1>\
         <h2>Email queue</h2><table><tr><th>waiting</th><th>scheduled</th><th>in flight</th></tr><tr>{depth}</tr></table>\
         <h2>Weekly runs</h2><table><tr><th>week</th><th>status</th><th>total</th><th>pending</th><th>sent</th><th>failed</th><th>skipped</th><th>ambiguous</th></tr>{runs}</table>\
         <h2>Shopify syncs</h2><table><tr><th>id</th><th>status</th><th>trigger</th><th>customers</th><th>new</th><th>unsubscribed</th><th>throttled</th><th>started</th><th>error</th></tr>{syncs}</table>\
         <h2>Recent failures</h2><table><tr><th>delivery</th><th>week</th><th>reason</th><th>at</th></tr>{failures}</table>\
         <h2>Dead letters</h2><table><tr><th>id</th><th>delivery</th><th>attempts</th><th>last error</th></tr>{dead}</table>\
         <p>Replay: <code>POST /v1/admin/dead-letters/replay</code> · API docs: <a href=\"/docs\">/docs</a></p></body></html>"
    ))
}
