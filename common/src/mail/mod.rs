//! Mail: the message we send, the transport seam (SES v2 or the local outbox), and rendering.
//!
//! Error policy: a [`SendError`] says whether trying again can help. `Permanent` errors (a
//! rejected message or address) fail the delivery at once; `Transient` ones (throttling, 5xx,
//! timeouts, connection errors) are retried with backoff.

pub mod outbox;
pub mod render;
pub mod ses;
pub mod sns;

use std::sync::Arc;

use url::Url;

use crate::config::{Config, MailTransportKind};

/// One message to one recipient.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub from: String,
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Extra headers, e.g. `List-Unsubscribe`.
    pub headers: Vec<ListHeader>,
    /// Our own reference, carried to SES as a message tag and to the outbox file name.
    pub reference: MailRef,
}

/// The record an email belongs to: a delivery of a run, or an operator's test send; a preview
/// belongs to none (it is rendered, never sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailRef {
    Delivery(i64),
    TestSend(i64),
    Preview,
}

impl MailRef {
    /// The SES message tag: `delivery_id` or `test_send_id`, and the id.
    pub fn tag(self) -> (&'static str, i64) {
        match self {
            Self::Delivery(id) => ("delivery_id", id),
            Self::TestSend(id) => ("test_send_id", id),
            Self::Preview => ("preview", 0),
        }
    }

    /// The outbox file's name without its extension: `delivery-<id>` or `test-send-<id>`.
    pub fn file_stem(self) -> String {
        match self {
            Self::Delivery(id) => format!("delivery-{id}"),
            Self::TestSend(id) => format!("test-send-{id}"),
            Self::Preview => "preview".to_owned(),
        }
    }
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// Trying again later may succeed. `throttled` marks a rate-limit answer (back off harder);
    /// `maybe_delivered` marks an outcome we could not observe (a timeout after the request left).
    #[error("transient send failure: {reason}")]
    Transient { reason: String, throttled: bool, maybe_delivered: bool },
    /// Trying again will not help.
    #[error("permanent send failure: {reason}")]
    Permanent { reason: String },
}

impl SendError {
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::Transient { reason: reason.into(), throttled: false, maybe_delivered: false }
    }
}

/// Where mail goes. Implementations must time out every network call.
#[async_trait::async_trait]
pub trait MailTransport: Send + Sync {
    /// Sends one message and returns the provider's message id.
    async fn send(&self, email: &OutgoingEmail) -> Result<String, SendError>;
    fn name(&self) -> &'static str;
}

/// The transport the configuration asks for.
pub async fn transport_from_config(config: &Config) -> anyhow::Result<Arc<dyn MailTransport>> {
    Ok(match &config.mail_transport {
        MailTransportKind::Outbox { dir } => Arc::new(outbox::OutboxTransport::new(dir.clone())?),
        MailTransportKind::Ses => Arc::new(ses::SesTransport::new(&config.ses).await),
    })
}

/// A header beyond From, To and Subject. Typed, so nobody writes header text: a value can only
/// be what its header allows (a parsed URL holds no space, CR, LF, `<` or `>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListHeader {
    /// `List-Unsubscribe: <url>` (RFC 2369).
    Unsubscribe(Url),
    /// `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058): the unsubscribe URL takes
    /// a `POST` with no further step.
    UnsubscribePost,
    /// `X-LevelUp-Test: 1`: an operator's test send, not a delivery of a run.
    Test,
}

impl ListHeader {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Unsubscribe(_) => "List-Unsubscribe",
            Self::UnsubscribePost => "List-Unsubscribe-Post",
            Self::Test => "X-LevelUp-Test",
        }
    }

    /// The value as it goes on the wire, for transports that take header values as text (SES).
    pub fn value(&self) -> String {
        match self {
            Self::Unsubscribe(url) => ["<", url.as_str(), ">"].concat(),
            Self::UnsubscribePost => "List-Unsubscribe=One-Click".to_owned(),
            Self::Test => "1".to_owned(),
        }
    }
}

/// Splits `Name <addr@host>` into its parts; a bare address has no name.
pub fn split_mailbox(mailbox: &str) -> (Option<&str>, &str) {
    match (mailbox.find('<'), mailbox.rfind('>')) {
        (Some(open), Some(close)) if open < close => {
            let name = mailbox[..open].trim().trim_matches('"').trim();
            ((!name.is_empty()).then_some(name), mailbox[open + 1..close].trim())
        }
        _ => (None, mailbox.trim()),
    }
}
