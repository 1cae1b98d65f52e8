//! `POST /v1/webhooks/shopify`: verifies `X-Shopify-Hmac-SHA256` (base64 HMAC-SHA256 of the raw
//! body with the app secret) before anything else, dedupes on `X-Shopify-Webhook-Id`, and
//! applies the effect in one short transaction — well inside Shopify's 5 s timeout, and exactly
//! once however often Shopify redelivers (see `levelup_common::shopify_webhooks`).

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use levelup_common::shopify_webhooks::{self, WebhookOutcome};
use poem::{Body, Request, Response, handler, web::Data};
use secrecy::ExposeSecret;
use sha2::Sha256;

use crate::{
    AppState,
    problem::{Problem, response},
};

fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request.headers().get(name).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty())
}

#[handler]
pub async fn shopify(request: &Request, body: Body, Data(state): Data<&AppState>) -> Response {
    let Some(secret) = &state.config.shopify_webhook_secret else {
        return response(Problem::new(
            "not-configured",
            "Webhooks not configured",
            503,
            "LEVELUP_SHOPIFY_WEBHOOK_SECRET is not set",
        ));
    };
    let unauthorized = || {
        response(Problem::new(
            "invalid-signature",
            "Invalid webhook signature",
            401,
            "X-Shopify-Hmac-SHA256 does not match the body",
        ))
    };
    let Ok(raw) = body.into_bytes_limit(crate::MAX_BODY_BYTES).await else {
        return response(Problem::new("payload-too-large", "Payload too large", 413, "webhook body too large"));
    };
    let Some(signature) = header(request, "x-shopify-hmac-sha256").and_then(|s| STANDARD.decode(s).ok()) else {
        return unauthorized();
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes()).expect("HMAC takes any key length");
    mac.update(&raw);
    if mac.verify_slice(&signature).is_err() {
        return unauthorized();
    }
    let (Some(webhook_id), Some(topic)) = (header(request, "x-shopify-webhook-id"), header(request, "x-shopify-topic"))
    else {
        return response(Problem::new(
            "invalid-request",
            "Invalid request",
            400,
            "X-Shopify-Webhook-Id and X-Shopify-Topic are required",
        ));
    };
    let payload: serde_json::Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(err) => return response(Problem::new("invalid-request", "Invalid request", 400, format!("body: {err}"))),
    };
    match shopify_webhooks::apply_with_rules(&state.db, &state.shopify_rules(), webhook_id, topic, &payload).await {
        Ok(outcome) => {
            tracing::info!(webhook_id, topic, ?outcome, "shopify webhook");
            let label = match outcome {
                WebhookOutcome::Duplicate => "duplicate",
                WebhookOutcome::Applied(what) => what,
                WebhookOutcome::Ignored => "ignored",
            };
            Response::builder()
                .content_type("application/json")
                .body(serde_json::json!({ "outcome": label }).to_string())
        }
        Err(err) => {
            tracing::error!(error = %err, webhook_id, "shopify webhook failed");
            // 5xx: Shopify retries, and the webhook id was not recorded.
            response(Problem::internal())
        }
    }
}

/// `POST /v1/webhooks/ses`: SES bounce and complaint notifications delivered by SNS (the body is
/// JSON sent as `text/plain`). The signature is verified before anything else; subscription
/// confirmations are confirmed; notifications are applied once per SNS MessageId.
#[handler]
pub async fn ses(body: Body, Data(state): Data<&AppState>) -> Response {
    use levelup_common::sns::{self, SnsError};
    let Ok(raw) = body.into_bytes_limit(crate::MAX_BODY_BYTES).await else {
        return response(Problem::new("payload-too-large", "Payload too large", 413, "notification too large"));
    };
    let message: serde_json::Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(err) => return response(Problem::new("invalid-request", "Invalid request", 400, format!("body: {err}"))),
    };
    match state.sns.verify(&message).await {
        Ok(()) => {}
        Err(SnsError::Malformed(why)) => return response(Problem::new("invalid-request", "Invalid request", 400, why)),
        Err(SnsError::CertFetch(why)) => {
            tracing::warn!(%why, "SNS signing certificate unavailable");
            // 5xx: SNS retries later.
            return response(Problem::new(
                "unavailable",
                "Service unavailable",
                503,
                "signing certificate unavailable",
            ));
        }
        Err(err) => {
            tracing::warn!(error = %err, "SNS message rejected");
            return response(Problem::new("invalid-signature", "Invalid SNS signature", 401, err.to_string()));
        }
    }
    let kind = message.get("Type").and_then(serde_json::Value::as_str).unwrap_or("");
    let message_id = message.get("MessageId").and_then(serde_json::Value::as_str).unwrap_or("");
    let ok = |outcome: &str| {
        Response::builder().content_type("application/json").body(serde_json::json!({ "outcome": outcome }).to_string())
    };
    match kind {
        "SubscriptionConfirmation" => match state.sns.confirm_subscription(&message).await {
            Ok(()) => {
                tracing::info!(
                    topic = message.get("TopicArn").and_then(serde_json::Value::as_str),
                    "SNS subscription confirmed"
                );
                ok("subscription_confirmed")
            }
            Err(err) => {
                tracing::warn!(error = %err, "SNS subscription confirmation failed");
                response(Problem::new("unavailable", "Service unavailable", 503, "could not confirm the subscription"))
            }
        },
        "Notification" => {
            let inner =
                message.get("Message").and_then(serde_json::Value::as_str).and_then(|m| serde_json::from_str(m).ok());
            let Some(inner) = inner else {
                return response(Problem::new(
                    "invalid-request",
                    "Invalid request",
                    400,
                    "Message: not an SES notification",
                ));
            };
            match sns::apply_ses_notification(&state.db, message_id, &inner).await {
                Ok(outcome) => {
                    tracing::info!(message_id, ?outcome, "SES notification");
                    ok(match outcome {
                        sns::SesEventOutcome::Duplicate => "duplicate",
                        sns::SesEventOutcome::Suppressed(_) => "suppressed",
                        sns::SesEventOutcome::Ignored => "ignored",
                    })
                }
                Err(err) => {
                    tracing::error!(error = %err, "SES notification failed");
                    response(Problem::internal())
                }
            }
        }
        _ => ok("ignored"),
    }
}
