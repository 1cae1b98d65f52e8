//! Load protection in front of every handler: a per-client rate limit (`governor`, keyed by the
//! credential presented, else the peer address) answering 429 with `Retry-After`, and load
//! shedding (a cap on requests in flight) answering 503 with `Retry-After`, so a spike degrades
//! service instead of collapsing it. Health, readiness and metrics are exempt.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use poem::{Endpoint, IntoResponse, Request, Response};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::problem::{self, Problem};

#[derive(Clone)]
pub struct Guards {
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    in_flight: Arc<Semaphore>,
}

impl Guards {
    pub fn new(per_second: u32, burst: u32, max_in_flight: usize) -> Self {
        let quota = Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let limiter = Arc::new(RateLimiter::keyed(quota));
        // Forget idle clients so the key map stays small.
        let weak = Arc::downgrade(&limiter);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(limiter) = weak.upgrade() else { break };
                limiter.retain_recent();
            }
        });
        Self { limiter, in_flight: Arc::new(Semaphore::new(max_in_flight)) }
    }
}

fn client_key(request: &Request) -> String {
    let credential =
        request.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| {
            url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .find(|(k, _)| k == "token")
                .map(|(_, v)| v.into_owned())
        });
    match credential {
        Some(credential) => Sha256::digest(credential.as_bytes())[..12].iter().map(|b| format!("{b:02x}")).collect(),
        None => {
            format!("ip:{}", request.remote_addr().as_socket_addr().map(|a| a.ip().to_string()).unwrap_or_default())
        }
    }
}

fn with_retry_after(mut response: Response, seconds: u64) -> Response {
    if let Ok(value) = poem::http::HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert("Retry-After", value);
    }
    response
}

/// Probes and metrics must answer under load: never limited, never shed.
fn is_exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Whether requests to `path` can be answered 503 by load shedding.
pub fn is_shed(path: &str) -> bool {
    !is_exempt(path)
}

/// Whether requests to `path` are rate limited per client. Webhook senders (Shopify, SNS) come
/// from few addresses in bursts and retry on their own, so they are only shed.
pub fn is_rate_limited(path: &str) -> bool {
    !is_exempt(path) && !crate::webhooks::is_webhook(path)
}

pub async fn protect<E: Endpoint>(endpoint: Arc<E>, request: Request) -> poem::Result<Response> {
    let guards = request.data::<Guards>().cloned();
    let (Some(guards), true) = (guards, is_shed(request.uri().path())) else {
        return endpoint.call(request).await.map(IntoResponse::into_response);
    };
    let limited = is_rate_limited(request.uri().path());
    if let (true, Err(not_until)) = (limited, guards.limiter.check_key(&client_key(&request))) {
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let problem = Problem::new(
            "too-many-requests",
            "Too many requests",
            429,
            "slow down: this client's request rate is limited",
        );
        return Ok(with_retry_after(problem::response(problem), wait.as_secs_f64().ceil() as u64));
    }
    let Ok(_permit) = guards.in_flight.clone().try_acquire_owned() else {
        ::metrics::counter!("levelup_http_shed_total").increment(1);
        let problem =
            Problem::new("unavailable", "Service unavailable", 503, "the server is at capacity; retry shortly");
        return Ok(with_retry_after(problem::response(problem), 1));
    };
    endpoint.call(request).await.map(IntoResponse::into_response)
}
