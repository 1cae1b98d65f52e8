//! HTTP protocol details every response gets right:
//!
//! - A 405 names the methods the route does take (`Allow`, RFC 9110 §15.5.6), taken from the
//!   OpenAPI document so it cannot drift from the routes.
//! - Every response is `X-Content-Type-Options: nosniff`; HTML (pages, `/admin`) also gets a
//!   strict `Content-Security-Policy` (no scripts, forms to ourselves, no framing),
//!   `X-Frame-Options: DENY` and `Referrer-Policy: no-referrer` (page URLs carry link tokens).
//!   Swagger UI (`/docs`) runs its own scripts, so it gets the framing protection but no CSP.

use std::{
    collections::{BTreeSet, HashMap},
    sync::Arc,
};

use poem::{
    Endpoint, IntoResponse, PathPattern, Request, Response,
    http::{HeaderValue, StatusCode, header},
};

/// Methods by route template (`/v1/challenges/:`), from the OpenAPI document.
#[derive(Clone, Default)]
pub(crate) struct AllowedMethods(Arc<HashMap<String, String>>);

impl AllowedMethods {
    pub(crate) fn from_spec(spec: &str) -> Self {
        let spec: serde_json::Value = serde_json::from_str(spec).unwrap_or_default();
        let mut map = HashMap::new();
        for (path, operations) in spec["paths"].as_object().into_iter().flatten() {
            let mut methods: BTreeSet<String> =
                operations.as_object().into_iter().flatten().map(|(method, _)| method.to_ascii_uppercase()).collect();
            // poem answers HEAD wherever it answers GET.
            if methods.contains("GET") {
                methods.insert("HEAD".to_owned());
            }
            map.insert(template(path), methods.into_iter().collect::<Vec<_>>().join(", "));
        }
        Self(Arc::new(map))
    }

    fn for_pattern(&self, pattern: &str) -> Option<&str> {
        self.0.get(&template(pattern)).map(String::as_str)
    }
}

/// `/a/{id}` (the document) and `/a/:param0` (poem's pattern) alike, as `/a/:`.
fn template(path: &str) -> String {
    path.split('/')
        .map(|segment| if segment.starts_with(':') || segment.starts_with('{') { ":" } else { segment })
        .collect::<Vec<_>>()
        .join("/")
}

/// Around the routes: a 405 becomes its problem with `Allow`.
pub(crate) async fn allow_on_405<E: Endpoint>(endpoint: Arc<E>, request: Request) -> poem::Result<Response> {
    let allowed = request.data::<AllowedMethods>().cloned();
    match endpoint.call(request).await {
        Ok(response) => Ok(response.into_response()),
        Err(err) if err.status() == StatusCode::METHOD_NOT_ALLOWED => {
            let pattern = err.data::<PathPattern>().cloned();
            let mut response = crate::http::problem::error_response(&err);
            let allow = pattern.as_ref().and_then(|p| allowed.as_ref()?.for_pattern(&p.0).map(str::to_owned));
            if let Some(value) = allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            if let Some(pattern) = pattern {
                response.set_data(pattern);
            }
            Ok(response)
        }
        Err(err) => Err(err),
    }
}

const PAGE_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
                           form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Outermost: the security headers, on every response including errors.
pub(crate) async fn security_headers<E: Endpoint>(endpoint: Arc<E>, request: Request) -> poem::Result<Response> {
    let docs = request.uri().path() == "/docs" || request.uri().path().starts_with("/docs/");
    let mut response = endpoint.call(request).await?.into_response();
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let headers = response.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    if is_html {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        if !docs {
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PAGE_POLICY));
        }
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_methods_come_from_the_document() {
        let spec = r#"{"paths": {"/v1/challenges/{id}": {"get": {}, "put": {}}, "/v1/admin/runs": {"post": {}}}}"#;
        let allowed = AllowedMethods::from_spec(spec);
        assert_eq!(allowed.for_pattern("/v1/challenges/:param0"), Some("GET, HEAD, PUT"));
        assert_eq!(allowed.for_pattern("/v1/admin/runs"), Some("POST"));
        assert_eq!(allowed.for_pattern("/nope"), None);
    }
}
