//! Effects of Shopify webhooks on subscribers, applied in the same transaction that records the
//! webhook id, so a redelivered webhook (Shopify retries on timeouts) has its effect once.
//!
//! Topics: `customers/create`, `customers/update` and `customers/email_marketing_consent_update`
//! go through the sync's upsert path ([`crate::db::shopify_consent`]): consent given → active
//! subscriber without a level, consent withdrawn → unsubscribed and suppressed (an unsubscribed
//! person is re-activated only by a consent newer than their unsubscribe); `orders/paid` records
//! buyers of the configured product; `customers/redact` erases the subscriber and everything tied
//! to them; `shop/redact` erases everything that came from the store. Other topics (including
//! `customers/data_request`, which an operator answers from the admin API) are recorded and ignored.

use serde_json::Value;
use sqlx::PgPool;

use super::received_webhooks;
use crate::{
    db::shopify_consent::{self as upsert, CustomerRecord, Rules, Upserted},
    domain::EmailAddress,
    domain::WebhookSource,
};

/// Why a verified delivery is refused: its body is not what its topic carries. The HMAC covers
/// the body only, so the topic header could be swapped on a captured genuine body (a
/// `customers/update` resent as `shop/redact`); the body must match the topic it claims.
pub fn check_shape(topic: &str, payload: &Value, our_shop: &str) -> Result<(), String> {
    let has = |pointer: &str| payload.pointer(pointer).is_some_and(|v| !v.is_null());
    let is_id = |pointer: &str| {
        payload.pointer(pointer).is_some_and(|v| v.is_u64() || v.as_str().is_some_and(|s| !s.is_empty()))
    };
    let names_our_shop =
        || payload.get("shop_domain").and_then(Value::as_str).is_some_and(|d| d.eq_ignore_ascii_case(our_shop));
    let ok = match topic {
        "customers/create" | "customers/update" => {
            is_id("/id") && has("/email_marketing_consent") && !has("/line_items") && !has("/customer")
        }
        "customers/email_marketing_consent_update" => is_id("/customer_id") && has("/email_marketing_consent"),
        "orders/paid" => is_id("/id") && payload.get("line_items").is_some_and(Value::is_array),
        "customers/redact" => {
            names_our_shop() && is_id("/customer/id") && payload.get("orders_to_redact").is_some_and(Value::is_array)
        }
        "shop/redact" => names_our_shop() && !has("/customer") && !has("/id"),
        _ => true,
    };
    if ok { Ok(()) } else { Err(format!("the body is not a `{topic}` payload for {our_shop}")) }
}

#[derive(Debug, PartialEq, Eq)]
pub enum WebhookOutcome {
    Duplicate,
    Applied(&'static str),
    Ignored,
}

fn customer_gid(value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => Some(format!("gid://shopify/Customer/{n}")),
        Value::String(s) if s.starts_with("gid://") => Some(s.clone()),
        Value::String(s) if !s.is_empty() => Some(format!("gid://shopify/Customer/{s}")),
        _ => None,
    }
}

fn consent_state(value: &Value) -> Option<String> {
    value.pointer("/email_marketing_consent/state").and_then(Value::as_str).map(str::to_lowercase)
}

/// Applies a webhook once (deduplicated by its id) through the same upsert path as the sync.
pub async fn apply(
    pool: &PgPool,
    rules: &Rules,
    webhook_id: &str,
    topic: &str,
    payload: &Value,
) -> sqlx::Result<WebhookOutcome> {
    let mut tx = pool.begin().await?;
    if !received_webhooks::first_delivery(&mut tx, WebhookSource::Shopify, webhook_id, topic).await? {
        return Ok(WebhookOutcome::Duplicate);
    }
    let outcome = match topic {
        "customers/create" | "customers/update" => {
            let record = record(payload.get("email"), payload.get("id"), payload.get("first_name"), payload);
            apply_record(&mut tx, rules, record).await?
        }
        "customers/email_marketing_consent_update" => {
            let record = record(payload.get("email_address"), payload.get("customer_id"), None, payload);
            apply_record(&mut tx, rules, record).await?
        }
        "orders/paid" => {
            let customer = payload.get("customer").unwrap_or(&Value::Null);
            let gid = customer.get("id").and_then(customer_gid);
            let email =
                payload.get("email").or_else(|| customer.get("email")).and_then(Value::as_str).map(str::to_lowercase);
            let order = payload.get("id").and_then(|id| gid_of("Order", id));
            let bought = payload.get("line_items").and_then(Value::as_array).is_some_and(|items| {
                items.iter().any(|item| {
                    let product = item.get("product_id").and_then(|p| gid_of("Product", p));
                    product.is_some() && product == rules.product_gid
                })
            });
            match (bought, gid, order) {
                (true, Some(gid), Some(order)) => {
                    sqlx::query(
                        "INSERT INTO shopify_buyers (customer_gid, product_gid, email_lower, order_gid)
                         VALUES ($1, $2, $3, $4) ON CONFLICT (customer_gid, product_gid) DO NOTHING",
                    )
                    .bind(&gid)
                    .bind(&rules.product_gid)
                    .bind(&email)
                    .bind(&order)
                    .execute(&mut *tx)
                    .await?;
                    // A buyer who consented becomes a subscriber now, not at the next sync.
                    let record = record(
                        customer.get("email").or(payload.get("email")),
                        customer.get("id"),
                        customer.get("first_name"),
                        customer,
                    );
                    match apply_record(&mut tx, rules, record).await? {
                        WebhookOutcome::Applied(what) => WebhookOutcome::Applied(what),
                        _ => WebhookOutcome::Applied("buyer recorded"),
                    }
                }
                _ => WebhookOutcome::Ignored,
            }
        }
        "customers/redact" => {
            let email = payload.pointer("/customer/email").and_then(Value::as_str).map(str::to_lowercase);
            let gid = payload.pointer("/customer/id").and_then(customer_gid);
            // Deleting the subscriber cascades to its ledger, submissions, questionnaire and history.
            sqlx::query("DELETE FROM subscribers WHERE lower(email) = $1 OR shopify_customer_id = $2")
                .bind(&email)
                .bind(&gid)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM suppressions WHERE email_lower = $1").bind(&email).execute(&mut *tx).await?;
            sqlx::query("DELETE FROM shopify_buyers WHERE customer_gid = $1 OR email_lower = $2")
                .bind(&gid)
                .bind(&email)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM shopify_writebacks WHERE customer_gid = $1").bind(&gid).execute(&mut *tx).await?;
            WebhookOutcome::Applied("redacted")
        }
        "shop/redact" => {
            // Sent 48 hours after the store uninstalled the app: erase everything that came from
            // it — its customers (and, by cascade, their ledger, submissions and history), their
            // suppressions, buyers and pending write-backs. Subscribers imported by CSV stay.
            sqlx::query(
                "DELETE FROM suppressions WHERE email_lower IN
                   (SELECT lower(email) FROM subscribers WHERE shopify_customer_id IS NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM subscribers WHERE shopify_customer_id IS NOT NULL").execute(&mut *tx).await?;
            sqlx::query("DELETE FROM shopify_buyers").execute(&mut *tx).await?;
            sqlx::query("DELETE FROM shopify_writebacks").execute(&mut *tx).await?;
            WebhookOutcome::Applied("shop redacted")
        }
        _ => WebhookOutcome::Ignored,
    };
    tx.commit().await?;
    Ok(outcome)
}

/// The customer a webhook describes, when it has a usable address and a consent state.
fn record(
    email: Option<&Value>,
    id: Option<&Value>,
    first_name: Option<&Value>,
    consent: &Value,
) -> Option<CustomerRecord> {
    let email = email.and_then(Value::as_str).and_then(|e| EmailAddress::parse(e).ok())?;
    let state = consent_state(consent)?;
    Some(CustomerRecord {
        gid: id.and_then(customer_gid),
        email,
        first_name: first_name.and_then(Value::as_str).map(str::to_owned).filter(|n| !n.trim().is_empty()),
        subscribed: state == "subscribed",
        consent_at: consent
            .pointer("/email_marketing_consent/consent_updated_at")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc)),
    })
}

async fn apply_record(
    tx: &mut sqlx::PgConnection,
    rules: &Rules,
    record: Option<CustomerRecord>,
) -> sqlx::Result<WebhookOutcome> {
    let Some(record) = record else { return Ok(WebhookOutcome::Ignored) };
    Ok(match upsert::apply(tx, &record, rules, None).await? {
        Upserted::Created | Upserted::Reactivated => WebhookOutcome::Applied("upserted"),
        Upserted::Unsubscribed => WebhookOutcome::Applied("unsubscribed"),
        Upserted::Unchanged if record.subscribed => WebhookOutcome::Applied("upserted"),
        Upserted::Unchanged | Upserted::Skipped => WebhookOutcome::Ignored,
    })
}

fn gid_of(kind: &str, value: &Value) -> Option<String> {
    match value {
        Value::Number(n) => crate::domain::gid(kind, &n.to_string()),
        Value::String(s) => crate::domain::gid(kind, s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::check_shape;

    const SHOP: &str = "s.myshopify.com";

    #[test]
    fn bodies_must_match_their_topic() {
        let customer = json!({"id": 1, "email": "a@b.c", "email_marketing_consent": {"state": "subscribed"}});
        let order = json!({"id": 9, "line_items": [], "customer": {"id": 1, "email": "a@b.c"}});
        let redact = json!({"shop_domain": SHOP, "customer": {"id": 1}, "orders_to_redact": []});
        let shop = json!({"shop_id": 1, "shop_domain": SHOP});
        assert!(check_shape("customers/update", &customer, SHOP).is_ok());
        assert!(check_shape("orders/paid", &order, SHOP).is_ok());
        assert!(check_shape("customers/redact", &redact, SHOP).is_ok());
        assert!(check_shape("shop/redact", &shop, SHOP).is_ok());
        assert!(check_shape("shop/redact", &customer, SHOP).is_err());
        assert!(check_shape("customers/redact", &order, SHOP).is_err());
        assert!(check_shape("customers/update", &order, SHOP).is_err());
        assert!(check_shape("shop/redact", &json!({"shop_domain": "other.myshopify.com"}), SHOP).is_err());
        assert!(check_shape("customers/redact", &json!({"shop_domain": SHOP, "customer": {"id": 1}}), SHOP).is_err());
    }
}
