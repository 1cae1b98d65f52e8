//! Subscriber operations, written once and used by both the HTML pages and the JSON API (and
//! the operator's import): they take parsed values, apply the product's rules, and call `db`.
//! Errors a caller answers differently are [`FlowError`] variants.

pub mod import;
pub mod subscriber;

/// Why an operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// The subscriber no longer exists (erased by a Shopify redaction while their links live on).
    #[error("this subscriber no longer exists")]
    SubscriberGone,
    /// The challenge was not sent to this subscriber (subscribers only see their own).
    #[error("no challenge with this id was sent to you")]
    ChallengeNotSent,
    /// A value the operation refuses; `field: message`.
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}
