//! `GET /admin`: a small server-rendered page for operators — queue depth, weekly runs with
//! progress, recent failures and dead letters. Authenticated with HTTP Basic (any user name, the
//! admin API key as password) so a browser can open it, or with the bearer key.

use base64::{Engine, engine::general_purpose::STANDARD};
use levelup_common::{dead_letters, mail::render::escape_html, queue, weekly_runs};
use poem::{
    Request, Response, handler,
    http::{StatusCode, header},
    web::Data,
};

use crate::AppState;

fn authorized(state: &AppState, request: &Request) -> bool {
    let Some(value) = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else { return false };
    if let Some(token) = value.strip_prefix("Bearer ") {
        return state.config.admin_api_key_matches(token);
    }
    value
        .strip_prefix("Basic ")
        .and_then(|encoded| STANDARD.decode(encoded).ok())
        .and_then(|decoded| String::from_utf8(decoded).ok())
        .and_then(|pair| pair.split_once(':').map(|(_, password)| password.to_owned()))
        .is_some_and(|password| state.config.admin_api_key_matches(&password))
}

#[handler]
pub async fn page(request: &Request, Data(state): Data<&AppState>) -> Response {
    if !authorized(state, request) {
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"LevelUp admin\", charset=\"UTF-8\"")
            .content_type("text/plain; charset=utf-8")
            .body("admin API key required (user name: anything, password: the key)");
    }
    match render(state).await {
        Ok(html) => Response::builder()
            .content_type("text/html; charset=utf-8")
            .header("Cache-Control", "no-store")
            .header("Refresh", "10")
            .body(html),
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "admin page failed");
            Response::builder().status(StatusCode::INTERNAL_SERVER_ERROR).body("admin page failed; see the logs")
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
         <h2>Recent failures</h2><table><tr><th>delivery</th><th>week</th><th>reason</th><th>at</th></tr>{failures}</table>\
         <h2>Dead letters</h2><table><tr><th>id</th><th>delivery</th><th>attempts</th><th>last error</th></tr>{dead}</table>\
         <p>Replay: <code>POST /v1/admin/dead-letters/replay</code> · API docs: <a href=\"/docs\">/docs</a></p></body></html>"
    ))
}
