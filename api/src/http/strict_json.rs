//! JSON request bodies: a field the OpenAPI document declares as a string (or a string enum) must
//! be a JSON string. poem-openapi's `String` would take `12345` or `true` and its type errors do
//! not name the field; this check, driven by the document so it cannot drift, answers 400 naming
//! it. (The request types use [`crate::http::json_string::JsonString`] as well.) Only requests with a
//! verified credential are checked: the others get the operation's 401 first.

use std::sync::Arc;

use poem::{Endpoint, IntoResponse, Request, Response, http::Method};
use serde_json::Value;

use crate::{
    AppState,
    http::problem::{self, Problem},
};

struct Operation {
    method: Method,
    segments: Vec<String>,
    string_fields: Vec<String>,
}

/// The string fields of each operation's JSON body, from the OpenAPI document.
#[derive(Clone, Default)]
pub(crate) struct StringFields(Arc<Vec<Operation>>);

fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => &spec["components"]["schemas"][name],
        None => schema,
    }
}

impl StringFields {
    pub(crate) fn from_spec(spec: &str) -> Self {
        let spec: Value = serde_json::from_str(spec).unwrap_or_default();
        let mut operations = Vec::new();
        for (path, methods) in spec["paths"].as_object().into_iter().flatten() {
            for (method, operation) in methods.as_object().into_iter().flatten() {
                // `application/json; charset=utf-8`, as poem-openapi writes it.
                let content = operation["requestBody"]["content"].as_object();
                let json = content.into_iter().flatten().find(|(kind, _)| kind.starts_with("application/json"));
                let Some((_, media)) = json else { continue };
                let body = resolve(&spec, &media["schema"]);
                let string_fields: Vec<String> = body["properties"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, property)| {
                        let property = resolve(&spec, property);
                        property["type"] == "string"
                            || property["allOf"]
                                .as_array()
                                .is_some_and(|all| all.iter().any(|s| resolve(&spec, s)["type"] == "string"))
                    })
                    .map(|(name, _)| name.clone())
                    .collect();
                let Ok(method) = Method::from_bytes(method.to_ascii_uppercase().as_bytes()) else { continue };
                if !string_fields.is_empty() {
                    operations.push(Operation {
                        method,
                        segments: path.split('/').map(str::to_owned).collect(),
                        string_fields,
                    });
                }
            }
        }
        Self(Arc::new(operations))
    }

    fn for_request(&self, method: &Method, path: &str) -> Option<&[String]> {
        let segments: Vec<&str> = path.split('/').collect();
        self.0
            .iter()
            .find(|op| {
                op.method == method
                    && op.segments.len() == segments.len()
                    && op.segments.iter().zip(&segments).all(|(t, s)| t.starts_with('{') || t == s)
            })
            .map(|op| op.string_fields.as_slice())
    }
}

/// The first declared string field whose value is present but not a string.
fn first_non_string<'a>(fields: &'a [String], body: &Value) -> Option<&'a str> {
    fields
        .iter()
        .find(|name| body.get(name.as_str()).is_some_and(|v| !v.is_string() && !v.is_null()))
        .map(String::as_str)
}

pub(crate) async fn check<E: Endpoint>(endpoint: Arc<E>, mut request: Request) -> poem::Result<Response> {
    let fields = request
        .data::<StringFields>()
        .and_then(|all| all.for_request(request.method(), request.uri().path()).map(<[String]>::to_vec));
    let verified = request.data::<AppState>().is_some_and(|state| {
        !matches!(crate::http::guard::client_key(&request, Some(state)), crate::http::guard::ClientKey::Address(_))
    });
    let (Some(fields), true) = (fields, verified) else {
        return endpoint.call(request).await.map(IntoResponse::into_response);
    };
    let bytes = request.take_body().into_bytes().await?;
    if let Ok(body) = serde_json::from_slice::<Value>(&bytes)
        && let Some(field) = first_non_string(&fields, &body)
    {
        return Ok(problem::response(Problem::new(
            "invalid-request",
            "Invalid request",
            400,
            format!("{field}: must be a JSON string"),
        )));
    }
    request.set_body(bytes);
    endpoint.call(request).await.map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_fields_come_from_the_document() {
        let spec = r##"{"paths": {"/v1/things/{id}": {"put": {"requestBody": {"content": {"application/json; charset=utf-8":
            {"schema": {"$ref": "#/components/schemas/Thing"}}}}}}},
            "components": {"schemas": {"Thing": {"properties": {"title": {"type": "string"}, "n": {"type": "integer"},
            "kind": {"$ref": "#/components/schemas/Kind"}}}, "Kind": {"type": "string", "enum": ["a"]}}}}"##;
        let fields = StringFields::from_spec(spec);
        let mut found = fields.for_request(&Method::PUT, "/v1/things/7").unwrap().to_vec();
        found.sort();
        assert_eq!(found, vec!["kind", "title"]);
        assert!(fields.for_request(&Method::GET, "/v1/things/7").is_none());
        let body = serde_json::json!({"title": 12345, "n": 1});
        assert_eq!(first_non_string(&found, &body), Some("title"));
    }
}
