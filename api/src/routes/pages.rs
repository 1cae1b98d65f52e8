//! The subscriber's pages, reached from the links in the email: challenge (with a submission
//! form), level and progress, questionnaire, unsubscribe. Plain, accessible HTML; no JavaScript.
//! Unsubscribe follows RFC 8058: `POST` (one-click, or the confirmation form) unsubscribes at
//! once; `GET` only shows a confirmation page, because mail scanners fetch links.

use askama::Template;
use levelup_common::{
    domain::{placement::QUESTIONS, tokens::Purpose},
    flows::{FlowError, subscriber},
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
    http::auth::{AccessToken, UnsubscribeToken},
    http::raw_body::{RawBody, RawBodyDoc},
    views,
};

#[derive(Tags)]
enum PageTags {
    /// HTML pages reached from the links in the email.
    Pages,
}

pub(crate) struct PagesApi {
    pub state: AppState,
}

/// The challenge page's form.
#[derive(Object, Deserialize)]
pub(crate) struct SubmissionForm {
    /// The access token from the page's link.
    token: String,
    /// The subscriber's answer (1 to 20,000 characters).
    answer: String,
    /// Present (any value) when the subscriber ticks "my solution passes the checks".
    passed: Option<String>,
}

/// The questionnaire page's form: `qN` is present (any value) when statement N is ticked.
#[derive(Object, Deserialize)]
pub(crate) struct QuestionnaireForm {
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
pub(crate) struct OneClickUnsubscribe {
    #[oai(rename = "List-Unsubscribe")]
    list_unsubscribe: Option<String>,
}

pub(crate) struct OneClickBody;

impl RawBodyDoc for OneClickBody {
    const CONTENT_TYPE: &'static str = "application/x-www-form-urlencoded";
    const REQUIRED: bool = false;
    type Schema = OneClickUnsubscribe;
}

/// A page, or where to go next after a form, or (for a malformed request) a problem+json.
/// `K` says which of [`PAGE_STATUSES`] the operation answers, so each is documented exactly.
pub(crate) struct Page<K>(Result<(StatusCode, PageBody), poem::Error>, PhantomData<K>);

/// Which statuses an operation's page answers.
pub(crate) trait PageKind: Send {
    const STATUSES: &'static [u16];
}

/// A page that needs no database (questionnaire, unsubscribe confirmation).
pub(crate) struct Static;
/// A page read from the database (level).
pub(crate) struct View;
/// The challenge page: only challenges sent to this subscriber.
pub(crate) struct ChallengeView;
/// The challenge form: records a submission, then redirects to the level page.
pub(crate) struct SubmissionPost;
/// The questionnaire form: sets the level, then redirects to the level page.
pub(crate) struct QuestionnairePost;
/// A form that records something and answers with a page (unsubscribe).
pub(crate) struct Action;

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

/// The statuses a page answers itself (problem+json ones are added by [`crate::http::documented`]).
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
            Err(err) => crate::http::problem::error_response(&err),
        }
    }
}

fn page<K>(status: StatusCode, view: impl Template) -> Page<K> {
    match view.render() {
        Ok(html) => Page(Ok((status, PageBody::Html(html))), PhantomData),
        Err(err) => {
            tracing::error!(error = %err, "page failed to render");
            Page(Err(poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR)), PhantomData)
        }
    }
}

fn error_page<K>(status: StatusCode, message: &str) -> Page<K> {
    page(status, views::ErrorPage { message })
}

/// The subscriber of a valid token who still exists, or the error page to answer (every page
/// answers a deleted subscriber the same way: 401).
async fn verify<K>(state: &AppState, token: &str, purpose: Purpose) -> Result<i64, Page<K>> {
    let claims = state.verify(token, purpose).map_err(|err| {
        error_page(
            StatusCode::UNAUTHORIZED,
            &format!("This link cannot be used: {err}. Use the link from your latest email."),
        )
    })?;
    subscriber::ensure_exists(&state.db, claims.subscriber_id).await?;
    Ok(claims.subscriber_id)
}

/// A flow's refusal or failure, as the page that says so.
impl<K> From<FlowError> for Page<K> {
    fn from(err: FlowError) -> Self {
        match err {
            FlowError::SubscriberGone => error_page(StatusCode::UNAUTHORIZED, "This subscription no longer exists."),
            FlowError::ChallengeNotSent => error_page(StatusCode::NOT_FOUND, "We did not send you this challenge."),
            FlowError::Invalid { .. } => {
                error_page(StatusCode::UNPROCESSABLE_ENTITY, "Please write an answer (at most 20,000 characters).")
            }
            FlowError::Database(err) => {
                tracing::error!(error = %crate::http::error::cause_chain(&err), "page failed");
                error_page(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong on our side. Please try again later.",
                )
            }
        }
    }
}

fn see_other<K>(location: String) -> Page<K> {
    Page(Ok((StatusCode::SEE_OTHER, PageBody::SeeOther(location))), PhantomData)
}

#[OpenApi(tag = "PageTags::Pages")]
impl PagesApi {
    /// The challenge page, with the submission form.
    #[oai(path = "/challenge/:id", method = "get")]
    async fn challenge(&self, id: Path<i64>, token: AccessToken) -> Page<ChallengeView> {
        challenge_page(&self.state, *id, &token.0.key).await.unwrap_or_else(|page| page)
    }

    /// Submit the challenge page's form; then to the level page (303).
    #[oai(path = "/challenge/:id", method = "post")]
    async fn submit_challenge(&self, id: Path<i64>, form: Form<SubmissionForm>) -> Page<SubmissionPost> {
        submit_challenge(&self.state, *id, form.0).await.unwrap_or_else(|page| page)
    }

    /// The subscriber's level, progress to the next level and history.
    #[oai(path = "/level", method = "get")]
    async fn level(&self, token: AccessToken) -> Page<View> {
        level_page(&self.state, &token.0.key).await.unwrap_or_else(|page| page)
    }

    /// The placement questionnaire.
    #[oai(path = "/questionnaire", method = "get")]
    async fn questionnaire(&self, token: AccessToken) -> Page<Static> {
        questionnaire_page(&self.state, &token.0.key).await.unwrap_or_else(|page| page)
    }

    /// Submit the questionnaire: sets the level; then to the level page (303).
    #[oai(path = "/questionnaire", method = "post")]
    async fn submit_questionnaire(&self, form: Form<QuestionnaireForm>) -> Page<QuestionnairePost> {
        submit_questionnaire(&self.state, form.0).await.unwrap_or_else(|page| page)
    }

    /// Asks to confirm; changes nothing (mail scanners fetch links).
    #[oai(path = "/unsubscribe", method = "get")]
    async fn unsubscribe_page(&self, token: UnsubscribeToken) -> Page<Static> {
        unsubscribe_page(&self.state, &token.0.key).await.unwrap_or_else(|page| page)
    }

    /// Unsubscribes at once: RFC 8058 one-click (`List-Unsubscribe=One-Click`) or the
    /// confirmation form. The body is not needed; the token decides.
    #[oai(path = "/unsubscribe", method = "post")]
    async fn unsubscribe(&self, token: UnsubscribeToken, _body: RawBody<OneClickBody>) -> Page<Action> {
        unsubscribe(&self.state, &token.0.key).await.unwrap_or_else(|page| page)
    }
}

fn encode(token: &str) -> String {
    url::form_urlencoded::byte_serialize(token.as_bytes()).collect()
}

/// Each page: `Ok` the page asked for, `Err` the error page to answer instead.
type PageResult<K> = Result<Page<K>, Page<K>>;

async fn challenge_page(state: &AppState, id: i64, token: &str) -> PageResult<ChallengeView> {
    let subscriber_id = verify(state, token, Purpose::Access).await?;
    let challenge = subscriber::challenge(&state.db, subscriber_id, id).await?;
    let view = views::ChallengePage {
        id: challenge.id,
        level: challenge.level,
        title: &challenge.title,
        body: &challenge.body,
        token,
    };
    Ok(page(StatusCode::OK, view))
}

async fn submit_challenge(state: &AppState, id: i64, form: SubmissionForm) -> PageResult<SubmissionPost> {
    let subscriber_id = verify(state, &form.token, Purpose::Access).await?;
    // The form's answer is `required`: an empty one is refused here, not stored.
    if form.answer.trim().is_empty() {
        return Err(FlowError::Invalid { field: "answer", message: "required".to_owned() }.into());
    }
    let submission = subscriber::Submission { answer: &form.answer, passed: form.passed.is_some() };
    subscriber::submit(&state.db, subscriber_id, id, submission, state.config.promotion_passes).await?;
    Ok(see_other(format!("/level?token={}", encode(&form.token))))
}

async fn level_page(state: &AppState, token: &str) -> PageResult<View> {
    let subscriber_id = verify(state, token, Purpose::Access).await?;
    let summary = subscriber::level_summary(&state.db, subscriber_id, state.config.promotion_passes).await?;
    let Some(level) = summary.level else {
        return Ok(page(StatusCode::OK, views::NoLevelPage { token }));
    };
    let view = views::LevelPage {
        level,
        passed: summary.passed_at_level,
        needed: summary.passes_needed,
        history: &summary.history,
    };
    Ok(page(StatusCode::OK, view))
}

async fn questionnaire_page(state: &AppState, token: &str) -> PageResult<Static> {
    verify(state, token, Purpose::Access).await?;
    let statements: Vec<&str> = QUESTIONS.iter().map(|(text, _)| *text).collect();
    Ok(page(StatusCode::OK, views::QuestionnairePage { statements: &statements, token }))
}

async fn submit_questionnaire(state: &AppState, form: QuestionnaireForm) -> PageResult<QuestionnairePost> {
    let subscriber_id = verify(state, &form.token, Purpose::Access).await?;
    let answers: Vec<bool> =
        [&form.q0, &form.q1, &form.q2, &form.q3, &form.q4, &form.q5].iter().map(|a| a.is_some()).collect();
    subscriber::place(&state.db, subscriber_id, &answers).await?;
    Ok(see_other(format!("/level?token={}", encode(&form.token))))
}

async fn unsubscribe_page(state: &AppState, token: &str) -> PageResult<Static> {
    verify(state, token, Purpose::Unsubscribe).await?;
    Ok(page(StatusCode::OK, views::UnsubscribeConfirmPage { token }))
}

async fn unsubscribe(state: &AppState, token: &str) -> PageResult<Action> {
    let subscriber_id = verify(state, token, Purpose::Unsubscribe).await?;
    subscriber::unsubscribe(&state.db, subscriber_id).await?;
    Ok(page(StatusCode::OK, views::UnsubscribedPage))
}
