//! Load protection in front of every handler, in this order:
//!
//! 1. A per-client rate limit (`governor`) answering 429 with `Retry-After`. The client is the
//!    *verified* credential (the admin key, or the subscriber of a valid link token); anything
//!    unverified — a junk token, a wrong key, nothing — is its address, so fresh junk credentials
//!    do not buy fresh budgets. Webhooks have their own budget per address.
//! 2. The request body is read in full (at most [`MAX_BODY_BYTES`], else 413) within the body
//!    timeout (else 408), *before* a handler slot is taken: a slow sender holds a connection, not
//!    a slot.
//! 3. Load shedding: a cap on handlers running at once, answering 503 with `Retry-After`, so a
//!    spike degrades service instead of collapsing it.
//!
//! Health, readiness and metrics are exempt from all three.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use levelup_common::{Config, domain::tokens::Purpose};
use poem::{Endpoint, IntoResponse, Request, Response};
use tokio::sync::Semaphore;

use crate::{
    AppState,
    http::problem::{self, Problem},
};

/// Largest request body accepted; larger ones are refused before a handler reads them.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub(crate) struct Guards {
    limiter: Arc<DefaultKeyedRateLimiter<ClientKey>>,
    webhook_limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    in_flight: Arc<Semaphore>,
    body_timeout: Duration,
}

/// Who a request is, for the rate limit: only what was verified.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum ClientKey {
    Admin,
    Subscriber(i64),
    Address(IpAddr),
}

fn quota(per_second: u32, burst: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl Guards {
    pub(crate) fn new(config: &Config) -> Self {
        let limiter = Arc::new(RateLimiter::keyed(quota(config.api_rate_per_second, config.api_burst)));
        let webhook_limiter = Arc::new(RateLimiter::keyed(quota(config.webhook_rate_per_second, config.webhook_burst)));
        // Forget idle clients so the key maps stay small.
        let (weak, weak_webhooks) = (Arc::downgrade(&limiter), Arc::downgrade(&webhook_limiter));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let (Some(limiter), Some(webhooks)) = (weak.upgrade(), weak_webhooks.upgrade()) else { break };
                limiter.retain_recent();
                webhooks.retain_recent();
            }
        });
        Self {
            limiter,
            webhook_limiter,
            in_flight: Arc::new(Semaphore::new(config.api_max_in_flight)),
            body_timeout: config.api_body_timeout,
        }
    }
}

fn address(request: &Request) -> IpAddr {
    request.remote_addr().as_socket_addr().map(std::net::SocketAddr::ip).unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

/// The verified credential of `request`, else its address. Verifying costs one HMAC (link
/// tokens) or one comparison (admin key): no I/O.
pub(crate) fn client_key(request: &Request, state: Option<&AppState>) -> ClientKey {
    let Some(state) = state else { return ClientKey::Address(address(request)) };
    let authorization = request.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let admin = if let Some(key) = authorization.strip_prefix("Bearer ") {
        state.config.admin_api_key_matches(key.trim())
    } else if let Some(basic) = authorization.strip_prefix("Basic ") {
        STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| pair.split_once(':').map(|(_, password)| state.config.admin_api_key_matches(password)))
            .unwrap_or(false)
    } else {
        false
    };
    if admin {
        return ClientKey::Admin;
    }
    let token = url::form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned());
    let subscriber = token.and_then(|token| {
        [Purpose::Access, Purpose::Unsubscribe].into_iter().find_map(|p| state.verify(&token, p).ok())
    });
    match subscriber {
        Some(claims) => ClientKey::Subscriber(claims.subscriber_id),
        None => ClientKey::Address(address(request)),
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
pub(crate) fn is_shed(path: &str) -> bool {
    !is_exempt(path)
}

/// Whether requests to `path` are rate limited per client (webhooks: per address, on their own
/// budget, since Shopify and SNS come from few addresses in bursts).
pub(crate) fn is_rate_limited(path: &str) -> bool {
    !is_exempt(path)
}

fn too_many_requests(wait: Duration) -> Response {
    let problem =
        Problem::new("too-many-requests", "Too many requests", 429, "slow down: this client's request rate is limited");
    with_retry_after(problem::response(problem), wait.as_secs_f64().ceil() as u64)
}

/// Reads the whole body within the body timeout and size limit, or answers 408 / 413.
async fn read_body(request: &mut Request, timeout: Duration) -> Result<poem::Body, Response> {
    let declared = request
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        problem::response(Problem::new(
            "payload-too-large",
            "Payload too large",
            413,
            format!("request bodies are limited to {MAX_BODY_BYTES} bytes"),
        ))
    };
    if declared.is_some_and(|len| len > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let body = request.take_body();
    if body.is_empty() {
        return Ok(body);
    }
    match tokio::time::timeout(timeout, body.into_bytes_limit(MAX_BODY_BYTES)).await {
        Ok(Ok(bytes)) => Ok(bytes.into()),
        Ok(Err(poem::error::ReadBodyError::PayloadTooLarge)) => Err(too_large()),
        Ok(Err(err)) => Err(problem::response(Problem::new(
            "invalid-request",
            "Invalid request",
            400,
            format!("the request body could not be read: {err}"),
        ))),
        Err(_) => {
            ::metrics::counter!("levelup_http_body_timeouts_total").increment(1);
            let mut response = problem::response(Problem::new(
                "request-timeout",
                "Request timeout",
                408,
                format!("the request body did not arrive within {} s", timeout.as_secs()),
            ));
            response
                .headers_mut()
                .insert(poem::http::header::CONNECTION, poem::http::HeaderValue::from_static("close"));
            Err(response)
        }
    }
}

pub(crate) async fn protect<E: Endpoint>(endpoint: Arc<E>, mut request: Request) -> poem::Result<Response> {
    let guards = request.data::<Guards>().cloned();
    let (Some(guards), true) = (guards, is_shed(request.uri().path())) else {
        return endpoint.call(request).await.map(IntoResponse::into_response);
    };
    if is_rate_limited(request.uri().path()) {
        let checked = if crate::routes::webhooks::is_webhook(request.uri().path()) {
            guards.webhook_limiter.check_key(&address(&request))
        } else {
            guards.limiter.check_key(&client_key(&request, request.data::<AppState>()))
        };
        if let Err(not_until) = checked {
            return Ok(too_many_requests(not_until.wait_time_from(governor::clock::DefaultClock::default().now())));
        }
    }
    match read_body(&mut request, guards.body_timeout).await {
        Ok(body) => request.set_body(body),
        Err(response) => return Ok(response),
    }
    let Ok(_permit) = guards.in_flight.clone().try_acquire_owned() else {
        ::metrics::counter!("levelup_http_shed_total").increment(1);
        let problem =
            Problem::new("unavailable", "Service unavailable", 503, "the server is at capacity; retry shortly");
        return Ok(with_retry_after(problem::response(problem), 1));
    };
    endpoint.call(request).await.map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_for_guarded_paths() {
        assert!(!is_shed("/healthz") && !is_rate_limited("/metrics"));
        assert!(is_shed("/v1/level") && is_rate_limited("/v1/webhooks/ses"));
    }
}
