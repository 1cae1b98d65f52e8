//! One error path for every handler.
//!
//! Policy (compare crates.io's `util/errors.rs`):
//! - Handlers return `Result<Reply, ApiError<S>>` and use `?`. `S` lists the statuses the
//!   operation answers *itself* beyond the ones [`crate::http::documented`] adds to every
//!   operation (400 for malformed input, 401 with credentials, 500), so `/openapi.json` stays
//!   exact per operation: `ApiError<(NotFound, Conflict)>` documents 404 and 409.
//! - Errors of lower layers convert with `From`: `sqlx::Error` once here (no row → 404, unique
//!   violation → 409, value out of range → 400; anything else → 500), domain and flow errors in
//!   their own `From` impls next to them.
//! - A 5xx is logged here, once, with the whole cause chain, inside the request's span (which
//!   carries the request id); the client gets a fixed detail that never leaks internals.
//! - A status the operation does not declare is a bug: logged and answered as 500.
//!
//! Every problem reaches the client through [`crate::http::problem::response`].

use std::{error::Error as StdError, marker::PhantomData};

use levelup_common::flows::FlowError;
use poem::{IntoResponse, Response};
use poem_openapi::{
    ApiResponse,
    registry::{MetaResponses, Registry},
    types::Type,
};

use super::problem::{self, Problem};

/// A status an operation may answer with a problem, and what it means there.
pub trait Status {
    const CODE: u16;
    const DESCRIPTION: &'static str;
    /// The problem carries `Retry-After`.
    const RETRY_AFTER: bool = false;
}

/// The statuses an operation declares: `()`, one [`Status`], or a tuple of them.
pub trait Statuses {
    fn declared() -> Vec<(u16, &'static str, bool)>;
}

impl Statuses for () {
    fn declared() -> Vec<(u16, &'static str, bool)> {
        Vec::new()
    }
}

macro_rules! statuses_for_tuples {
    ($(($($s:ident),+)),+) => {
        $(impl<$($s: Status),+> Statuses for ($($s,)+) {
            fn declared() -> Vec<(u16, &'static str, bool)> {
                vec![$(($s::CODE, $s::DESCRIPTION, $s::RETRY_AFTER)),+]
            }
        })+
    };
}
statuses_for_tuples!((A), (A, B), (A, B, C), (A, B, C, D));

/// Declares a [`Status`] marker.
macro_rules! status {
    ($(#[$meta:meta])* $name:ident = $code:literal, $description:literal $(, retry_after = $retry:literal)?) => {
        $(#[$meta])*
        pub(crate) struct $name;
        impl $crate::http::error::Status for $name {
            const CODE: u16 = $code;
            const DESCRIPTION: &'static str = $description;
            $(const RETRY_AFTER: bool = $retry;)?
        }
        impl $crate::http::error::Statuses for $name {
            fn declared() -> Vec<(u16, &'static str, bool)> {
                use $crate::http::error::Status;
                vec![(Self::CODE, Self::DESCRIPTION, Self::RETRY_AFTER)]
            }
        }
    };
}

pub(crate) use status;

status!(NotFound = 404, "No such resource: the problem's detail says which.");

/// Statuses every operation documents (see [`crate::http::documented`]): always allowed.
const ALWAYS_DOCUMENTED: [u16; 3] = [400, 401, 500];

/// An error answered as RFC 7807 problem+json. `S`: the statuses the operation declares.
pub struct ApiError<S = ()> {
    problem: Problem,
    retry_after: Option<u64>,
    declares: PhantomData<fn() -> S>,
}

impl<S> std::fmt::Debug for ApiError<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiError").field("problem", &self.problem).finish()
    }
}

impl<S> ApiError<S> {
    pub fn new(problem: Problem) -> Self {
        Self { problem, retry_after: None, declares: PhantomData }
    }

    /// 400 naming the field.
    pub fn bad_request(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(Problem::new("invalid-request", "Invalid request", 400, format!("{field}: {message}")))
    }

    /// 404 for a resource of kind `what`.
    pub fn not_found(what: &str) -> Self {
        Self::new(Problem::new("not-found", "Not found", 404, format!("no such {what}")))
    }

    /// A failure on our side: logged here with its cause chain, answered with a fixed 500.
    pub fn internal(err: &(dyn StdError + 'static)) -> Self {
        tracing::error!(error = %cause_chain(err), "request failed");
        Self::new(Problem::internal())
    }

    /// [`Self::internal`] for an `anyhow::Error` (its `{:#}` is the cause chain).
    pub fn internal_anyhow(err: &anyhow::Error) -> Self {
        tracing::error!(error = %format!("{err:#}"), "request failed");
        Self::new(Problem::internal())
    }

    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn problem(&self) -> &Problem {
        &self.problem
    }

    /// The same problem, for an operation that declares other statuses (checked on answering).
    pub fn widen<T>(self) -> ApiError<T> {
        ApiError { problem: self.problem, retry_after: self.retry_after, declares: PhantomData }
    }
}

/// `err` and its sources, outermost first: `a: b: c`.
pub(crate) fn cause_chain(err: &(dyn StdError + 'static)) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

impl<S> From<sqlx::Error> for ApiError<S> {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => Self::new(Problem::new("not-found", "Not found", 404, "no such resource")),
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // unique_violation: the value is taken (the constraint names it in the logs only).
                Some("23505") => {
                    tracing::info!(error = %db, "unique violation answered as 409");
                    Self::new(Problem::new("conflict", "Conflict", 409, "a resource with these values already exists"))
                }
                // numeric_value_out_of_range, string_data_right_truncation, check_violation:
                // a value the schema refuses.
                Some("22003" | "22001" | "23514") => {
                    tracing::info!(error = %db, "value refused by the schema answered as 400");
                    Self::new(Problem::new("invalid-request", "Invalid request", 400, "a value is out of range"))
                }
                _ => Self::internal(&err),
            },
            _ => Self::internal(&err),
        }
    }
}

impl<S> From<FlowError> for ApiError<S> {
    fn from(err: FlowError) -> Self {
        match err {
            FlowError::SubscriberGone => {
                Self::new(Problem::new("invalid-token", "Invalid link token", 401, err.to_string()))
            }
            FlowError::ChallengeNotSent => {
                Self::new(Problem::new("challenge-not-found", "No such challenge", 404, err.to_string()))
            }
            FlowError::Invalid { .. } => {
                Self::new(Problem::new("invalid-request", "Invalid request", 400, err.to_string()))
            }
            FlowError::Database(err) => err.into(),
        }
    }
}

impl<S: Statuses> ApiError<S> {
    /// The problem, or a 500 if the operation does not declare its status.
    fn checked(self) -> (Problem, Option<u64>) {
        let status = self.problem.status;
        let declared = ALWAYS_DOCUMENTED.contains(&status) || S::declared().iter().any(|(code, ..)| *code == status);
        if declared {
            (self.problem, self.retry_after)
        } else {
            tracing::error!(status, detail = %self.problem.detail, "problem status not declared by the operation");
            (Problem::internal(), None)
        }
    }
}

impl<S: Statuses> IntoResponse for ApiError<S> {
    fn into_response(self) -> Response {
        let (problem, retry_after) = self.checked();
        let mut response = problem::response(problem);
        if let Some(seconds) = retry_after {
            response.headers_mut().insert("Retry-After", seconds.into());
        }
        response
    }
}

/// Handlers return `Result<_, ApiError<S>>`; poem-openapi turns the error into a `poem::Error`
/// that carries the finished response (passed through untouched by
/// [`crate::http::problem::from_error`]).
impl<S: Statuses> From<ApiError<S>> for poem::Error {
    fn from(err: ApiError<S>) -> Self {
        poem::Error::from_response(err.into_response())
    }
}

impl<S: Statuses + Send + Sync + 'static> ApiResponse for ApiError<S> {
    fn meta() -> MetaResponses {
        let responses = S::declared()
            .into_iter()
            .map(|(status, description, retry_after)| {
                super::documented::problem_response(status, description, retry_after)
            })
            .collect();
        MetaResponses { responses }
    }

    fn register(registry: &mut Registry) {
        Problem::register(registry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undeclared_status_is_answered_as_500() {
        let (problem, _) = ApiError::<NotFound>::not_found("x").checked();
        assert_eq!(problem.status, 404);
        let (problem, _) = ApiError::<()>::not_found("x").checked();
        assert_eq!(problem.status, 500);
        let (problem, _) = ApiError::<()>::bad_request("f", "bad").checked();
        assert_eq!(problem.status, 400);
    }

    #[test]
    fn database_errors_map_once() {
        let err: ApiError<NotFound> = sqlx::Error::RowNotFound.into();
        assert_eq!(err.problem().status, 404);
        let err: ApiError<()> = sqlx::Error::PoolTimedOut.into();
        assert_eq!(err.problem().status, 500);
        assert!(!err.problem().detail.contains("pool"), "internals never reach the client");
    }

    #[test]
    fn the_cause_chain_is_logged_whole() {
        let inner = std::io::Error::other("connection reset");
        let outer = sqlx::Error::Io(inner);
        assert!(cause_chain(&outer).contains("connection reset"));
    }
}
