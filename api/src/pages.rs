//! The subscriber's pages, reached from the links in the email: challenge (with a submission
//! form), level and progress, questionnaire, unsubscribe. Plain, accessible HTML; no JavaScript.
//! Unsubscribe follows RFC 8058: `POST` (one-click, or the confirmation form) unsubscribes at
//! once; `GET` only shows a confirmation page, because mail scanners fetch links.

use levelup_common::{
    mail::render::escape_html,
    subscribers::{self, QUESTIONS},
    tokens::{Claims, Purpose},
};
use poem::{
    Response, handler,
    http::{StatusCode, header},
    web::{Data, Form, Path, Query},
};
use serde::Deserialize;

use crate::AppState;

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

#[derive(Deserialize)]
pub struct SubmissionForm {
    token: String,
    answer: String,
    passed: Option<String>,
}

#[derive(Deserialize)]
pub struct QuestionnaireForm {
    token: String,
    q0: Option<String>,
    q1: Option<String>,
    q2: Option<String>,
    q3: Option<String>,
    q4: Option<String>,
    q5: Option<String>,
}

fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} · LevelUp</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:auto;padding:1rem;line-height:1.5}}\
         textarea{{width:100%;min-height:10rem}}button{{padding:.6rem 1rem;font-size:1rem}}\
         table{{border-collapse:collapse}}td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}}</style>\
         </head><body><main>\n<h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = escape_html(title),
    );
    Response::builder()
        .status(status)
        .content_type("text/html; charset=utf-8")
        .header("Cache-Control", "no-store")
        .header("Referrer-Policy", "no-referrer")
        .body(html)
}

fn error_page(status: StatusCode, message: &str) -> Response {
    page(status, "Sorry", &format!("<p>{}</p>", escape_html(message)))
}

/// The claims of a valid token, or the error page to answer (boxed: a `Response` is large).
fn verify(state: &AppState, token: Option<&str>, purpose: Purpose) -> Result<Claims, Box<Response>> {
    let token = token.ok_or_else(|| {
        Box::new(error_page(StatusCode::UNAUTHORIZED, "This link is missing its token. Use the link from your email."))
    })?;
    state.verify(token, purpose).map_err(|err| {
        Box::new(error_page(
            StatusCode::UNAUTHORIZED,
            &format!("This link cannot be used: {err}. Use the link from your latest email."),
        ))
    })
}

fn internal(err: impl std::fmt::Display) -> Response {
    tracing::error!(error = %err, "page failed");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on our side. Please try again later.")
}

fn see_other(location: &str) -> Response {
    Response::builder().status(StatusCode::SEE_OTHER).header(header::LOCATION, location).finish()
}

fn encode(token: &str) -> String {
    url::form_urlencoded::byte_serialize(token.as_bytes()).collect()
}

#[handler]
pub async fn challenge_page(
    Path(id): Path<i64>,
    Query(q): Query<TokenQuery>,
    Data(state): Data<&AppState>,
) -> Response {
    let claims = match verify(state, q.token.as_deref(), Purpose::Access) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let challenge = match subscribers::sent_challenge(&state.db, claims.subscriber_id, id).await {
        Ok(Some(c)) => c,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, "We did not send you this challenge."),
        Err(e) => return internal(e),
    };
    let token = escape_html(q.token.as_deref().unwrap_or_default());
    page(
        StatusCode::OK,
        &challenge.title,
        &format!(
            "<p>Level {level} challenge</p>\n<div class=\"challenge\">{body}</div>\n\
             <form method=\"post\" action=\"/challenge/{id}\">\n<input type=\"hidden\" name=\"token\" value=\"{token}\">\n\
             <p><label for=\"answer\">Your answer</label><br><textarea id=\"answer\" name=\"answer\" required maxlength=\"20000\"></textarea></p>\n\
             <p><label><input type=\"checkbox\" name=\"passed\" value=\"yes\"> My solution passes the challenge's checks</label></p>\n\
             <p><button type=\"submit\">Submit</button></p>\n</form>\n<p><a href=\"/level?token={link}\">Your level and progress</a></p>",
            level = challenge.level,
            body = escape_html(&challenge.body),
            id = challenge.id,
            link = escape_html(&encode(q.token.as_deref().unwrap_or_default())),
        ),
    )
}

#[handler]
pub async fn submit_challenge(
    Path(id): Path<i64>,
    Form(form): Form<SubmissionForm>,
    Data(state): Data<&AppState>,
) -> Response {
    let claims = match verify(state, Some(&form.token), Purpose::Access) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    if form.answer.trim().is_empty() || form.answer.len() > 20_000 || form.answer.contains('\0') {
        return error_page(StatusCode::UNPROCESSABLE_ENTITY, "Please write an answer (at most 20,000 characters).");
    }
    let challenge = match subscribers::sent_challenge(&state.db, claims.subscriber_id, id).await {
        Ok(Some(c)) => c,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, "We did not send you this challenge."),
        Err(e) => return internal(e),
    };
    let passed = form.passed.is_some();
    match subscribers::submit(
        &state.db,
        claims.subscriber_id,
        &challenge,
        &form.answer,
        passed,
        state.config.promotion_passes,
    )
    .await
    {
        Ok(_) => see_other(&format!("/level?token={}", encode(&form.token))),
        Err(e) => internal(e),
    }
}

#[handler]
pub async fn level_page(Query(q): Query<TokenQuery>, Data(state): Data<&AppState>) -> Response {
    let claims = match verify(state, q.token.as_deref(), Purpose::Access) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let pool = &state.db;
    let subscriber = match subscribers::get(pool, claims.subscriber_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return error_page(StatusCode::UNAUTHORIZED, "This subscription no longer exists."),
        Err(e) => return internal(e),
    };
    let link = escape_html(&encode(q.token.as_deref().unwrap_or_default()));
    let Some(level) = subscriber.level else {
        return page(
            StatusCode::OK,
            "Your level",
            &format!(
                "<p>You have not taken the placement questionnaire yet.</p><p><a href=\"/questionnaire?token={link}\">Find your level</a></p>"
            ),
        );
    };
    let (passed, history) = match tokio::try_join!(
        subscribers::passed_at_level(pool, claims.subscriber_id, level),
        subscribers::history(pool, claims.subscriber_id)
    ) {
        Ok(v) => v,
        Err(e) => return internal(e),
    };
    let needed = state.config.promotion_passes;
    let mut rows: String = history
        .iter()
        .map(|h| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                h.created_at.format("%Y-%m-%d"),
                h.from_level.map(|l| format!("{l} → {}", h.to_level)).unwrap_or_else(|| h.to_level.to_string()),
                escape_html(&h.reason)
            )
        })
        .collect();
    if rows.is_empty() {
        rows = "<tr><td colspan=\"3\">No level changes yet.</td></tr>".to_owned();
    }
    page(
        StatusCode::OK,
        "Your level",
        &format!(
            "<p class=\"level\">You are at <strong>level {level}</strong>.</p>\n\
             <p class=\"progress\">Challenges passed at this level: <strong>{passed}</strong> of {needed} needed to move up.</p>\n\
             <progress max=\"{needed}\" value=\"{shown}\">{passed} of {needed}</progress>\n\
             <h2>History</h2>\n<table><thead><tr><th>Date</th><th>Level</th><th>Why</th></tr></thead><tbody>{rows}</tbody></table>",
            shown = passed.min(needed),
        ),
    )
}

#[handler]
pub async fn questionnaire_page(Query(q): Query<TokenQuery>, Data(state): Data<&AppState>) -> Response {
    if let Err(r) = verify(state, q.token.as_deref(), Purpose::Access) {
        return *r;
    }
    let token = escape_html(q.token.as_deref().unwrap_or_default());
    let questions: String = QUESTIONS
        .iter()
        .enumerate()
        .map(|(i, (text, _))| {
            format!(
                "<p><label><input type=\"checkbox\" name=\"q{i}\" value=\"yes\"> {}</label></p>\n",
                escape_html(text)
            )
        })
        .collect();
    page(
        StatusCode::OK,
        "Find your level",
        &format!(
            "<p>Tick every statement that is true for you.</p>\n<form method=\"post\" action=\"/questionnaire\">\n\
             <input type=\"hidden\" name=\"token\" value=\"{token}\">\n{questions}<p><button type=\"submit\">Set my level</button></p>\n</form>"
        ),
    )
}

#[handler]
pub async fn submit_questionnaire(Form(form): Form<QuestionnaireForm>, Data(state): Data<&AppState>) -> Response {
    let claims = match verify(state, Some(&form.token), Purpose::Access) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let answers: Vec<bool> =
        [&form.q0, &form.q1, &form.q2, &form.q3, &form.q4, &form.q5].iter().map(|a| a.is_some()).collect();
    let (score, level) = subscribers::placement_level(&answers);
    match subscribers::place(&state.db, claims.subscriber_id, &serde_json::json!(answers), score, level).await {
        Ok(()) => see_other(&format!("/level?token={}", encode(&form.token))),
        Err(e) => internal(e),
    }
}

#[handler]
pub async fn unsubscribe_page(Query(q): Query<TokenQuery>, Data(state): Data<&AppState>) -> Response {
    if let Err(r) = verify(state, q.token.as_deref(), Purpose::Unsubscribe) {
        return *r;
    }
    let link = escape_html(&encode(q.token.as_deref().unwrap_or_default()));
    page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop receiving the weekly LevelUp challenge?</p>\n<form method=\"post\" action=\"/unsubscribe?token={link}\">\n\
             <p><button type=\"submit\">Unsubscribe</button></p>\n</form>"
        ),
    )
}

/// One-click (`List-Unsubscribe=One-Click`) or the confirmation form: unsubscribes at once.
#[handler]
pub async fn unsubscribe(Query(q): Query<TokenQuery>, Data(state): Data<&AppState>) -> Response {
    let claims = match verify(state, q.token.as_deref(), Purpose::Unsubscribe) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match subscribers::unsubscribe(&state.db, claims.subscriber_id).await {
        Ok(_) => {
            tracing::info!(subscriber_id = claims.subscriber_id, "unsubscribed");
            page(StatusCode::OK, "You are unsubscribed", "<p>You will not receive the weekly challenge any more.</p>")
        }
        Err(e) => internal(e),
    }
}
