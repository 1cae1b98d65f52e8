//! Typed clients for the API, named after what the product's users do: the operator
//! ([`AdminClient`], the admin key) and a subscriber ([`SubscriberClient`], a link token).
//!
//! Kept thin on purpose: one HTTP request per method, no retries, no assertions. A typed method
//! (`trigger_run`, `level`, …) panics with the status and body when the answer is not a success;
//! its `*_raw` twin returns the [`reqwest::Response`] for tests that assert on statuses, headers or
//! problem+json bodies. The views mirror the JSON the API answers (`api/src/*.rs`); statuses and
//! states stay strings, as on the wire.

use reqwest::{Method, RequestBuilder, Response};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value, json};

use crate::{ADMIN_KEY, processes::ApiHandle};

/// Reads a success answer's JSON body as `T`; panics naming the status and body otherwise.
pub async fn expect_json<T: DeserializeOwned>(response: Response) -> T {
    let status = response.status();
    let url = response.url().path().to_owned();
    let body = response.text().await.unwrap_or_else(|err| panic!("reading the body of {url}: {err}"));
    assert!(status.is_success(), "{url}: expected a success, got {status}: {body}");
    serde_json::from_str(&body)
        .unwrap_or_else(|err| panic!("{url} ({status}): body is not a {}: {err}: {body}", std::any::type_name::<T>()))
}

/// Sends `request` with the client that built it; panics naming the request if it gets no answer.
async fn send(request: RequestBuilder) -> Response {
    let (client, request) = request.build_split();
    let request = request.expect("a well-formed request");
    let what = format!("{} {}", request.method(), request.url().path());
    client.execute(request).await.unwrap_or_else(|err| panic!("{what}: {err}"))
}

// ---------------------------------------------------------------- views (`/v1/admin/*`)

/// A weekly run with its progress (`RunView`).
#[derive(Debug, Clone, Deserialize)]
pub struct Run {
    pub week: String,
    /// `fanning_out`, `sending` or `completed`.
    pub status: String,
    pub triggered_by: String,
    pub total: i64,
    pub enqueued: i64,
    pub pushes: i64,
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    pub failed: i64,
    pub skipped: i64,
    pub ambiguous: i64,
    pub rate_per_second: f64,
    pub eta_seconds: Option<f64>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    pub due_at: chrono::DateTime<chrono::Utc>,
    /// Set while the run is paused.
    pub paused: Option<Pause>,
    pub bounces: i64,
    pub complaints: i64,
    /// Skipped deliveries by reason.
    pub skip_reasons: std::collections::BTreeMap<String, i64>,
    /// The run's audit trail: pauses and resumes.
    pub events: Vec<RunEvent>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Pause {
    pub at: chrono::DateTime<chrono::Utc>,
    pub by: String,
    pub reason: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RunEvent {
    /// `paused` or `resumed`.
    pub action: String,
    pub by: String,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A row of the delivery ledger (`DeliveryView`).
#[derive(Debug, Clone, Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub subscriber_id: i64,
    pub week: String,
    pub kind: String,
    pub challenge_id: Option<i64>,
    /// `queued`, `sending`, `sent`, `failed` or `skipped`.
    pub state: String,
    pub attempts: i32,
    pub ambiguous: bool,
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// An operator's job: one email or a Shopify sync (`JobView`).
#[derive(Debug, Clone, Deserialize)]
pub struct Job {
    pub id: i64,
    /// `send_email` or `sync_subscribers`.
    pub kind: String,
    /// Path of this job's status, `/v1/admin/jobs/{id}?kind={kind}`.
    pub status_url: String,
    pub subscriber_id: Option<i64>,
    pub week: Option<String>,
    pub state: String,
    pub attempts: i32,
    pub reason: Option<String>,
    pub message_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeadLetter {
    pub id: i64,
    pub queue: String,
    pub job: Value,
    pub delivery_id: Option<i64>,
    pub attempts: i32,
    pub last_error: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Replayed {
    pub replayed: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueDepth {
    pub waiting: u64,
    pub scheduled: u64,
    pub inflight: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Challenge {
    pub id: i64,
    pub level: i16,
    pub position: i32,
    pub title: String,
    pub body: String,
    pub archived: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub status: String,
    pub level: Option<i16>,
    pub shopify_customer_id: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// What a CSV import did (`ImportView`).
#[derive(Debug, Clone, Deserialize)]
pub struct ImportReport {
    pub imported: u64,
    pub existing: u64,
    pub errors: Vec<ImportError>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImportError {
    /// CSV line (the header is line 1).
    pub line: u64,
    pub message: String,
}

/// A Shopify subscriber sync (`SyncView`).
#[derive(Debug, Clone, Deserialize)]
pub struct ShopifySync {
    pub id: i64,
    pub trigger: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    pub mode: Option<String>,
    pub pages: i32,
    pub bulk_lines: i64,
    pub customers_seen: i64,
    pub created: i64,
    pub reactivated: i64,
    pub unsubscribed: i64,
    pub skipped: i64,
    pub throttled: i64,
    pub error: Option<String>,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// An unsubscribe written back to Shopify (`WritebackView`).
#[derive(Debug, Clone, Deserialize)]
pub struct Writeback {
    pub id: i64,
    /// `gid://shopify/Customer/…`.
    pub customer_id: String,
    pub marketing_state: String,
    /// `pending`, `done` or `failed`.
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub done_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A challenge's email as the preview renders it (`EmailPreview`).
#[derive(Debug, Clone, Deserialize)]
pub struct EmailPreview {
    pub challenge_id: i64,
    pub subscriber_id: Option<i64>,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub headers: Vec<PreviewHeader>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PreviewHeader {
    pub name: String,
    pub value: String,
}

impl EmailPreview {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }
}

/// A test send (`TestSendView`).
#[derive(Debug, Clone, Deserialize)]
pub struct TestSend {
    pub id: i64,
    pub status_url: String,
    pub challenge_id: i64,
    pub subscriber_id: Option<i64>,
    pub to: String,
    /// `queued`, `sending`, `sent` or `failed`.
    pub state: String,
    pub message_id: Option<String>,
    pub error: Option<String>,
}

// ---------------------------------------------------------------- the operator

/// The operator's side of the API: every request carries the admin key as a bearer token
/// (the admin page: as the HTTP Basic password).
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base_url: String,
    key: String,
}

impl AdminClient {
    /// With the tests' admin key ([`ADMIN_KEY`]).
    pub fn new(base_url: impl Into<String>) -> Self {
        Self::with_key(base_url, ADMIN_KEY)
    }

    /// With another key (a wrong one, to see it refused).
    pub fn with_key(base_url: impl Into<String>, key: impl Into<String>) -> Self {
        Self { http: reqwest::Client::new(), base_url: base_url.into(), key: key.into() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request to `path` with the admin key, for what has no method here (extra headers such as
    /// `Idempotency-Key`, a deliberately malformed body).
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path)).bearer_auth(&self.key)
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    pub fn put(&self, path: &str) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    // Weekly runs.

    /// `POST /v1/admin/runs {"week": week}`: 201 created, 200 if the week already has a run.
    pub async fn trigger_run_raw(&self, week: &str) -> Response {
        self.trigger_run_with_raw(&json!({ "week": week })).await
    }

    /// `POST /v1/admin/runs` with any body.
    pub async fn trigger_run_with_raw(&self, body: &Value) -> Response {
        send(self.post("/v1/admin/runs").json(body)).await
    }

    /// Creates `week`'s run (or returns the existing one).
    pub async fn trigger_run(&self, week: &str) -> Run {
        expect_json(self.trigger_run_raw(week).await).await
    }

    pub async fn run_raw(&self, week: &str) -> Response {
        send(self.get(&format!("/v1/admin/runs/{week}"))).await
    }

    pub async fn run(&self, week: &str) -> Run {
        expect_json(self.run_raw(week).await).await
    }

    /// `POST /v1/admin/runs/{week}/pause` or `/resume` (`action`) as operator `by`, for `reason`.
    pub async fn run_action_raw(&self, week: &str, action: &str, by: &str, reason: &str) -> Response {
        send(self.post(&format!("/v1/admin/runs/{week}/{action}")).json(&json!({ "by": by, "reason": reason }))).await
    }

    /// Pauses `week`'s run (200 expected).
    pub async fn pause_run(&self, week: &str, by: &str, reason: &str) -> Run {
        expect_json(self.run_action_raw(week, "pause", by, reason).await).await
    }

    /// Resumes `week`'s run (200 expected).
    pub async fn resume_run(&self, week: &str, by: &str, reason: &str) -> Run {
        expect_json(self.run_action_raw(week, "resume", by, reason).await).await
    }

    pub async fn runs_raw(&self) -> Response {
        send(self.get("/v1/admin/runs")).await
    }

    pub async fn runs(&self) -> Vec<Run> {
        expect_json(self.runs_raw().await).await
    }

    /// The ledger of `week`, optionally only the deliveries in `state`.
    pub async fn run_deliveries(&self, week: &str, state: Option<&str>) -> Vec<Delivery> {
        let mut request = self.get(&format!("/v1/admin/runs/{week}/deliveries"));
        if let Some(state) = state {
            request = request.query(&[("state", state)]);
        }
        expect_json(send(request).await).await
    }

    pub async fn subscriber_deliveries(&self, subscriber_id: i64) -> Vec<Delivery> {
        expect_json(send(self.get(&format!("/v1/admin/subscribers/{subscriber_id}/deliveries"))).await).await
    }

    // Jobs.

    /// `POST /v1/admin/jobs` with any body.
    pub async fn create_job_raw(&self, body: &Value) -> Response {
        send(self.post("/v1/admin/jobs").json(body)).await
    }

    /// Sends one subscriber's email for a week that has a run: 201, 200 if the delivery exists.
    pub async fn send_email_job_raw(&self, subscriber_id: i64, week: &str) -> Response {
        self.create_job_raw(&json!({"kind": "send_email", "subscriber_id": subscriber_id, "week": week})).await
    }

    /// Starts a full Shopify sync as a job: 201, 409 without a store.
    pub async fn sync_subscribers_job_raw(&self) -> Response {
        self.create_job_raw(&json!({ "kind": "sync_subscribers" })).await
    }

    /// `GET /v1/admin/jobs/{id}` (no `kind`: the API looks the id up as an email first).
    pub async fn job(&self, id: i64) -> Job {
        expect_json(send(self.get(&format!("/v1/admin/jobs/{id}"))).await).await
    }

    /// A job's status, at the `status_url` the API gave for it.
    pub async fn job_at(&self, status_url: &str) -> Job {
        expect_json(send(self.get(status_url)).await).await
    }

    // Dead letters.

    pub async fn dead_letters(&self) -> Vec<DeadLetter> {
        expect_json(send(self.get("/v1/admin/dead-letters")).await).await
    }

    pub async fn replay_dead_letter_raw(&self, id: i64) -> Response {
        send(self.post(&format!("/v1/admin/dead-letters/{id}/replay"))).await
    }

    pub async fn replay_dead_letter(&self, id: i64) -> Replayed {
        expect_json(self.replay_dead_letter_raw(id).await).await
    }

    pub async fn replay_all_dead_letters(&self) -> Replayed {
        expect_json(send(self.post("/v1/admin/dead-letters/replay")).await).await
    }

    // Queues.

    pub async fn shopify_sync_queue_raw(&self) -> Response {
        send(self.get("/v1/admin/queues/shopify-sync")).await
    }

    pub async fn email_queue(&self) -> QueueDepth {
        expect_json(send(self.get("/v1/admin/queues/email")).await).await
    }

    // Challenges.

    /// `POST /v1/admin/challenges` with any body (`{"level", "position"?, "title", "body"}`).
    pub async fn create_challenge_raw(&self, body: &Value) -> Response {
        send(self.post("/v1/admin/challenges").json(body)).await
    }

    /// Authors a challenge, appended after the last one of its level.
    pub async fn create_challenge(&self, level: i16, title: &str, body: &str) -> Challenge {
        expect_json(self.create_challenge_raw(&json!({"level": level, "title": title, "body": body})).await).await
    }

    /// `PUT /v1/admin/challenges/{id}` with any body (`{"title", "body", "archived"}`).
    pub async fn update_challenge_raw(&self, id: i64, body: &Value) -> Response {
        send(self.put(&format!("/v1/admin/challenges/{id}")).json(body)).await
    }

    pub async fn challenge_raw(&self, id: i64) -> Response {
        send(self.get(&format!("/v1/admin/challenges/{id}"))).await
    }

    /// `GET /v1/admin/challenges` with `query` (`level`, `include_archived`).
    pub async fn challenges(&self, query: &[(&str, &str)]) -> Vec<Challenge> {
        expect_json(self.challenges_raw(query).await).await
    }

    pub async fn challenges_raw(&self, query: &[(&str, &str)]) -> Response {
        send(self.get("/v1/admin/challenges").query(query)).await
    }

    /// `POST /v1/admin/challenges/{id}/preview` with `body` (`{"subscriber_id"?, "email"?}`), or
    /// none at all.
    pub async fn preview_raw(&self, challenge_id: i64, body: Option<&Value>) -> Response {
        let request = self.post(&format!("/v1/admin/challenges/{challenge_id}/preview"));
        send(match body {
            Some(body) => request.json(body),
            None => request,
        })
        .await
    }

    /// The challenge's email for `subscriber_id` (or the sample subscriber).
    pub async fn preview(&self, challenge_id: i64, subscriber_id: Option<i64>) -> EmailPreview {
        let body = subscriber_id.map(|id| json!({ "subscriber_id": id }));
        expect_json(self.preview_raw(challenge_id, body.as_ref()).await).await
    }

    /// `POST /v1/admin/challenges/{id}/test-send` with any body (`{"to", "subscriber_id"?}`).
    pub async fn test_send_raw(&self, challenge_id: i64, body: &Value) -> Response {
        send(self.post(&format!("/v1/admin/challenges/{challenge_id}/test-send")).json(body)).await
    }

    /// `GET` a test send at its `status_url`.
    pub async fn test_send_at(&self, status_url: &str) -> TestSend {
        expect_json(send(self.get(status_url)).await).await
    }

    // Subscribers.

    /// `GET /v1/admin/subscribers` with `query` (`q`, `status`, `after_id`, `limit`).
    pub async fn subscribers_raw(&self, query: &[(&str, &str)]) -> Response {
        send(self.get("/v1/admin/subscribers").query(query)).await
    }

    pub async fn subscribers(&self, query: &[(&str, &str)]) -> Vec<Subscriber> {
        expect_json(self.subscribers_raw(query).await).await
    }

    /// Imports a CSV (`email,first_name,level`) sent as `text/plain`.
    pub async fn import_csv_raw(&self, csv: &str) -> Response {
        send(self.post("/v1/admin/subscribers/import").header("content-type", "text/plain").body(csv.to_owned())).await
    }

    pub async fn import_csv(&self, csv: &str) -> ImportReport {
        expect_json(self.import_csv_raw(csv).await).await
    }

    // Shopify.

    /// `POST /v1/admin/shopify/syncs`: 202 started, 200 with the sync already running.
    pub async fn start_shopify_sync_raw(&self) -> Response {
        send(self.post("/v1/admin/shopify/syncs")).await
    }

    pub async fn shopify_sync_raw(&self, id: i64) -> Response {
        send(self.get(&format!("/v1/admin/shopify/syncs/{id}"))).await
    }

    pub async fn shopify_sync(&self, id: i64) -> ShopifySync {
        expect_json(self.shopify_sync_raw(id).await).await
    }

    pub async fn shopify_writebacks(&self) -> Vec<Writeback> {
        expect_json(send(self.get("/v1/admin/shopify/writebacks")).await).await
    }

    // The admin page (HTTP Basic, the key as the password).

    pub async fn admin_page_raw(&self) -> Response {
        send(self.http.get(self.url("/admin")).basic_auth("ops", Some(&self.key))).await
    }

    /// The admin page's HTML.
    pub async fn admin_page(&self) -> String {
        let response = self.admin_page_raw().await;
        let status = response.status();
        let html = response.text().await.unwrap();
        assert!(status.is_success(), "/admin: expected a success, got {status}: {html}");
        html
    }
}

// ---------------------------------------------------------------- a subscriber

/// A challenge as the subscriber sees it (`GET /v1/challenges/{id}`).
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriberChallenge {
    pub id: i64,
    pub level: i16,
    pub title: String,
    pub body: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubmissionResult {
    pub submission_id: i64,
    pub passed: bool,
    pub level: i16,
    pub promoted: bool,
    pub passed_at_level: i64,
    pub passes_to_next_level: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Question {
    pub text: String,
    pub level: i16,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LevelChange {
    pub from_level: Option<i16>,
    pub to_level: i16,
    pub reason: String,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A subscriber's level and progress (`LevelView`).
#[derive(Debug, Clone, Deserialize)]
pub struct Level {
    /// `None` until the placement questionnaire is taken.
    pub level: Option<i16>,
    pub passed_at_level: i64,
    pub passes_to_next_level: i64,
    pub history: Vec<LevelChange>,
}

/// A subscriber following the links of their emails: the JSON API (`/v1/…`) and the HTML pages,
/// each request carrying the link token as `?token=` (or, for forms, a `token` field). Which
/// token it is (access, unsubscribe, expired, forged, none) is the test's choice. Redirects are
/// not followed, so a test sees the page's `303` and its `Location`.
#[derive(Clone)]
pub struct SubscriberClient {
    http: reqwest::Client,
    base_url: String,
    token: Option<String>,
}

impl SubscriberClient {
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self::build(base_url.into(), Some(token.into()))
    }

    /// Without any token.
    pub fn anonymous(base_url: impl Into<String>) -> Self {
        Self::build(base_url.into(), None)
    }

    /// With a fresh access token (valid for an hour) of `subscriber_id`.
    pub fn with_access(base_url: impl Into<String>, subscriber_id: i64) -> Self {
        Self::new(base_url, crate::link_token(subscriber_id, levelup_common::domain::tokens::Purpose::Access))
    }

    fn build(base_url: String, token: Option<String>) -> Self {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { http, base_url, token }
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request to `path` with the token in the query, for what has no method here.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let request = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => request.query(&[("token", token)]),
            None => request,
        }
    }

    // The JSON API.

    pub async fn challenge_raw(&self, id: i64) -> Response {
        send(self.request(Method::GET, &format!("/v1/challenges/{id}"))).await
    }

    pub async fn challenge(&self, id: i64) -> SubscriberChallenge {
        expect_json(self.challenge_raw(id).await).await
    }

    /// Submits an answer to a challenge, with whether it passed the checks.
    pub async fn submit_raw(&self, challenge_id: i64, answer: &str, passed: bool) -> Response {
        let body = json!({ "answer": answer, "passed": passed });
        send(self.request(Method::POST, &format!("/v1/challenges/{challenge_id}/submissions")).json(&body)).await
    }

    pub async fn submit(&self, challenge_id: i64, answer: &str, passed: bool) -> SubmissionResult {
        expect_json(self.submit_raw(challenge_id, answer, passed).await).await
    }

    /// The placement questions (public: no token needed).
    pub async fn questions(&self) -> Vec<Question> {
        expect_json(send(self.http.get(self.url("/v1/questionnaire"))).await).await
    }

    /// Answers the placement questionnaire (six yes/no answers).
    pub async fn answer_questionnaire_raw(&self, answers: &[bool]) -> Response {
        send(self.request(Method::POST, "/v1/questionnaire").json(&json!({ "answers": answers }))).await
    }

    pub async fn answer_questionnaire(&self, answers: &[bool]) -> Level {
        expect_json(self.answer_questionnaire_raw(answers).await).await
    }

    pub async fn level_raw(&self) -> Response {
        send(self.request(Method::GET, "/v1/level")).await
    }

    pub async fn level(&self) -> Level {
        expect_json(self.level_raw().await).await
    }

    // The pages.

    /// `GET /challenge/{id}`: the challenge with its answer form.
    pub async fn challenge_page(&self, id: i64) -> Response {
        send(self.request(Method::GET, &format!("/challenge/{id}"))).await
    }

    /// Posts the challenge page's form (the token travels in the form, as the page puts it).
    pub async fn submit_challenge_page(&self, id: i64, answer: &str, passed: bool) -> Response {
        let mut form = vec![("answer", answer)];
        if let Some(token) = &self.token {
            form.push(("token", token));
        }
        if passed {
            form.push(("passed", "yes"));
        }
        send(self.http.post(self.url(&format!("/challenge/{id}"))).form(&form)).await
    }

    /// `GET /level`: the level and progress page.
    pub async fn level_page(&self) -> Response {
        send(self.request(Method::GET, "/level")).await
    }

    /// `GET /questionnaire`: the placement page.
    pub async fn questionnaire_page(&self) -> Response {
        send(self.request(Method::GET, "/questionnaire")).await
    }

    /// Posts the questionnaire page's form: a ticked `q{i}` box for each `true` answer.
    pub async fn submit_questionnaire_page(&self, answers: &[bool]) -> Response {
        let ticked: Vec<String> = (0..answers.len()).filter(|i| answers[*i]).map(|i| format!("q{i}")).collect();
        let mut form: Vec<(&str, &str)> = ticked.iter().map(|name| (name.as_str(), "yes")).collect();
        if let Some(token) = &self.token {
            form.insert(0, ("token", token));
        }
        send(self.http.post(self.url("/questionnaire")).form(&form)).await
    }

    /// Follows a link the API gave (a `Location`), as is: it carries its own token.
    pub async fn follow(&self, location: &str) -> Response {
        send(self.http.get(self.url(location))).await
    }

    /// `GET /unsubscribe`: the confirmation page (changes nothing; mail scanners fetch links).
    pub async fn unsubscribe_page(&self) -> Response {
        send(self.request(Method::GET, "/unsubscribe")).await
    }

    /// `POST /unsubscribe` as the page's button sends it (no body).
    pub async fn unsubscribe_raw(&self) -> Response {
        send(self.request(Method::POST, "/unsubscribe")).await
    }

    /// The RFC 8058 one-click unsubscribe POST a mail client sends for `List-Unsubscribe-Post`.
    pub async fn one_click_unsubscribe(&self) -> Response {
        send(
            self.request(Method::POST, "/unsubscribe")
                .header("content-type", "application/x-www-form-urlencoded")
                .body("List-Unsubscribe=One-Click"),
        )
        .await
    }
}

impl ApiHandle {
    /// The operator, with the tests' admin key.
    pub fn admin(&self) -> AdminClient {
        AdminClient::new(&self.base_url)
    }

    /// A subscriber holding `token`.
    pub fn subscriber(&self, token: impl Into<String>) -> SubscriberClient {
        SubscriberClient::new(&self.base_url, token)
    }

    /// A subscriber with a fresh access token.
    pub fn subscriber_with_access(&self, subscriber_id: i64) -> SubscriberClient {
        SubscriberClient::with_access(&self.base_url, subscriber_id)
    }
}
