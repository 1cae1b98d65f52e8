//! A local fake of AWS SES v2 `SendEmail` (`POST /v2/email/outbound-emails`), speaking its wire
//! format: JSON body in, `{"MessageId": …}` out, errors as HTTP status + `x-amzn-ErrorType` +
//! `{"message": …}`. Records every request and can inject throttling, 5xx and latency.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use poem::{
    EndpointExt, Response, Route, Server, handler,
    http::StatusCode,
    listener::TcpAcceptor,
    post,
    web::{Data, Json},
};
use rand::Rng;
use serde_json::Value;

/// One `SendEmail` request as the fake saw it.
#[derive(Debug, Clone)]
pub struct SesRequest {
    pub to: Vec<String>,
    pub from: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub headers: Vec<(String, String)>,
    pub signed: bool,
    pub accepted: bool,
    pub status: u16,
    pub at: Instant,
}

impl SesRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// What the fake answers.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Probability of answering 429 `TooManyRequestsException`.
    pub throttle_probability: f64,
    /// Answer 503 to everything until this instant.
    pub unavailable_until: Option<Instant>,
    /// Answer 400 `MessageRejected` for these recipients.
    pub reject_recipients: Vec<String>,
    /// Answer 503 for these recipients.
    pub fail_recipients: Vec<String>,
    /// Delay before answering.
    pub latency: Duration,
}

#[derive(Default)]
struct State {
    requests: Mutex<Vec<SesRequest>>,
    faults: Mutex<Faults>,
    /// Drop subject and bodies from the record (for runs of hundreds of thousands).
    light: bool,
}

pub struct FakeSes {
    pub address: SocketAddr,
    state: Arc<State>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeSes {
    pub async fn start() -> Self {
        Self::start_with(State::default()).await
    }

    /// A fake that records recipients and outcomes but not message contents.
    pub async fn start_light() -> Self {
        Self::start_with(State { light: true, ..State::default() }).await
    }

    async fn start_with(state: State) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let state = Arc::new(state);
        let app = Route::new().at("/v2/email/outbound-emails", post(send_email)).data(state.clone());
        let acceptor = TcpAcceptor::from_std(listener).unwrap();
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self { address, state, _server: server }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn set_faults(&self, faults: Faults) {
        *self.state.faults.lock().unwrap() = faults;
    }

    pub fn requests(&self) -> Vec<SesRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    pub fn accepted(&self) -> Vec<SesRequest> {
        self.requests().into_iter().filter(|r| r.accepted).collect()
    }

    /// Environment that points a LevelUp process at this fake.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("LEVELUP_MAIL_TRANSPORT", "ses".to_owned()),
            ("LEVELUP_SES_ENDPOINT_URL", self.endpoint()),
            ("LEVELUP_SES_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "AKIDFAKESES".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "fake-secret-access-key".to_owned()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header("x-amzn-ErrorType", kind)
        .content_type("application/json")
        .body(serde_json::json!({ "message": message }).to_string())
}

fn str_at<'a>(body: &'a Value, pointer: &str) -> &'a str {
    body.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

#[handler]
async fn send_email(req: &poem::Request, Json(body): Json<Value>, Data(state): Data<&Arc<State>>) -> Response {
    let faults = state.faults.lock().unwrap().clone();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    let signed = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256 Credential=AKIDFAKESES/"));
    let mut request = SesRequest {
        to: body
            .pointer("/Destination/ToAddresses")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        from: str_at(&body, "/FromEmailAddress").to_owned(),
        subject: str_at(&body, "/Content/Simple/Subject/Data").to_owned(),
        text: str_at(&body, "/Content/Simple/Body/Text/Data").to_owned(),
        html: str_at(&body, "/Content/Simple/Body/Html/Data").to_owned(),
        headers: body
            .pointer("/Content/Simple/Headers")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|h| (str_at(h, "/Name").to_owned(), str_at(h, "/Value").to_owned())).collect())
            .unwrap_or_default(),
        signed,
        accepted: false,
        status: 200,
        at: Instant::now(),
    };
    let response = if faults.unavailable_until.is_some_and(|until| Instant::now() < until) {
        error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "Service unavailable")
    } else if faults.throttle_probability > 0.0 && rand::rng().random_bool(faults.throttle_probability.min(1.0)) {
        error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "Maximum sending rate exceeded.")
    } else if request.to.iter().any(|to| faults.fail_recipients.contains(to)) {
        error(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "Service unavailable")
    } else if request.to.iter().any(|to| faults.reject_recipients.contains(to)) {
        error(StatusCode::BAD_REQUEST, "MessageRejected", "Email address is not verified.")
    } else if request.to.is_empty() || request.from.is_empty() || request.subject.is_empty() {
        error(StatusCode::BAD_REQUEST, "BadRequestException", "Missing required field")
    } else {
        request.accepted = true;
        let id = format!("fake-{}", uuid::Uuid::new_v4().simple());
        Response::builder().content_type("application/json").body(serde_json::json!({ "MessageId": id }).to_string())
    };
    request.status = response.status().as_u16();
    if state.light {
        request.text = String::new();
        request.html = String::new();
        request.headers = Vec::new();
    }
    state.requests.lock().unwrap().push(request);
    response
}
