//! The Shopify GraphQL Admin API client: subscribed customers page by page, and the write-back of
//! an unsubscribe. Every call goes through the fleet's Shopify circuit breaker, its request-rate
//! limit and the cost bucket mirrored from `extensions.cost.throttleStatus`.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::{
    config::ShopifyConfig,
    domain::ShopifyCustomer,
    resilience::{
        breaker::{CircuitBreaker, Permit},
        cost_bucket::{CostBucket, ThrottleStatus},
        rate_limit::{FleetRateLimiter, Reservation},
        retry::RetryPolicy,
    },
};

pub const CUSTOMERS_QUERY: &str = "query SubscribedCustomers($first: Int!, $after: String, $query: String) {
  customers(first: $first, after: $after, query: $query, sortKey: ID) {
    nodes { id firstName defaultEmailAddress { emailAddress marketingState marketingUpdatedAt } }
    pageInfo { hasNextPage endCursor }
  }
}";

pub const CONSENT_MUTATION: &str = "mutation ConsentUpdate($input: CustomerEmailMarketingConsentUpdateInput!) {
  customerEmailMarketingConsentUpdate(input: $input) {
    customer { id defaultEmailAddress { marketingState } }
    userErrors { field message }
  }
}";

pub const COUNT_QUERY: &str = "query SubscribedCount($query: String, $limit: Int) {
  customersCount(query: $query, limit: $limit) { count precision }
}";

/// The bulk export: the same customers and fields as [`CUSTOMERS_QUERY`], as one JSONL file.
pub const BULK_MUTATION: &str = "mutation RunBulk($query: String!) {
  bulkOperationRunQuery(query: $query) {
    bulkOperation { id status }
    userErrors { field message }
  }
}";

pub const BULK_EXPORT_QUERY: &str = "{ customers(query: \"email_marketing_state:SUBSCRIBED\") { edges { node { id firstName defaultEmailAddress { emailAddress marketingState marketingUpdatedAt } } } } }";

pub const BULK_STATUS_QUERY: &str = "query BulkStatus($id: ID!) {
  node(id: $id) { ... on BulkOperation { id status errorCode objectCount url } }
}";

/// A bulk operation as polled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkStatus {
    /// `CREATED`, `RUNNING`, `COMPLETED`, `CANCELING`, `CANCELED`, `FAILED` or `EXPIRED`.
    pub status: String,
    pub error_code: Option<String>,
    /// The JSONL result (COMPLETED; `None` when there was nothing to export).
    pub url: Option<String>,
    /// Objects exported: the lines the result must have.
    pub object_count: Option<u64>,
}

/// Search syntax for customers who consented to email marketing.
pub const SUBSCRIBED_FILTER: &str = "email_marketing_state:SUBSCRIBED";

/// Longest a caller waits in-process for the bucket or the rate limit before calling it throttled.
const MAX_LOCAL_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerPage {
    pub customers: Vec<ShopifyCustomer>,
    pub has_next_page: bool,
    pub end_cursor: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShopifyError {
    /// Shopify answered THROTTLED (or 429), or our own budget is exhausted for longer than we wait.
    #[error("throttled by Shopify; retry in {retry_after:?}")]
    Throttled { retry_after: Duration },
    #[error("Shopify circuit breaker open; retry in {retry_after:?}")]
    BreakerOpen { retry_after: Duration },
    /// 5xx, timeout, connection failure, unreadable answer: worth retrying.
    #[error("Shopify unavailable: {0}")]
    Transient(String),
    /// The request itself is wrong (bad token, GraphQL error, user error): retrying will not help.
    #[error("Shopify refused the request: {0}")]
    Permanent(String),
    #[error("fleet resilience state unavailable (Redis): {0}")]
    Redis(#[from] redis::RedisError),
}

pub struct ShopifyClient {
    http: reqwest::Client,
    /// For bulk results: no total timeout (files can be large), a read timeout instead.
    download: reqwest::Client,
    config: ShopifyConfig,
    breaker: CircuitBreaker,
    limiter: FleetRateLimiter,
    bucket: CostBucket,
    /// The requested cost Shopify reported for the customers query last time (our estimate).
    page_cost: AtomicU64,
    /// THROTTLED answers received by this client.
    throttled: AtomicU64,
}

impl ShopifyClient {
    pub fn new(config: &crate::Config, shopify: ShopifyConfig, redis: ConnectionManager) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(shopify.timeout)
            .connect_timeout(shopify.timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("levelup/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let download = reqwest::Client::builder()
            .connect_timeout(shopify.timeout.min(Duration::from_secs(5)))
            .read_timeout(shopify.timeout)
            .user_agent(concat!("levelup/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let namespace = &config.redis_namespace;
        Ok(Self {
            http,
            download,
            breaker: CircuitBreaker::new(namespace, "shopify", config.breaker.clone(), redis.clone()),
            limiter: FleetRateLimiter::new(
                namespace,
                "shopify",
                shopify.max_requests_per_second.unwrap_or(0.0),
                config.throttle_penalty,
                redis.clone(),
            ),
            bucket: CostBucket::new(namespace, "shopify", redis),
            page_cost: AtomicU64::new(u64::from(shopify.page_size) + 2),
            throttled: AtomicU64::new(0),
            config: shopify,
        })
    }

    pub fn throttled_count(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// One page of customers who consented to email marketing, in id order, after `cursor`.
    pub async fn subscribed_customers(&self, cursor: Option<&str>) -> Result<CustomerPage, ShopifyError> {
        let variables = json!({ "first": self.config.page_size, "after": cursor, "query": SUBSCRIBED_FILTER });
        let estimate = self.page_cost.load(Ordering::Relaxed) as f64;
        let (data, requested) = self.graphql(CUSTOMERS_QUERY, variables, estimate).await?;
        if let Some(requested) = requested {
            self.page_cost.store(requested.ceil() as u64, Ordering::Relaxed);
        }
        parse_customer_page(&data).ok_or_else(|| ShopifyError::Transient("unexpected customers response shape".into()))
    }

    /// Subscribed customers, counted up to `limit` (`None`: more than `limit`).
    pub async fn subscribed_count(&self, limit: u64) -> Result<Option<u64>, ShopifyError> {
        let variables = json!({ "query": SUBSCRIBED_FILTER, "limit": limit });
        let (data, _) = self.graphql(COUNT_QUERY, variables, 2.0).await?;
        let count = data
            .pointer("/customersCount/count")
            .and_then(Value::as_u64)
            .ok_or_else(|| ShopifyError::Transient("unexpected customersCount response shape".into()))?;
        let exact = data.pointer("/customersCount/precision").and_then(Value::as_str) == Some("EXACT");
        Ok((exact && count <= limit).then_some(count))
    }

    /// Starts the bulk export of subscribed customers; returns the operation's id.
    pub async fn start_bulk_export(&self) -> Result<String, ShopifyError> {
        let (data, _) = self.graphql(BULK_MUTATION, json!({ "query": BULK_EXPORT_QUERY }), 10.0).await?;
        let result = data
            .get("bulkOperationRunQuery")
            .ok_or_else(|| ShopifyError::Transient("unexpected bulkOperationRunQuery response shape".into()))?;
        if let Some(errors) = result.get("userErrors").and_then(Value::as_array).filter(|e| !e.is_empty()) {
            let messages: Vec<&str> = errors.iter().filter_map(|e| e.get("message").and_then(Value::as_str)).collect();
            return Err(ShopifyError::Permanent(messages.join("; ")));
        }
        result
            .pointer("/bulkOperation/id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ShopifyError::Transient("bulk operation without an id".into()))
    }

    pub async fn bulk_status(&self, id: &str) -> Result<BulkStatus, ShopifyError> {
        let (data, _) = self.graphql(BULK_STATUS_QUERY, json!({ "id": id }), 1.0).await?;
        let node = data.get("node").filter(|n| !n.is_null()).ok_or_else(|| {
            ShopifyError::Permanent(format!("bulk operation {id} not found (expired or from another app)"))
        })?;
        let text = |key: &str| node.get(key).and_then(Value::as_str).map(str::to_owned);
        Ok(BulkStatus {
            status: text("status").ok_or_else(|| ShopifyError::Transient("bulk operation without a status".into()))?,
            error_code: text("errorCode"),
            url: text("url"),
            // UnsignedInt64 is a string on the wire.
            object_count: node.get("objectCount").and_then(|v| match v {
                Value::String(s) => s.parse().ok(),
                other => other.as_u64(),
            }),
        })
    }

    /// Opens a bulk result for streaming (read it with [`JsonlLines`]).
    pub async fn open_bulk_result(&self, url: &str) -> Result<reqwest::Response, ShopifyError> {
        let response = self
            .download
            .get(url)
            .send()
            .await
            // The result URL is signed (a credential for a week): never in an error, a log or the
            // sync's stored error.
            .map_err(|err| ShopifyError::Transient(format!("bulk result download failed: {}", err.without_url())))?;
        match response.status() {
            s if s.is_success() => Ok(response),
            s if s.is_server_error() => Err(ShopifyError::Transient(format!("bulk result download: HTTP {s}"))),
            s => Err(ShopifyError::Permanent(format!("bulk result download: HTTP {s} (URL expired?)"))),
        }
    }

    /// Writes an unsubscribe back to the store.
    pub async fn unsubscribe(&self, customer_gid: &str, at: DateTime<Utc>) -> Result<(), ShopifyError> {
        let variables = json!({ "input": {
            "customerId": customer_gid,
            "emailMarketingConsent": {
                "marketingState": "UNSUBSCRIBED",
                "consentUpdatedAt": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            }
        }});
        let (data, _) = self.graphql(CONSENT_MUTATION, variables, 10.0).await?;
        let result = data
            .get("customerEmailMarketingConsentUpdate")
            .ok_or_else(|| ShopifyError::Transient("unexpected mutation response shape".into()))?;
        match result.get("userErrors").and_then(Value::as_array) {
            Some(errors) if !errors.is_empty() => {
                let messages: Vec<&str> =
                    errors.iter().filter_map(|e| e.get("message").and_then(Value::as_str)).collect();
                Err(ShopifyError::Permanent(messages.join("; ")))
            }
            _ => Ok(()),
        }
    }

    /// One GraphQL call: breaker, rate limit and cost bucket first; the answer's throttle status
    /// is recorded for the fleet. Returns `data` and the requested cost Shopify reported.
    async fn graphql(
        &self,
        query: &str,
        variables: Value,
        estimate: f64,
    ) -> Result<(Value, Option<f64>), ShopifyError> {
        match self.breaker.permit().await? {
            Permit::Denied { retry_after } => return Err(ShopifyError::BreakerOpen { retry_after }),
            Permit::Allowed | Permit::Probe => {}
        }
        if let Reservation::TooFar { retry_after } = self.limiter.acquire(MAX_LOCAL_WAIT).await? {
            return Err(ShopifyError::Throttled { retry_after });
        }
        let mut waited = Duration::ZERO;
        loop {
            let wait = self.bucket.reserve(estimate).await?;
            if wait.is_zero() {
                break;
            }
            if waited + wait > MAX_LOCAL_WAIT {
                return Err(ShopifyError::Throttled { retry_after: wait });
            }
            metrics::counter!("levelup_shopify_bucket_waits_total").increment(1);
            tokio::time::sleep(wait).await;
            waited += wait;
        }
        let response = self
            .http
            .post(self.config.graphql_url.clone())
            .header("X-Shopify-Access-Token", self.config.access_token.expose_secret())
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(err) => return Err(self.unavailable(format!("request failed: {err}")).await),
        };
        let status = response.status();
        if status.as_u16() == 429 {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<f64>().ok())
                .map(Duration::from_secs_f64)
                .unwrap_or(Duration::from_secs(1));
            self.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(ShopifyError::Throttled { retry_after });
        }
        if status.is_server_error() {
            return Err(self.unavailable(format!("HTTP {status}")).await);
        }
        let body: Value = match response.json().await {
            Ok(body) => body,
            Err(err) if status.is_success() => {
                return Err(self.unavailable(format!("unreadable response: {err}")).await);
            }
            Err(_) => Value::Null,
        };
        // Shopify answered: it is up, whatever it said.
        self.note(self.breaker.record_success().await);
        if !status.is_success() {
            let message = body.get("errors").map(Value::to_string).unwrap_or_default();
            return Err(ShopifyError::Permanent(format!("HTTP {status} {message}")));
        }
        let cost = body.pointer("/extensions/cost");
        let requested = cost.and_then(|c| c.get("requestedQueryCost")).and_then(Value::as_f64);
        let throttle = cost
            .and_then(|c| c.get("throttleStatus"))
            .and_then(|t| serde_json::from_value::<ThrottleStatus>(t.clone()).ok());
        if let Some(throttle) = &throttle {
            metrics::gauge!("levelup_shopify_bucket_available").set(throttle.currently_available);
            self.note(self.bucket.observe(throttle).await);
        }
        if let Some(errors) = body.get("errors").and_then(Value::as_array).filter(|e| !e.is_empty()) {
            let code = |e: &Value| e.pointer("/extensions/code").and_then(Value::as_str).map(str::to_owned);
            if errors.iter().any(|e| code(e).as_deref() == Some("THROTTLED")) {
                self.throttled.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("levelup_shopify_throttled_total").increment(1);
                let retry_after = throttle
                    .map(|t| t.wait_for(requested.unwrap_or(estimate)))
                    .unwrap_or(Duration::from_secs(1))
                    .max(Duration::from_millis(50));
                return Err(ShopifyError::Throttled { retry_after });
            }
            let message = errors.iter().filter_map(|e| e.get("message").and_then(Value::as_str)).collect::<Vec<_>>();
            if errors.iter().any(|e| code(e).as_deref() == Some("INTERNAL_SERVER_ERROR")) {
                return Err(ShopifyError::Transient(message.join("; ")));
            }
            return Err(ShopifyError::Permanent(message.join("; ")));
        }
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        Ok((data, requested))
    }

    async fn unavailable(&self, reason: String) -> ShopifyError {
        self.note(self.breaker.record_failure().await);
        ShopifyError::Transient(reason)
    }

    fn note(&self, bookkeeping: redis::RedisResult<()>) {
        if let Err(err) = bookkeeping {
            tracing::warn!(error = %err, "fleet Shopify state not updated (Redis)");
        }
    }

    /// Runs `call` until it succeeds, fails permanently, or spends `policy`'s attempts on
    /// transient failures. Throttling and an open breaker are waited out without spending an
    /// attempt, up to `max_wait` in all.
    pub async fn with_retries<T, F, Fut>(
        &self,
        policy: &RetryPolicy,
        max_wait: Duration,
        mut call: F,
    ) -> Result<T, ShopifyError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ShopifyError>>,
    {
        let mut attempts = 0;
        let mut waited = Duration::ZERO;
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let delay = match &error {
                ShopifyError::Throttled { retry_after } | ShopifyError::BreakerOpen { retry_after } => *retry_after,
                ShopifyError::Transient(_) | ShopifyError::Redis(_) => {
                    attempts += 1;
                    if policy.exhausted(attempts) {
                        return Err(error);
                    }
                    policy.delay(attempts)
                }
                ShopifyError::Permanent(_) => return Err(error),
            };
            if waited + delay > max_wait {
                return Err(error);
            }
            tracing::debug!(error = %error, ?delay, "Shopify call will be retried");
            tokio::time::sleep(delay).await;
            waited += delay;
        }
    }
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// One customer node, as in a page or a line of a bulk result.
pub fn parse_customer(node: &Value) -> Option<ShopifyCustomer> {
    let address = node.get("defaultEmailAddress").filter(|a| !a.is_null());
    Some(ShopifyCustomer {
        gid: text(node, "id")?,
        first_name: text(node, "firstName"),
        email: address.and_then(|a| text(a, "emailAddress")),
        marketing_state: address.and_then(|a| text(a, "marketingState")),
        marketing_updated_at: address
            .and_then(|a| text(a, "marketingUpdatedAt"))
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
    })
}

/// Reads a streamed JSONL body line by line, holding one chunk and one partial line at most.
pub struct JsonlLines {
    response: reqwest::Response,
    buffer: Vec<u8>,
    done: bool,
}

impl JsonlLines {
    pub fn new(response: reqwest::Response) -> Self {
        Self { response, buffer: Vec::new(), done: false }
    }

    /// The next non-empty line, or `None` at the end.
    pub async fn next_line(&mut self) -> Result<Option<String>, ShopifyError> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                let line = String::from_utf8_lossy(&line).trim().to_owned();
                if line.is_empty() {
                    continue;
                }
                return Ok(Some(line));
            }
            if self.done {
                if self.buffer.is_empty() {
                    return Ok(None);
                }
                let line = String::from_utf8_lossy(&std::mem::take(&mut self.buffer)).trim().to_owned();
                return Ok((!line.is_empty()).then_some(line));
            }
            match self.response.chunk().await {
                Ok(Some(chunk)) => self.buffer.extend_from_slice(&chunk),
                Ok(None) => self.done = true,
                Err(err) => {
                    let err = err.without_url();
                    return Err(ShopifyError::Transient(format!("bulk result download broke off: {err}")));
                }
            }
        }
    }
}

fn parse_customer_page(data: &Value) -> Option<CustomerPage> {
    let customers = data.get("customers")?;
    let nodes = customers.get("nodes")?.as_array()?;
    let page_info = customers.get("pageInfo")?;
    let customers = nodes.iter().map(parse_customer).collect::<Option<Vec<_>>>()?;
    Some(CustomerPage {
        customers,
        has_next_page: page_info.get("hasNextPage")?.as_bool()?,
        end_cursor: text(page_info, "endCursor"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_customers_page() {
        let data = json!({ "customers": {
            "nodes": [
                { "id": "gid://shopify/Customer/1", "firstName": "Ada",
                  "defaultEmailAddress": { "emailAddress": "ada@example.com", "marketingState": "SUBSCRIBED",
                                           "marketingUpdatedAt": "2026-01-02T03:04:05Z" } },
                { "id": "gid://shopify/Customer/2", "firstName": null, "defaultEmailAddress": null }
            ],
            "pageInfo": { "hasNextPage": true, "endCursor": "abc" }
        }});
        let page = parse_customer_page(&data).unwrap();
        assert_eq!(page.customers.len(), 2);
        assert_eq!(page.customers[0].email.as_deref(), Some("ada@example.com"));
        assert_eq!(page.customers[0].marketing_updated_at.unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(page.customers[1].email, None);
        assert!(page.has_next_page);
        assert_eq!(page.end_cursor.as_deref(), Some("abc"));
        assert!(parse_customer_page(&json!({ "customers": null })).is_none());
    }

    #[test]
    fn throttle_status_says_how_long_to_wait() {
        let status = ThrottleStatus { maximum_available: 1000.0, currently_available: 100.0, restore_rate: 50.0 };
        assert_eq!(status.wait_for(600.0), Duration::from_secs(10));
        assert_eq!(status.wait_for(50.0), Duration::ZERO);
    }
}
