//! Webhooks. `POST /v1/webhooks/shopify`: verifies `X-Shopify-Hmac-SHA256` (base64 HMAC-SHA256
//! of the raw body with the app secret) before anything else; since the HMAC covers the body
//! only, it then checks the unsigned headers and the body against each other (our shop, a fresh
//! `X-Shopify-Triggered-At`, a body shaped as its topic says); dedupes on `X-Shopify-Webhook-Id`,
//! and applies the effect in one short transaction — well inside Shopify's 5 s timeout, and
//! exactly once however often Shopify redelivers (see `levelup_common::db::shopify_webhooks`).
//! `POST /v1/webhooks/ses`: SES bounces and complaints delivered by SNS, only from the configured
//! topics (`LEVELUP_SNS_TOPIC_ARNS`).
//!
//! Both read the raw body whatever its `Content-Type` ([`RawBody`]): the signatures are over the
//! exact bytes. Both are rate limited per address (their own budget) and shed; neither takes an
//! `Idempotency-Key`.

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use levelup_common::db::{
    ses_events,
    shopify_webhooks::{self, WebhookOutcome},
};
use poem_openapi::{Object, OpenApi, Tags, param::Header, payload::Json};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::{
    AppState,
    http::raw_body::{RawBody, RawBodyDoc},
    http::{error::ApiError, problem::Problem},
};

const PREFIX: &str = "/v1/webhooks/";

/// Whether `path` is a webhook: called by Shopify or SNS, not by people.
pub(crate) fn is_webhook(path: &str) -> bool {
    path.starts_with(PREFIX)
}

#[derive(Tags)]
enum WebhookTags {
    /// Called by Shopify and by AWS SNS, authenticated by their signatures over the raw body.
    Webhooks,
}

pub(crate) struct WebhooksApi {
    pub state: AppState,
}

/// A Shopify webhook: the JSON Shopify sends (its shape depends on `X-Shopify-Topic`).
pub(crate) struct ShopifyBody;

impl RawBodyDoc for ShopifyBody {
    const CONTENT_TYPE: &'static str = "application/json";
    const REQUIRED: bool = true;
    type Schema = serde_json::Value;
}

/// An SNS message: a JSON envelope that SNS sends as `text/plain`.
pub(crate) struct SnsBody;

impl RawBodyDoc for SnsBody {
    const CONTENT_TYPE: &'static str = "text/plain";
    const REQUIRED: bool = true;
    type Schema = String;
}

#[derive(Object)]
struct Outcome {
    /// What happened: e.g. `duplicate`, `ignored`, `suppressed`, `subscription_confirmed`, or
    /// the effect applied for a Shopify topic.
    outcome: String,
}

/// What a webhook's own 503 (not configured, certificate unavailable) asks the sender to wait.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 60;

crate::http::error::status!(
    /// The delivery is not authentic, or not for us.
    WebhookUnauthorized = 401,
    "The signature does not match the body, or the message is from a topic (SNS) or shop (Shopify) not ours."
);
crate::http::error::status!(
    /// Not configured, or a dependency is unavailable.
    WebhookUnavailable = 503,
    "Not configured, or a dependency (the SNS signing certificate) is unavailable; the sender redelivers later (`Retry-After`, seconds). Also load shedding.",
    retry_after = true
);

/// Accepted (applied, a duplicate, or ignored): the sender must not redeliver. Otherwise a
/// problem: 400 malformed (a required header missing, a body that is not what its topic carries,
/// a Shopify delivery older than its retry horizon), 401 (signature, or a topic/shop not ours),
/// 5xx: the sender redelivers later.
type WebhookReply = Result<Json<Outcome>, ApiError<(WebhookUnauthorized, WebhookUnavailable)>>;

/// A webhook's problem; a 503 tells the sender when to redeliver.
fn webhook_problem(problem: Problem) -> ApiError<(WebhookUnauthorized, WebhookUnavailable)> {
    let unavailable = problem.status == 503;
    let error = ApiError::new(problem);
    if unavailable { error.retry_after(UNAVAILABLE_RETRY_AFTER_SECS) } else { error }
}

/// The raw body as JSON, or a 400 naming it.
fn json_body(raw: &[u8]) -> Result<serde_json::Value, ApiError<(WebhookUnauthorized, WebhookUnavailable)>> {
    serde_json::from_slice(raw).map_err(|err| ApiError::bad_request("body", err))
}

fn outcome(label: &str) -> WebhookReply {
    Ok(Json(Outcome { outcome: label.to_owned() }))
}

fn present(value: Header<Option<String>>) -> Option<String> {
    value.0.filter(|v| !v.is_empty())
}

#[OpenApi(prefix_path = "/v1/webhooks", tag = "WebhookTags::Webhooks")]
impl WebhooksApi {
    /// Shopify webhook (customer create/update, consent update, privacy redaction): verified by
    /// HMAC, deduplicated by webhook id, applied at once.
    #[oai(path = "/shopify", method = "post")]
    async fn shopify(
        &self,
        /// Base64 HMAC-SHA256 of the raw body with the app's webhook secret.
        #[oai(name = "X-Shopify-Hmac-SHA256")]
        signature: Header<Option<String>>,
        /// Shopify's id of this delivery; redeliveries repeat it.
        #[oai(name = "X-Shopify-Webhook-Id")]
        webhook_id: Header<Option<String>>,
        /// e.g. `customers/update`.
        #[oai(name = "X-Shopify-Topic")]
        topic: Header<Option<String>>,
        /// The store that sent it: must be the configured one.
        #[oai(name = "X-Shopify-Shop-Domain")]
        shop_domain: Header<Option<String>>,
        /// When the event happened (RFC 3339); deliveries older than Shopify's retry horizon are refused.
        #[oai(name = "X-Shopify-Triggered-At")]
        triggered_at: Header<Option<String>>,
        body: RawBody<ShopifyBody>,
    ) -> WebhookReply {
        let delivery = ShopifyDelivery {
            signature: present(signature),
            webhook_id: present(webhook_id),
            topic: present(topic),
            shop_domain: present(shop_domain),
            triggered_at: present(triggered_at),
        };
        shopify(&self.state, delivery, &body.0).await
    }

    /// SES bounce and complaint notifications delivered by SNS (the body is JSON sent as
    /// `text/plain`). The signature (SignatureVersion 1 or 2) is verified before anything else;
    /// subscription confirmations are confirmed; notifications are applied once per MessageId.
    #[oai(path = "/ses", method = "post")]
    async fn ses(&self, body: RawBody<SnsBody>) -> WebhookReply {
        ses(&self.state, &body.0).await
    }
}

/// The headers of a Shopify delivery (none of them is covered by the HMAC, which signs the body).
struct ShopifyDelivery {
    signature: Option<String>,
    webhook_id: Option<String>,
    topic: Option<String>,
    shop_domain: Option<String>,
    triggered_at: Option<String>,
}

/// Shopify retries a failed delivery 8 times over 4 hours; a delivery triggered longer ago than
/// that (plus clock skew) is a replay.
const SHOPIFY_RETRY_HORIZON: chrono::TimeDelta = chrono::TimeDelta::minutes(4 * 60 + 5);
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(5);

async fn shopify(state: &AppState, delivery: ShopifyDelivery, raw: &[u8]) -> WebhookReply {
    let (Some(secret), Some(our_shop)) = (&state.config.shopify_webhook_secret, &state.config.shopify_shop_domain)
    else {
        return Err(webhook_problem(Problem::new(
            "not-configured",
            "Webhooks not configured",
            503,
            "LEVELUP_SHOPIFY_WEBHOOK_SECRET and LEVELUP_SHOPIFY_SHOP_DOMAIN (or a LEVELUP_SHOPIFY_SHOP domain) must be set",
        )));
    };
    let unauthorized = || {
        Err(webhook_problem(Problem::new(
            "invalid-signature",
            "Invalid webhook signature",
            401,
            "X-Shopify-Hmac-SHA256 does not match the body",
        )))
    };
    let Some(signature) = delivery.signature.and_then(|s| STANDARD.decode(s).ok()) else {
        return unauthorized();
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key length");
    mac.update(raw);
    if mac.verify_slice(&signature).is_err() {
        return unauthorized();
    }
    let (Some(webhook_id), Some(topic), Some(shop_domain), Some(triggered_at)) =
        (delivery.webhook_id, delivery.topic, delivery.shop_domain, delivery.triggered_at)
    else {
        return Err(webhook_problem(Problem::new(
            "invalid-request",
            "Invalid request",
            400,
            "X-Shopify-Webhook-Id, X-Shopify-Topic, X-Shopify-Shop-Domain and X-Shopify-Triggered-At are required",
        )));
    };
    if !shop_domain.eq_ignore_ascii_case(our_shop) {
        tracing::warn!(webhook_id, topic, "Shopify webhook from another shop refused");
        return Err(webhook_problem(Problem::new(
            "wrong-shop",
            "Webhook from another shop",
            401,
            "X-Shopify-Shop-Domain is not our store",
        )));
    }
    let Ok(triggered_at) = chrono::DateTime::parse_from_rfc3339(&triggered_at) else {
        return Err(webhook_problem(Problem::new(
            "invalid-request",
            "Invalid request",
            400,
            "X-Shopify-Triggered-At: not an RFC 3339 time",
        )));
    };
    let age = chrono::Utc::now() - triggered_at.with_timezone(&chrono::Utc);
    if age > SHOPIFY_RETRY_HORIZON || age < -CLOCK_SKEW {
        tracing::warn!(webhook_id, topic, age_secs = age.num_seconds(), "stale Shopify webhook refused");
        return Err(webhook_problem(Problem::new(
            "stale-webhook",
            "Stale webhook",
            400,
            "X-Shopify-Triggered-At is outside Shopify's retry horizon (4 hours): a replay",
        )));
    }
    let payload = json_body(raw)?;
    if let Err(why) = shopify_webhooks::check_shape(&topic, &payload, our_shop) {
        tracing::warn!(webhook_id, topic, "Shopify webhook whose body does not match its topic refused");
        return Err(webhook_problem(Problem::new("topic-mismatch", "Body does not match the topic", 400, why)));
    }
    match shopify_webhooks::apply(&state.db, &state.shopify_rules(), &webhook_id, &topic, &payload).await {
        Ok(applied) => {
            tracing::info!(webhook_id, topic, outcome = ?applied, "shopify webhook");
            outcome(match applied {
                WebhookOutcome::Duplicate => "duplicate",
                WebhookOutcome::Applied(what) => what,
                WebhookOutcome::Ignored => "ignored",
            })
        }
        // 5xx: Shopify retries, and the webhook id was not recorded.
        Err(err) => Err(ApiError::internal(&err)),
    }
}

async fn ses(state: &AppState, raw: &[u8]) -> WebhookReply {
    use levelup_common::mail::sns::{self, SnsError};
    if state.config.sns_topic_arns.is_empty() {
        return Err(webhook_problem(Problem::new(
            "not-configured",
            "Webhooks not configured",
            503,
            "LEVELUP_SNS_TOPIC_ARNS is not set",
        )));
    }
    let message = json_body(raw)?;
    // A valid signature proves the message came from SNS, not from our topic: anyone can create a
    // topic and subscribe us. Checked first, so a foreign topic costs no certificate fetch.
    let topic = message.get("TopicArn").and_then(serde_json::Value::as_str).unwrap_or("");
    if !state.config.sns_topic_arns.iter().any(|ours| ours == topic) {
        tracing::warn!(topic, "SNS message from a topic that is not ours rejected");
        return Err(webhook_problem(Problem::new(
            "unknown-topic",
            "Unknown SNS topic",
            401,
            "TopicArn is not one of LEVELUP_SNS_TOPIC_ARNS",
        )));
    }
    match state.sns.verify(&message).await {
        Ok(()) => {}
        Err(SnsError::Malformed(why)) => {
            return Err(webhook_problem(Problem::new("invalid-request", "Invalid request", 400, why)));
        }
        Err(SnsError::CertFetch(why)) => {
            tracing::warn!(%why, "SNS signing certificate unavailable");
            // 5xx: SNS retries later.
            return Err(webhook_problem(Problem::new(
                "unavailable",
                "Service unavailable",
                503,
                "signing certificate unavailable",
            )));
        }
        Err(err) => {
            tracing::warn!(error = %err, "SNS message rejected");
            return Err(webhook_problem(Problem::new(
                "invalid-signature",
                "Invalid SNS signature",
                401,
                err.to_string(),
            )));
        }
    }
    let kind = message.get("Type").and_then(serde_json::Value::as_str).unwrap_or("");
    let message_id = message.get("MessageId").and_then(serde_json::Value::as_str).unwrap_or("");
    match kind {
        "SubscriptionConfirmation" => match state.sns.confirm_subscription(&message).await {
            Ok(()) => {
                tracing::info!(
                    topic = message.get("TopicArn").and_then(serde_json::Value::as_str),
                    "SNS subscription confirmed"
                );
                outcome("subscription_confirmed")
            }
            Err(err) => {
                tracing::warn!(error = %err, "SNS subscription confirmation failed");
                Err(webhook_problem(Problem::new(
                    "unavailable",
                    "Service unavailable",
                    503,
                    "could not confirm the subscription",
                )))
            }
        },
        "Notification" => {
            let inner =
                message.get("Message").and_then(serde_json::Value::as_str).and_then(|m| serde_json::from_str(m).ok());
            let Some(inner) = inner else {
                return Err(webhook_problem(Problem::new(
                    "invalid-request",
                    "Invalid request",
                    400,
                    "Message: not an SES notification",
                )));
            };
            let event = sns::parse_ses_event(&inner);
            match ses_events::apply(&state.db, message_id, &event).await {
                Ok(applied) => {
                    if let (ses_events::SesEventOutcome::Suppressed(n), Some((reason, _))) = (&applied, event.effect) {
                        // Bounce and complaint rates against sends: what SES reviews an account on.
                        metrics::counter!("levelup_ses_events_total", "kind" => reason.as_str()).increment(*n as u64);
                    }
                    tracing::info!(message_id, outcome = ?applied, "SES notification");
                    outcome(match applied {
                        ses_events::SesEventOutcome::Duplicate => "duplicate",
                        ses_events::SesEventOutcome::Suppressed(_) => "suppressed",
                        ses_events::SesEventOutcome::Ignored => "ignored",
                    })
                }
                Err(err) => Err(ApiError::internal(&err)),
            }
        }
        _ => outcome("ignored"),
    }
}
