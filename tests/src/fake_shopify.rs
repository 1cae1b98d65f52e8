//! A local fake of the Shopify GraphQL Admin API (`POST /admin/api/{version}/graphql.json`),
//! speaking its wire format: the `customers` connection with real cursor pagination and search
//! filter (`email_marketing_state:…`), the `customerEmailMarketingConsentUpdate` mutation, and
//! the cost-based leaky bucket (`extensions.cost.throttleStatus` on every answer, `THROTTLED`
//! when a query costs more than the bucket holds). It can inject 5xx answers and latency, and
//! counts what it served, so tests can tell a page served twice from a page lost.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use poem::{
    EndpointExt, Response, Route, Server, handler,
    http::StatusCode,
    listener::TcpAcceptor,
    post,
    web::{Data, Json},
};
use serde_json::{Value, json};

pub const ACCESS_TOKEN: &str = "shpat_fake_access_token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeCustomer {
    pub id: u64,
    pub first_name: Option<String>,
    pub email: Option<String>,
    /// `SUBSCRIBED`, `NOT_SUBSCRIBED`, `PENDING`, `UNSUBSCRIBED`, `REDACTED` or `INVALID`.
    pub marketing_state: String,
    pub marketing_updated_at: DateTime<Utc>,
}

impl FakeCustomer {
    pub fn gid(&self) -> String {
        format!("gid://shopify/Customer/{}", self.id)
    }
}

/// The leaky bucket: `maximum` points, refilled at `restore_rate` points per second; a query
/// costs 2 plus `node_cost` per requested node (`first`), and is refunded down to the nodes returned.
#[derive(Debug, Clone, Copy)]
pub struct CostModel {
    pub maximum: f64,
    pub restore_rate: f64,
    pub node_cost: f64,
}

impl CostModel {
    /// A large plan's bucket (2,000 points, 1,000 points/s): pages rarely wait.
    pub fn roomy() -> Self {
        Self { maximum: 2000.0, restore_rate: 1000.0, node_cost: 1.0 }
    }
}

impl Default for CostModel {
    /// Shopify's standard plan figures (1,000 points, 50 points/s).
    fn default() -> Self {
        Self { maximum: 1000.0, restore_rate: 50.0, node_cost: 1.0 }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ShopifyFaults {
    /// Answer 503 to the next this many requests.
    pub fail_next: u32,
    /// Answer 503 to everything until then.
    pub unavailable_until: Option<Instant>,
    pub latency: Duration,
    /// Break the next bulk result download off after this many lines.
    pub break_download_after_lines: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub requests: u64,
    /// Requests answered THROTTLED.
    pub throttled: u64,
    pub server_errors: u64,
    pub unauthorized: u64,
    /// Customer pages served, by the `after` cursor they were asked for (`""`: the first page).
    pub pages_served: HashMap<String, u32>,
    /// Consent updates received: (customer gid, marketing state).
    pub consent_updates: Vec<(String, String)>,
    pub bulk_operations: u32,
    /// Bulk result downloads started (a resumed download counts again).
    pub bulk_downloads: u32,
}

struct BulkOperation {
    id: u64,
    ready_at: Instant,
    /// The JSONL result, as Shopify writes it: one customer node per line.
    result: String,
    objects: usize,
}

struct Bucket {
    available: f64,
    at: Instant,
}

struct State {
    customers: Mutex<Vec<FakeCustomer>>,
    model: CostModel,
    bucket: Mutex<Bucket>,
    faults: Mutex<ShopifyFaults>,
    stats: Mutex<Stats>,
    bulk: Mutex<Vec<BulkOperation>>,
    /// How long a bulk operation runs before it completes.
    bulk_duration: Mutex<Duration>,
    address: Mutex<Option<SocketAddr>>,
}

pub struct FakeShopify {
    pub address: SocketAddr,
    state: Arc<State>,
    _server: tokio::task::JoinHandle<()>,
}

impl FakeShopify {
    pub async fn start(customers: Vec<FakeCustomer>, model: CostModel) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let mut customers = customers;
        customers.sort_by_key(|c| c.id);
        let state = Arc::new(State {
            customers: Mutex::new(customers),
            model,
            bucket: Mutex::new(Bucket { available: model.maximum, at: Instant::now() }),
            faults: Mutex::default(),
            stats: Mutex::default(),
            bulk: Mutex::default(),
            bulk_duration: Mutex::new(Duration::from_millis(300)),
            address: Mutex::new(Some(address)),
        });
        let app = Route::new()
            .at("/admin/api/:version/graphql.json", post(graphql))
            .at("/bulk/:id", poem::get(bulk_result))
            .data(state.clone());
        let acceptor = TcpAcceptor::from_std(listener).unwrap();
        let server = tokio::spawn(async move {
            let _ = Server::new_with_acceptor(acceptor).run(app).await;
        });
        Self { address, state, _server: server }
    }

    /// Environment that points a LevelUp process at this fake store.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("LEVELUP_SHOPIFY_SHOP".to_owned(), format!("http://{}", self.address)),
            ("LEVELUP_SHOPIFY_ACCESS_TOKEN".to_owned(), ACCESS_TOKEN.to_owned()),
            ("LEVELUP_SHOPIFY_API_VERSION".to_owned(), "2025-10".to_owned()),
        ]
    }

    pub fn set_faults(&self, faults: ShopifyFaults) {
        *self.state.faults.lock().unwrap() = faults;
    }

    pub fn stats(&self) -> Stats {
        self.state.stats.lock().unwrap().clone()
    }

    pub fn customers(&self) -> Vec<FakeCustomer> {
        self.state.customers.lock().unwrap().clone()
    }

    /// Adds customers to the store (ids must be new).
    pub fn add_customers(&self, more: Vec<FakeCustomer>) {
        let mut customers = self.state.customers.lock().unwrap();
        customers.extend(more);
        customers.sort_by_key(|c| c.id);
    }

    pub fn set_bulk_duration(&self, duration: Duration) {
        *self.state.bulk_duration.lock().unwrap() = duration;
    }

    /// Changes a customer's consent in the store (as the customer or the merchant would).
    pub fn set_marketing_state(&self, id: u64, state: &str) {
        self.set_marketing_state_at(id, state, Utc::now());
    }

    pub fn set_marketing_state_at(&self, id: u64, state: &str, at: DateTime<Utc>) {
        let mut customers = self.state.customers.lock().unwrap();
        let customer = customers.iter_mut().find(|c| c.id == id).expect("customer exists");
        customer.marketing_state = state.to_owned();
        customer.marketing_updated_at = at;
    }
}

/// `count` customers with ids from `first_id`: three in five SUBSCRIBED, the rest spread over the
/// other states; one in 997 without an email address, one in 7 without a first name.
pub fn mixed_customers(first_id: u64, count: u64) -> Vec<FakeCustomer> {
    let states = ["NOT_SUBSCRIBED", "UNSUBSCRIBED", "PENDING", "REDACTED", "INVALID"];
    let at = "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap();
    (0..count)
        .map(|i| {
            let id = first_id + i;
            let state = if i % 5 < 3 { "SUBSCRIBED" } else { states[(i as usize / 5) % states.len()] };
            FakeCustomer {
                id,
                first_name: (i % 7 != 0).then(|| format!("Customer{id}")),
                // Shopify allows customers without an email address (phone-only).
                email: (i % 997 != 0).then(|| format!("Customer.{id}@Example.com")),
                marketing_state: state.to_owned(),
                marketing_updated_at: at,
            }
        })
        .collect()
}

fn cursor_for(id: u64) -> String {
    STANDARD.encode(format!("{{\"last_id\":{id}}}"))
}

fn id_from_cursor(cursor: &str) -> Option<u64> {
    let raw = STANDARD.decode(cursor).ok()?;
    let value: Value = serde_json::from_slice(&raw).ok()?;
    value.get("last_id")?.as_u64()
}

fn graphql_error(message: &str, code: &str) -> Value {
    json!({ "message": message, "extensions": { "code": code } })
}

#[handler]
async fn graphql(req: &poem::Request, Json(body): Json<Value>, Data(state): Data<&Arc<State>>) -> Response {
    let faults = state.faults.lock().unwrap().clone();
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    state.stats.lock().unwrap().requests += 1;
    if req.headers().get("x-shopify-access-token").and_then(|v| v.to_str().ok()) != Some(ACCESS_TOKEN) {
        state.stats.lock().unwrap().unauthorized += 1;
        return Response::builder().status(StatusCode::UNAUTHORIZED).content_type("application/json").body(
            json!({ "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)" })
                .to_string(),
        );
    }
    let failing = {
        let mut faults = state.faults.lock().unwrap();
        let fail = faults.fail_next > 0 || faults.unavailable_until.is_some_and(|until| Instant::now() < until);
        faults.fail_next = faults.fail_next.saturating_sub(1);
        fail
    };
    if failing {
        state.stats.lock().unwrap().server_errors += 1;
        return Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .content_type("text/html")
            .body("<html><body>Service temporarily unavailable</body></html>");
    }
    let query = body.get("query").and_then(Value::as_str).unwrap_or_default();
    let variables = body.get("variables").cloned().unwrap_or(Value::Null);
    let answer = if query.contains("customerEmailMarketingConsentUpdate") {
        consent_update(state, &variables)
    } else if query.contains("bulkOperationRunQuery") {
        run_bulk(state, &variables)
    } else if query.contains("node(id:") {
        bulk_status(state, &variables)
    } else if query.contains("customersCount") {
        count(state, &variables)
    } else if query.contains("customers(") {
        customers_page(state, &variables)
    } else {
        Answer::error(graphql_error("Parse error: unsupported query", "PARSE_ERROR"))
    };
    // The bucket: refill, then charge the requested cost up front (THROTTLED if short) and
    // refund down to the actual cost.
    let model = state.model;
    let (requested, actual) = (answer.requested, answer.actual);
    let (throttled, available) = {
        let mut bucket = state.bucket.lock().unwrap();
        let now = Instant::now();
        bucket.available =
            (bucket.available + now.duration_since(bucket.at).as_secs_f64() * model.restore_rate).min(model.maximum);
        bucket.at = now;
        if bucket.available < requested {
            (true, bucket.available)
        } else {
            bucket.available -= actual;
            (false, bucket.available)
        }
    };
    let throttle_status = json!({
        "maximumAvailable": model.maximum,
        "currentlyAvailable": available.floor(),
        "restoreRate": model.restore_rate,
    });
    let body = if throttled {
        state.stats.lock().unwrap().throttled += 1;
        json!({
            "errors": [graphql_error("Throttled", "THROTTLED")],
            "extensions": { "cost": { "requestedQueryCost": requested, "actualQueryCost": null, "throttleStatus": throttle_status } }
        })
    } else {
        if let Some(effect) = answer.effect {
            effect(state);
        }
        let mut body = json!({
            "extensions": { "cost": { "requestedQueryCost": requested, "actualQueryCost": actual, "throttleStatus": throttle_status } }
        });
        if let Some(data) = answer.data {
            body["data"] = data;
        }
        if let Some(error) = answer.error {
            body["errors"] = json!([error]);
        }
        body
    };
    Response::builder().content_type("application/json").body(body.to_string())
}

type Effect = Box<dyn FnOnce(&State) + Send>;

struct Answer {
    data: Option<Value>,
    error: Option<Value>,
    requested: f64,
    actual: f64,
    /// Applied only if the request is not throttled.
    effect: Option<Effect>,
}

impl Answer {
    fn error(error: Value) -> Self {
        Self { data: None, error: Some(error), requested: 1.0, actual: 1.0, effect: None }
    }
}

fn customers_page(state: &State, variables: &Value) -> Answer {
    let first = variables.get("first").and_then(Value::as_u64).unwrap_or(0);
    if first == 0 || first > 250 {
        return Answer::error(graphql_error("The 'first' argument must be between 1 and 250", "BAD_USER_INPUT"));
    }
    let after = variables.get("after").and_then(Value::as_str);
    let after_id = match after {
        None => 0,
        Some(cursor) => match id_from_cursor(cursor) {
            Some(id) => id,
            None => return Answer::error(graphql_error("Invalid cursor", "BAD_USER_INPUT")),
        },
    };
    let wanted_state = state_filter(variables.get("query").and_then(Value::as_str));
    let customers = state.customers.lock().unwrap();
    let mut matching = customers
        .iter()
        .filter(|c| c.id > after_id)
        .filter(|c| wanted_state.as_ref().is_none_or(|s| *s == c.marketing_state));
    let page: Vec<&FakeCustomer> = matching.by_ref().take(first as usize).collect();
    let has_next_page = matching.next().is_some();
    let nodes: Vec<Value> = page.iter().map(|c| node_json(c)).collect();
    let end_cursor = page.last().map(|c| cursor_for(c.id));
    let start_cursor = page.first().map(|c| cursor_for(c.id));
    let served = after.unwrap_or_default().to_owned();
    let node_cost = state.model.node_cost;
    Answer {
        data: Some(json!({ "customers": {
            "nodes": nodes,
            "pageInfo": { "hasNextPage": has_next_page, "hasPreviousPage": after.is_some(), "endCursor": end_cursor, "startCursor": start_cursor }
        }})),
        error: None,
        requested: 2.0 + first as f64 * node_cost,
        actual: 2.0 + page.len() as f64 * node_cost,
        effect: Some(Box::new(move |state: &State| {
            *state.stats.lock().unwrap().pages_served.entry(served).or_default() += 1;
        })),
    }
}

fn consent_update(state: &State, variables: &Value) -> Answer {
    let input = variables.get("input").cloned().unwrap_or(Value::Null);
    let gid = input.get("customerId").and_then(Value::as_str).unwrap_or_default().to_owned();
    let marketing_state =
        input.pointer("/emailMarketingConsent/marketingState").and_then(Value::as_str).unwrap_or_default().to_owned();
    let at = input
        .pointer("/emailMarketingConsent/consentUpdatedAt")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now);
    let exists = state.customers.lock().unwrap().iter().any(|c| c.gid() == gid);
    let valid_state = ["SUBSCRIBED", "UNSUBSCRIBED", "NOT_SUBSCRIBED", "PENDING"].contains(&marketing_state.as_str());
    let user_errors = match (exists, valid_state) {
        (false, _) => json!([{ "field": ["customerId"], "message": "Customer does not exist" }]),
        (true, false) => {
            json!([{ "field": ["emailMarketingConsent", "marketingState"], "message": "Marketing state is invalid" }])
        }
        (true, true) => json!([]),
    };
    let ok = exists && valid_state;
    let customer = ok.then(|| json!({ "id": gid, "defaultEmailAddress": { "marketingState": marketing_state } }));
    Answer {
        data: Some(
            json!({ "customerEmailMarketingConsentUpdate": { "customer": customer, "userErrors": user_errors } }),
        ),
        error: None,
        requested: 10.0,
        actual: 10.0,
        effect: Some(Box::new(move |state: &State| {
            if ok {
                let mut customers = state.customers.lock().unwrap();
                if let Some(c) = customers.iter_mut().find(|c| c.gid() == gid) {
                    c.marketing_state = marketing_state.clone();
                    c.marketing_updated_at = at;
                }
                state.stats.lock().unwrap().consent_updates.push((gid, marketing_state));
            }
        })),
    }
}

fn state_filter(query: Option<&str>) -> Option<String> {
    query
        .and_then(|q| {
            q.split(|c: char| c.is_whitespace() || c == '"' || c == '\\')
                .find_map(|t| t.strip_prefix("email_marketing_state:"))
        })
        .map(str::to_uppercase)
}

fn node_json(c: &FakeCustomer) -> Value {
    json!({
        "id": c.gid(),
        "firstName": c.first_name,
        "defaultEmailAddress": c.email.as_ref().map(|email| json!({
            "emailAddress": email,
            "marketingState": c.marketing_state,
            "marketingUpdatedAt": c.marketing_updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        })),
    })
}

fn count(state: &State, variables: &Value) -> Answer {
    let wanted = state_filter(variables.get("query").and_then(Value::as_str));
    let limit = variables.get("limit").and_then(Value::as_u64).unwrap_or(10_000);
    let n = state
        .customers
        .lock()
        .unwrap()
        .iter()
        .filter(|c| wanted.as_ref().is_none_or(|s| *s == c.marketing_state))
        .count() as u64;
    let precision = if n > limit { "AT_LEAST" } else { "EXACT" };
    Answer {
        data: Some(json!({ "customersCount": { "count": n.min(limit), "precision": precision } })),
        error: None,
        requested: 1.0,
        actual: 1.0,
        effect: None,
    }
}

fn run_bulk(state: &State, variables: &Value) -> Answer {
    let inner = variables.get("query").and_then(Value::as_str).unwrap_or_default().to_owned();
    let running = state.bulk.lock().unwrap().iter().any(|op| Instant::now() < op.ready_at);
    if running {
        return Answer {
            data: Some(json!({ "bulkOperationRunQuery": { "bulkOperation": null, "userErrors": [
                { "field": null, "message": "A bulk query operation for this app and shop is already in progress" }
            ] } })),
            error: None,
            requested: 10.0,
            actual: 10.0,
            effect: None,
        };
    }
    if !inner.contains("customers") {
        return Answer::error(graphql_error("Bulk query must select a connection", "BAD_USER_INPUT"));
    }
    let wanted = state_filter(Some(&inner));
    let customers = state.customers.lock().unwrap();
    let selected: Vec<&FakeCustomer> =
        customers.iter().filter(|c| wanted.as_ref().is_none_or(|s| *s == c.marketing_state)).collect();
    let mut result = String::new();
    for c in &selected {
        result.push_str(&node_json(c).to_string());
        result.push('\n');
    }
    let objects = selected.len();
    let mut bulk = state.bulk.lock().unwrap();
    let id = bulk.len() as u64 + 1;
    let ready_at = Instant::now() + *state.bulk_duration.lock().unwrap();
    bulk.push(BulkOperation { id, ready_at, result, objects });
    state.stats.lock().unwrap().bulk_operations += 1;
    Answer {
        data: Some(json!({ "bulkOperationRunQuery": {
            "bulkOperation": { "id": format!("gid://shopify/BulkOperation/{id}"), "status": "CREATED" },
            "userErrors": []
        } })),
        error: None,
        requested: 10.0,
        actual: 10.0,
        effect: None,
    }
}

fn bulk_status(state: &State, variables: &Value) -> Answer {
    let id = variables
        .get("id")
        .and_then(Value::as_str)
        .and_then(|gid| gid.strip_prefix("gid://shopify/BulkOperation/"))
        .and_then(|n| n.parse::<u64>().ok());
    let bulk = state.bulk.lock().unwrap();
    let node = id.and_then(|id| bulk.iter().find(|op| op.id == id)).map(|op| {
        let done = Instant::now() >= op.ready_at;
        let address = state.address.lock().unwrap().expect("address");
        json!({
            "id": format!("gid://shopify/BulkOperation/{}", op.id),
            "status": if done { "COMPLETED" } else { "RUNNING" },
            "errorCode": null,
            "objectCount": if done { op.objects } else { op.objects / 2 }.to_string(),
            "url": (done && op.objects > 0).then(|| format!("http://{address}/bulk/{}", op.id)),
        })
    });
    Answer { data: Some(json!({ "node": node })), error: None, requested: 1.0, actual: 1.0, effect: None }
}

/// The JSONL result as a stream (storage.googleapis.com in real life; no Shopify token needed).
#[handler]
async fn bulk_result(poem::web::Path(id): poem::web::Path<u64>, Data(state): Data<&Arc<State>>) -> Response {
    let result = state.bulk.lock().unwrap().iter().find(|op| op.id == id).map(|op| op.result.clone());
    let Some(result) = result else { return Response::builder().status(StatusCode::NOT_FOUND).finish() };
    state.stats.lock().unwrap().bulk_downloads += 1;
    let break_after = state.faults.lock().unwrap().break_download_after_lines.take();
    let lines: Vec<Result<Vec<u8>, std::io::Error>> = match break_after {
        None => result.lines().map(|l| Ok(format!("{l}\n").into_bytes())).collect(),
        Some(n) => result
            .lines()
            .take(n)
            .map(|l| Ok(format!("{l}\n").into_bytes()))
            .chain(std::iter::once(Err(std::io::Error::other("connection reset"))))
            .collect(),
    };
    Response::builder()
        .content_type("application/jsonl")
        .body(poem::Body::from_bytes_stream(futures::stream::iter(lines)))
}
