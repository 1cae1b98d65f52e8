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
