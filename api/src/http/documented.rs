//! The errors the middleware can answer for an operation, added to that operation's documented
//! responses so `/openapi.json` tells the whole truth without every handler repeating the list.
//!
//! [`Documented`] wraps the API groups and implements poem-openapi's `OpenApi` trait: routes and
//! handlers are the wrapped ones; only the metadata is completed, from the operation's own shape
//! (does it take credentials, parameters, a body; is it a `POST` under `/v1`) with the same
//! predicates the middleware uses, so the document and the behaviour cannot drift apart:
//!
//! | status | when | from |
//! |---|---|---|
//! | 400 | the operation takes parameters or a body (malformed → problem naming the field) | poem-openapi, [`crate::http::problem::from_error`] |
//! | 401 | the operation declares a security scheme | the scheme's checker |
//! | 409, 422 | `Idempotency-Key` in progress / reused with another body (header documented) | [`crate::http::idempotency`] |
//! | 408, 413 | the operation takes a body (too slow / too large) | [`crate::http::guard`] |
//! | 415 | the operation parses a typed body (never for a [`crate::http::raw_body::RawBody`]) | poem-openapi |
//! | 429 | rate limited (`Retry-After`) unless exempt | [`crate::http::guard`] |
//! | 503 | load shed (`Retry-After`) unless exempt | [`crate::http::guard`] |
//! | 500 | any operation | handlers, [`crate::http::problem::from_error`] |
//!
//! A status the operation already declares is left as the operation describes it (the pages
//! answer their own 401 as HTML, for example).

use std::collections::HashMap;

use poem::{endpoint::BoxEndpoint, http::Method};
use poem_openapi::{
    OpenApi,
    registry::{
        MetaApi, MetaHeader, MetaMediaType, MetaOperation, MetaOperationParam, MetaParamIn, MetaResponse, MetaSchema,
        MetaSchemaRef, Registry,
    },
    types::Type,
};

use crate::{http::guard, http::idempotency, http::problem::Problem, http::raw_body};

/// The wrapped API groups, with the cross-cutting errors added to every operation's responses.
pub(crate) struct Documented<A>(pub A);

impl<A: OpenApi> OpenApi for Documented<A> {
    fn meta() -> Vec<MetaApi> {
        let mut apis = A::meta();
        for path in apis.iter_mut().flat_map(|api| api.paths.iter_mut()) {
            for operation in &mut path.operations {
                complete(&path.path, operation);
            }
        }
        apis
    }

    fn register(registry: &mut Registry) {
        A::register(registry);
        Problem::register(registry);
    }

    fn add_routes(self, route_table: &mut HashMap<String, HashMap<Method, BoxEndpoint<'static>>>) {
        self.0.add_routes(route_table);
    }
}

fn complete(path: &str, operation: &mut MetaOperation) {
    let takes_input = !operation.params.is_empty() || operation.request.is_some();
    let idempotent = idempotency::applies(&operation.method, path);
    if idempotent {
        operation.params.push(idempotency_key_param());
    }
    let mut add = |status: u16, description: &'static str, retry_after: bool| {
        let responses = &mut operation.responses.responses;
        if responses.iter().any(|r| r.status == Some(status)) {
            return;
        }
        responses.push(problem_response(status, description, retry_after));
    };
    if takes_input || idempotent {
        add(400, "The request is malformed: the problem's detail names the field.", false);
    }
    if !operation.security.is_empty() {
        add(401, "Missing or invalid credentials.", false);
    }
    if idempotent {
        add(409, "A request with this Idempotency-Key is still being processed; retry after Retry-After.", true);
        add(422, "This Idempotency-Key was already used with a different request.", false);
    }
    if operation.request.is_some() {
        add(408, "The request body did not arrive within the body timeout; the connection is closed.", false);
        add(413, "The request body is larger than the limit (64 KiB).", false);
        if !operation.request.as_ref().is_some_and(raw_body::accepts_any_content_type) {
            add(415, "The request's Content-Type is missing or not the documented one.", false);
        }
    }
    if guard::is_rate_limited(path) {
        add(429, "This client sends too fast; retry after Retry-After.", true);
    }
    if guard::is_shed(path) {
        add(503, "The server is at capacity (load shedding); retry after Retry-After.", true);
    }
    add(500, "The server failed; the cause is logged with the request id, never sent.", false);
    operation.responses.responses.sort_by_key(|r| r.status);
}

/// A problem+json response for `status` (with `Retry-After` when `retry_after`).
pub(crate) fn problem_response(status: u16, description: &'static str, retry_after: bool) -> MetaResponse {
    let headers = if retry_after {
        vec![MetaHeader {
            name: "Retry-After".to_owned(),
            description: Some("Seconds to wait before retrying.".to_owned()),
            required: true,
            deprecated: false,
            schema: u64::schema_ref(),
        }]
    } else {
        Vec::new()
    };
    MetaResponse {
        description,
        status: Some(status),
        status_range: None,
        content: vec![MetaMediaType { content_type: "application/problem+json", schema: Problem::schema_ref() }],
        headers,
    }
}

fn idempotency_key_param() -> MetaOperationParam {
    MetaOperationParam {
        name: idempotency::HEADER.to_owned(),
        schema: MetaSchemaRef::Inline(Box::new(MetaSchema {
            min_length: Some(1),
            max_length: Some(idempotency::MAX_KEY_LENGTH),
            ..MetaSchema::new("string")
        })),
        in_type: MetaParamIn::Header,
        description: Some(
            "Makes the request safe to retry: a repeat with the same key and body gets the first response \
             (with `Idempotent-Replayed: true`); keys expire after 24 hours."
                .to_owned(),
        ),
        required: false,
        deprecated: false,
        explode: true,
        style: None,
    }
}
