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
    IntoResponse, Response,
    http::{StatusCode, header},
};
use poem_openapi::{
    ApiResponse, Object, OpenApi, Tags,
    param::Path,
    payload::{Form, Html, Payload},
    registry::{MetaHeader, MetaMediaType, MetaResponse, MetaResponses, Registry},
    types::Type,
};
use serde::Deserialize;
use std::marker::PhantomData;

use crate::{
    AppState,
    auth::{AccessToken, UnsubscribeToken},
    raw_body::{RawBody, RawBodyDoc},
};

#[derive(Tags)]
enum PageTags {
    /// HTML pages reached from the links in the email.
    Pages,
}

pub struct PagesApi {
    pub state: AppState,
}

/// The challenge page's form.
#[derive(Object, Deserialize)]
pub struct SubmissionForm {
    /// The access token from the page's link.
    token: String,
    /// The subscriber's answer (1 to 20,000 characters).
    answer: String,
    /// Present (any value) when the subscriber ticks "my solution passes the checks".
    passed: Option<String>,
}

/// The questionnaire page's form: `qN` is present (any value) when statement N is ticked.
#[derive(Object, Deserialize)]
pub struct QuestionnaireForm {
    /// The access token from the page's link.
    token: String,
    q0: Option<String>,
    q1: Option<String>,
    q2: Option<String>,
    q3: Option<String>,
    q4: Option<String>,
    q5: Option<String>,
}

/// RFC 8058 one-click unsubscribe body (`List-Unsubscribe=One-Click`) as mail providers send it;
/// the confirmation page's form posts an empty body. Either way the token alone decides.
#[derive(Object)]
pub struct OneClickUnsubscribe {
    #[oai(rename = "List-Unsubscribe")]
    list_unsubscribe: Option<String>,
}

pub struct OneClickBody;

impl RawBodyDoc for OneClickBody {
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";
    const REQUIRED: bool = false;
    type Schema = OneClickUnsubscribe;
}

/// A page, or where to go next after a form, or (for a malformed request) a problem+json.
/// `K` says which of [`PAGE_STATUSES`] the operation answers, so each is documented exactly.
pub struct Page<K>(Result<(StatusCode, PageBody), poem::Error>, PhantomData<K>);

/// Which statuses an operation's page answers.
pub trait PageKind: Send {
    const STATUSES: &'static [u16];
}

/// A page that needs no database (questionnaire, unsubscribe confirmation).
pub struct Static;
/// A page read from the database (level).
pub struct View;
/// The challenge page: only challenges sent to this subscriber.
pub struct ChallengeView;
/// The challenge form: records a submission, then redirects to the level page.
pub struct SubmissionPost;
/// The questionnaire form: sets the level, then redirects to the level page.
pub struct QuestionnairePost;
/// A form that records something and answers with a page (unsubscribe).
pub struct Action;

impl PageKind for Static {
    const STATUSES: &'static [u16] = &[200, 401];
}
impl PageKind for View {
    const STATUSES: &'static [u16] = &[200, 401, 500];
}
impl PageKind for ChallengeView {
    const STATUSES: &'static [u16] = &[200, 401, 404, 500];
}
impl PageKind for SubmissionPost {
    const STATUSES: &'static [u16] = &[303, 401, 404, 422, 500];
}
impl PageKind for QuestionnairePost {
    const STATUSES: &'static [u16] = &[303, 401, 500];
}
impl PageKind for Action {
    const STATUSES: &'static [u16] = &[200, 401, 500];
}

enum PageBody {
    Html(String),
    SeeOther(String),
}

/// The statuses a page answers itself (problem+json ones are added by [`crate::documented`]).
const PAGE_STATUSES: [(u16, &str); 6] = [
    (200, "The page."),
    (303, "The form was taken: go to the level page (`Location`)."),
    (401, "The link's token is missing, forged, expired or made for another purpose."),
    (404, "We did not send this challenge to this subscriber."),
    (422, "The form is incomplete, e.g. an empty answer."),
    (500, "Failed on our side; the page says so."),
];

impl<K: PageKind> ApiResponse for Page<K> {
    const BAD_REQUEST_HANDLER: bool = true;

    fn meta() -> MetaResponses {
        let html = || vec![MetaMediaType { content_type: Html::<String>::CONTENT_TYPE, schema: String::schema_ref() }];
        let responses = PAGE_STATUSES
            .iter()
            .filter(|(status, _)| K::STATUSES.contains(status))
            .map(|&(status, description)| MetaResponse {
                description,
                status: Some(status),
                status_range: None,
                content: if status == 303 { Vec::new() } else { html() },
                headers: if status == 303 {
                    vec![MetaHeader {
                        name: "Location".to_owned(),
                        description: None,
                        required: true,
                        deprecated: false,
                        schema: String::schema_ref(),
                    }]
                } else {
                    Vec::new()
                },
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(_registry: &mut Registry) {}

    /// A missing token is the page's own 401; anything else malformed is a problem+json.
    fn from_parse_request_error(err: poem::Error) -> Self {
        if err.status() == StatusCode::UNAUTHORIZED {
            return error_page(
                StatusCode::UNAUTHORIZED,
                "This link is missing its token. Use the link from your email.",
            );
        }
        Self(Err(err), PhantomData)
    }
}

impl<K: Send> IntoResponse for Page<K> {
    fn into_response(self) -> Response {
        match self.0 {
            Ok((status, PageBody::Html(html))) => Response::builder()
                .status(status)
                .content_type(Html::<String>::CONTENT_TYPE)
                .header("Cache-Control", "no-store")
                .header("Referrer-Policy", "no-referrer")
                .body(html),
            Ok((status, PageBody::SeeOther(location))) => {
                Response::builder().status(status).header(header::LOCATION, location).finish()
            }
            Err(err) => crate::problem::error_response(&err),
        }
    }
}

fn page<K>(status: StatusCode, title: &str, body: &str) -> Page<K> {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{title} · LevelUp</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:auto;padding:1rem;line-height:1.5}}\
         textarea{{width:100%;min-height:10rem}}button{{padding:.6rem 1rem;font-size:1rem}}\
         table{{border-collapse:collapse}}td,th{{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}}</style>\
         </head><body><main>\n<h1>{title}</h1>\n{body}\n</main></body></html>\n",
        title = escape_html(title),
    );
    Page(Ok((status, PageBody::Html(html))), PhantomData)
}

fn error_page<K>(status: StatusCode, message: &str) -> Page<K> {
    page(status, "Sorry", &format!("<p>{}</p>", escape_html(message)))
}

/// The claims of a valid token, or the error page to answer.
/// The token's claims, if it verifies and its subscriber still exists (every page answers a
/// deleted subscriber the same way: 401).
async fn verify<K>(state: &AppState, token: &str, purpose: Purpose) -> Result<Claims, Page<K>> {
    let claims = state.verify(token, purpose).map_err(|err| {
        error_page(
            StatusCode::UNAUTHORIZED,
            &format!("This link cannot be used: {err}. Use the link from your latest email."),
        )
    })?;
    match subscribers::exists(&state.db, claims.subscriber_id).await {
        Ok(true) => Ok(claims),
        Ok(false) => Err(error_page(StatusCode::UNAUTHORIZED, "This subscription no longer exists.")),
        Err(e) => Err(internal(e)),
    }
}

fn internal<K>(err: impl std::fmt::Display) -> Page<K> {
    tracing::error!(error = %err, "page failed");
    error_page(StatusCode::INTERNAL_SERVER_ERROR, "Something went wrong on our side. Please try again later.")
}

fn see_other<K>(location: String) -> Page<K> {
    Page(Ok((StatusCode::SEE_OTHER, PageBody::SeeOther(location))), PhantomData)
}

#[OpenApi(tag = "PageTags::Pages")]
impl PagesApi {
    /// The challenge page, with the submission form.
    #[oai(path = "/challenge/:id", method = "get")]
    async fn challenge(&self, id: Path<i64>, token: AccessToken) -> Page<ChallengeView> {
        challenge_page(&self.state, *id, &token.0.key).await
    }

    /// Submit the challenge page's form; then to the level page (303).
    #[oai(path = "/challenge/:id", method = "post")]
    async fn submit_challenge(&self, id: Path<i64>, form: Form<SubmissionForm>) -> Page<SubmissionPost> {
        submit_challenge(&self.state, *id, form.0).await
    }

    /// The subscriber's level, progress to the next level and history.
    #[oai(path = "/level", method = "get")]
    async fn level(&self, token: AccessToken) -> Page<View> {
        level_page(&self.state, &token.0.key).await
    }

    /// The placement questionnaire.
    #[oai(path = "/questionnaire", method = "get")]
    async fn questionnaire(&self, token: AccessToken) -> Page<Static> {
        questionnaire_page(&self.state, &token.0.key).await
    }

    /// Submit the questionnaire: sets the level; then to the level page (303).
    #[oai(path = "/questionnaire", method = "post")]
    async fn submit_questionnaire(&self, form: Form<QuestionnaireForm>) -> Page<QuestionnairePost> {
        submit_questionnaire(&self.state, form.0).await
    }

    /// Asks to confirm; changes nothing (mail scanners fetch links).
    #[oai(path = "/unsubscribe", method = "get")]
    async fn unsubscribe_page(&self, token: UnsubscribeToken) -> Page<Static> {
        unsubscribe_page(&self.state, &token.0.key).await
    }

    /// Unsubscribes at once: RFC 8058 one-click (`List-Unsubscribe=One-Click`) or the
    /// confirmation form. The body is not needed; the token decides.
    #[oai(path = "/unsubscribe", method = "post")]
    async fn unsubscribe(&self, token: UnsubscribeToken, _body: RawBody<OneClickBody>) -> Page<Action> {
        unsubscribe(&self.state, &token.0.key).await
    }
}

fn encode(token: &str) -> String {
    url::form_urlencoded::byte_serialize(token.as_bytes()).collect()
}

async fn challenge_page(state: &AppState, id: i64, token: &str) -> Page<ChallengeView> {
    let claims = match verify(state, token, Purpose::Access).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    let challenge = match subscribers::sent_challenge(&state.db, claims.subscriber_id, id).await {
        Ok(Some(c)) => c,
        Ok(None) => return error_page(StatusCode::NOT_FOUND, "We did not send you this challenge."),
        Err(e) => return internal(e),
    };
    let link = escape_html(&encode(token));
    let token = escape_html(token);
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
        ),
    )
}

async fn submit_challenge(state: &AppState, id: i64, form: SubmissionForm) -> Page<SubmissionPost> {
    let claims = match verify(state, &form.token, Purpose::Access).await {
        Ok(c) => c,
        Err(page) => return page,
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
        Ok(_) => see_other(format!("/level?token={}", encode(&form.token))),
        Err(e) => internal(e),
    }
}

async fn level_page(state: &AppState, token: &str) -> Page<View> {
    let claims = match verify(state, token, Purpose::Access).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    let pool = &state.db;
    let subscriber = match subscribers::get(pool, claims.subscriber_id).await {
        Ok(Some(s)) => s,
        Ok(None) => return error_page(StatusCode::UNAUTHORIZED, "This subscription no longer exists."),
        Err(e) => return internal(e),
    };
    let link = escape_html(&encode(token));
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

async fn questionnaire_page(state: &AppState, token: &str) -> Page<Static> {
    if let Err(page) = verify(state, token, Purpose::Access).await {
        return page;
    }
    let token = escape_html(token);
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

async fn submit_questionnaire(state: &AppState, form: QuestionnaireForm) -> Page<QuestionnairePost> {
    let claims = match verify(state, &form.token, Purpose::Access).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    let answers: Vec<bool> =
        [&form.q0, &form.q1, &form.q2, &form.q3, &form.q4, &form.q5].iter().map(|a| a.is_some()).collect();
    let (score, level) = subscribers::placement_level(&answers);
    match subscribers::place(&state.db, claims.subscriber_id, &serde_json::json!(answers), score, level).await {
        Ok(()) => see_other(format!("/level?token={}", encode(&form.token))),
        Err(e) => internal(e),
    }
}

async fn unsubscribe_page(state: &AppState, token: &str) -> Page<Static> {
    if let Err(page) = verify(state, token, Purpose::Unsubscribe).await {
        return page;
    }
    let link = escape_html(&encode(token));
    page(
        StatusCode::OK,
        "Unsubscribe",
        &format!(
            "<p>Stop receiving the weekly LevelUp challenge?</p>\n<form method=\"post\" action=\"/unsubscribe?token={link}\">\n\
             <p><button type=\"submit\">Unsubscribe</button></p>\n</form>"
        ),
    )
}

async fn unsubscribe(state: &AppState, token: &str) -> Page<Action> {
    let claims = match verify(state, token, Purpose::Unsubscribe).await {
        Ok(c) => c,
        Err(page) => return page,
    };
    match subscribers::unsubscribe(&state.db, claims.subscriber_id).await {
        Ok(_) => {
            tracing::info!(subscriber_id = claims.subscriber_id, "unsubscribed");
            page(StatusCode::OK, "You are unsubscribed", "<p>You will not receive the weekly challenge any more.</p>")
        }
        Err(e) => internal(e),
    }
}
