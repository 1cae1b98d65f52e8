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
        });
        let app = Route::new().at("/admin/api/:version/graphql.json", post(graphql)).data(state.clone());
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

    /// Changes a customer's consent in the store (as the customer or the merchant would).
    pub fn set_marketing_state(&self, id: u64, state: &str) {
        let mut customers = self.state.customers.lock().unwrap();
        let customer = customers.iter_mut().find(|c| c.id == id).expect("customer exists");
        customer.marketing_state = state.to_owned();
        customer.marketing_updated_at = Utc::now();
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
    let wanted_state = variables
        .get("query")
        .and_then(Value::as_str)
        .and_then(|q| q.split_whitespace().find_map(|term| term.strip_prefix("email_marketing_state:")))
        .map(str::to_uppercase);
    let customers = state.customers.lock().unwrap();
    let mut matching = customers
        .iter()
        .filter(|c| c.id > after_id)
        .filter(|c| wanted_state.as_ref().is_none_or(|s| *s == c.marketing_state));
    let page: Vec<&FakeCustomer> = matching.by_ref().take(first as usize).collect();
    let has_next_page = matching.next().is_some();
    let nodes: Vec<Value> = page
        .iter()
        .map(|c| {
            json!({
                "id": c.gid(),
                "firstName": c.first_name,
                "defaultEmailAddress": c.email.as_ref().map(|email| json!({
                    "emailAddress": email,
                    "marketingState": c.marketing_state,
                    "marketingUpdatedAt": c.marketing_updated_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                })),
            })
        })
        .collect();
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
