//! `Idempotency-Key` for POSTs under `/v1`: the first request with a key runs and its response is
//! stored; a repeat with the same key and the same request gets the stored response
//! (`Idempotent-Replayed: true`); a repeat with a different request is refused (422); a repeat
//! while the first is still running gets 409 with `Retry-After`, so concurrent duplicates execute
//! once. Keys are scoped by the verified client (the admin, or one subscriber) and expire after
//! 24 hours; requests without a verified credential are left to the operation's 401 and store
//! nothing.
//! 5xx responses are not stored: the key is released so the client can retry.

use std::sync::Arc;

use levelup_common::db::idempotency_keys::{self, StoredKey};
use poem::{Endpoint, IntoResponse, Request, Response, http::StatusCode};
use sha2::{Digest, Sha256};

use crate::{AppState, http::problem};

pub(crate) const HEADER: &str = "Idempotency-Key";
pub(crate) const MAX_KEY_LENGTH: usize = 255;

/// Whether an `Idempotency-Key` is honoured for `method` on `path`: POSTs under `/v1`, except the
/// webhooks (their senders deduplicate by their own message ids).
pub(crate) fn applies(method: &poem::http::Method, path: &str) -> bool {
    method == poem::http::Method::POST && path.starts_with("/v1/") && !crate::routes::webhooks::is_webhook(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is asking, as verified: the admin, or a subscriber (whichever of their tokens they use).
/// `None` for an unverified request, which the operation answers 401 without a key being stored.
fn client_of(request: &Request, state: &AppState) -> Option<String> {
    match crate::http::guard::client_key(request, Some(state)) {
        crate::http::guard::ClientKey::Admin => Some("admin".to_owned()),
        crate::http::guard::ClientKey::Subscriber(id) => Some(format!("subscriber:{id}")),
        crate::http::guard::ClientKey::Address(_) => None,
    }
}

fn invalid_key() -> Response {
    problem::response(problem::Problem::new(
        "invalid-idempotency-key",
        "Invalid Idempotency-Key",
        400,
        "Idempotency-Key must be 1 to 255 visible ASCII characters",
    ))
}

pub(crate) async fn guard<E: Endpoint>(endpoint: Arc<E>, mut request: Request) -> poem::Result<Response> {
    if !applies(request.method(), request.uri().path()) {
        return endpoint.call(request).await.map(IntoResponse::into_response);
    }
    let key = match request.headers().get(HEADER) {
        None => return endpoint.call(request).await.map(IntoResponse::into_response),
        // `to_str` refuses anything but visible ASCII (and spaces/tabs): such a key is not ignored.
        Some(value) => match value.to_str() {
            Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LENGTH => key.to_owned(),
            _ => return Ok(invalid_key()),
        },
    };
    let Some(state) = request.data::<AppState>().cloned() else {
        return endpoint.call(request).await.map(IntoResponse::into_response);
    };
    // Authenticate first: an anonymous or forged request gets the operation's 401, and writes nothing.
    let Some(client) = client_of(&request, &state) else {
        return endpoint.call(request).await.map(IntoResponse::into_response);
    };
    let body = request.take_body().into_bytes().await?;
    let mut hasher = Sha256::new();
    hasher.update(request.uri().path().as_bytes());
    hasher.update(b"\0");
    hasher.update(&body);
    let request_hash = hex(&hasher.finalize());
    let pool = &state.db;

    let claimed = idempotency_keys::claim(pool, &client, &key, &request_hash).await.map_err(internal)?;
    if let Err(stored) = claimed {
        let Some(StoredKey {
            request_hash: stored_hash,
            completed,
            response_status: status,
            response_headers: headers,
            response_body: stored_body,
        }) = stored
        else {
            return Ok(conflict());
        };
        if stored_hash != request_hash {
            return Ok(problem::response(problem::Problem::new(
                "idempotency-key-reused",
                "Idempotency-Key reused",
                422,
                "this Idempotency-Key was used with a different request",
            )));
        }
        if !completed {
            return Ok(conflict());
        }
        let mut response = Response::builder()
            .status(StatusCode::from_u16(status.unwrap_or(200) as u16).unwrap_or(StatusCode::OK))
            .header("Idempotent-Replayed", "true");
        if let Some(content_type) = headers.as_ref().and_then(|h| h.get("content-type")).and_then(|v| v.as_str()) {
            response = response.header("content-type", content_type);
        }
        return Ok(response.body(stored_body.unwrap_or_default()));
    }

    request.set_body(body);
    let response = match endpoint.call(request).await {
        Ok(r) => r.into_response(),
        Err(err) => problem::from_error(err).await,
    };
    let status = response.status();
    if status.is_server_error() {
        release(pool, &client, &key).await;
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = body.into_bytes().await.map_err(internal)?;
    let content_type = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    idempotency_keys::complete(pool, &client, &key, status.as_u16() as i16, &content_type, &bytes)
        .await
        .map_err(internal)?;
    Ok(Response::from_parts(parts, bytes.into()))
}

async fn release(pool: &sqlx::PgPool, client: &str, key: &str) {
    if let Err(err) = idempotency_keys::release(pool, client, key).await {
        tracing::warn!(error = %err, "could not release an idempotency key; it expires in 24 hours");
    }
}

fn conflict() -> Response {
    let mut response = problem::response(problem::Problem::new(
        "idempotency-key-in-progress",
        "Request in progress",
        409,
        "a request with this Idempotency-Key is still being processed; retry shortly",
    ));
    response.headers_mut().insert("Retry-After", poem::http::HeaderValue::from_static("1"));
    response
}

fn internal(err: impl std::fmt::Display) -> poem::Error {
    tracing::error!(error = %err, "idempotency store failed");
    poem::Error::from_status(StatusCode::INTERNAL_SERVER_ERROR)
}
