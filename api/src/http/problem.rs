//! RFC 7807 problem details: every API error has a stable `type`, a human `title`, the HTTP
//! `status` and a `detail` that never leaks internals.

use poem_openapi::Object;

#[derive(Debug, Clone, Object)]
pub struct Problem {
    /// Stable identifier of the kind of problem, e.g. `https://levelup.dev/problems/invalid-week`.
    #[oai(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl Problem {
    pub fn new(slug: &str, title: &str, status: u16, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("https://levelup.dev/problems/{slug}"),
            title: title.into(),
            status,
            detail: detail.into(),
        }
    }

    pub fn internal() -> Self {
        Self::new("internal", "Internal error", 500, "The server failed to handle the request; it has been logged.")
    }
}

/// A problem as a complete `application/problem+json` response.
pub(crate) fn response(problem: Problem) -> poem::Response {
    let status =
        poem::http::StatusCode::from_u16(problem.status).unwrap_or(poem::http::StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::json!({
        "type": problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    });
    poem::Response::builder().status(status).content_type("application/problem+json").body(body.to_string())
}

/// Turns any error poem or poem-openapi raises (malformed body naming the field, missing
/// parameter, failed authorization, unknown route, …) into problem+json. 5xx details are logged,
/// never sent.
pub(crate) async fn from_error(err: poem::Error) -> poem::Response {
    if err.is_from_response() {
        // A handler's `ApiError`, already a finished problem response.
        return err.into_response();
    }
    error_response(&err)
}

/// [`from_error`], for callers that are not async.
pub(crate) fn error_response(err: &poem::Error) -> poem::Response {
    let status = err.status();
    let (slug, title) = match status.as_u16() {
        400 => ("invalid-request", "Invalid request"),
        401 => ("unauthorized", "Unauthorized"),
        403 => ("forbidden", "Forbidden"),
        404 => ("not-found", "Not found"),
        405 => ("method-not-allowed", "Method not allowed"),
        411 | 413 => ("payload-too-large", "Payload too large"),
        415 => ("unsupported-media-type", "Unsupported media type"),
        429 => ("too-many-requests", "Too many requests"),
        503 => ("unavailable", "Service unavailable"),
        _ if status.is_server_error() => ("internal", "Internal error"),
        _ => ("error", status.canonical_reason().unwrap_or("Error")),
    };
    let detail = if status.is_server_error() {
        tracing::error!(error = %err, "request failed");
        "The server failed to handle the request; it has been logged.".to_owned()
    } else if status == poem::http::StatusCode::UNAUTHORIZED
        && (err.to_string().is_empty() || err.is::<poem_openapi::error::AuthorizationError>())
    {
        "missing or invalid credentials".to_owned()
    } else {
        err.to_string()
    };
    response(Problem::new(slug, title, status.as_u16(), detail))
}

/// The first field whose value contains a NUL character (Postgres text cannot store it).
pub(crate) fn first_with_nul<'a>(fields: &[(&'a str, &str)]) -> Option<&'a str> {
    fields.iter().find(|(_, value)| value.contains('\0')).map(|(name, _)| *name)
}
