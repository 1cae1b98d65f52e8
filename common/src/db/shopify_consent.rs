//! One path from "Shopify says this customer's consent is X" to the subscriber table, used by the
//! sync pages and by the webhooks alike.
//!
//! - Consent given, unknown address → a new active subscriber without a level (the questionnaire
//!   places them), unless the address bounced or complained.
//! - Consent given, unsubscribed subscriber → active again only when Shopify's consent is newer
//!   than our unsubscribe (a genuine re-opt-in; an unsubscribe made in LevelUp is written back to
//!   Shopify, so the store's consent is older until the person subscribes again).
//! - Consent withdrawn → unsubscribed and suppressed.
//! - Bounced and complained subscribers are never re-activated from Shopify.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use crate::domain::EmailAddress;

#[derive(Debug, Clone)]
pub struct CustomerRecord {
    pub gid: Option<String>,
    pub email: EmailAddress,
    pub first_name: Option<String>,
    pub subscribed: bool,
    /// When the customer's consent last changed in Shopify.
    pub consent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upserted {
    Created,
    Reactivated,
    Unsubscribed,
    /// Known and already in the state Shopify says (details refreshed).
    Unchanged,
    /// Consent given, but we may not mail them (bounced, complained, not a buyer, older consent).
    Skipped,
}

/// Which consenting customers are subscribers.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Only buyers of this product (recorded from `orders/paid`).
    pub product_gid: Option<String>,
}

impl Rules {
    pub fn from_config(config: &crate::Config) -> Self {
        Self { product_gid: config.shopify.as_ref().and_then(|s| s.product_gid.clone()) }
    }
}

/// Applies one customer's state. `seen_by_sync` marks the subscriber as seen by that full sync.
pub async fn apply(
    tx: &mut PgConnection,
    customer: &CustomerRecord,
    rules: &Rules,
    seen_by_sync: Option<i64>,
) -> sqlx::Result<Upserted> {
    let email = customer.email.lowercase();
    // The name comes from the store (anyone can type anything into a checkout) and goes into the
    // email's greeting: one line.
    let first_name = customer.first_name.as_deref().map(crate::domain::one_line);
    let existing = sqlx::query(
        "SELECT id, status, status_changed_at, shopify_customer_id, lower(email) AS email_lower FROM subscribers
         WHERE shopify_customer_id = $1 OR lower(email) = $2
         ORDER BY (shopify_customer_id IS NOT DISTINCT FROM $1) DESC LIMIT 1 FOR UPDATE",
    )
    .bind(&customer.gid)
    .bind(&email)
    .fetch_optional(&mut *tx)
    .await?;
    if !customer.subscribed {
        let Some(row) = existing else { return Ok(Upserted::Unchanged) };
        let id: i64 = row.get("id");
        if row.get::<String, _>("status") != "active" {
            return Ok(Upserted::Unchanged);
        }
        unsubscribe(tx, id, "shopify consent withdrawn").await?;
        return Ok(Upserted::Unsubscribed);
    }
    if let Some(product) = &rules.product_gid {
        let buyer: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM shopify_buyers WHERE product_gid = $1 AND (customer_gid = $2 OR email_lower = $3))",
        )
        .bind(product)
        .bind(&customer.gid)
        .bind(&email)
        .fetch_one(&mut *tx)
        .await?;
        if !buyer {
            return Ok(Upserted::Skipped);
        }
    }
    let Some(row) = existing else {
        let suppression: Option<(String, DateTime<Utc>)> =
            sqlx::query_as("SELECT reason, created_at FROM suppressions WHERE email_lower = $1")
                .bind(&email)
                .fetch_optional(&mut *tx)
                .await?;
        match suppression {
            None => {}
            Some((reason, at)) if reason == "unsubscribe" && customer.consent_at.is_some_and(|c| c > at) => {
                sqlx::query("DELETE FROM suppressions WHERE email_lower = $1").bind(&email).execute(&mut *tx).await?;
            }
            Some(_) => return Ok(Upserted::Skipped),
        }
        let inserted = sqlx::query(
            "INSERT INTO subscribers (email, first_name, shopify_customer_id, shopify_seen_sync) VALUES ($1, $2, $3, $4)
             ON CONFLICT DO NOTHING",
        )
        .bind(customer.email.as_str())
        .bind(&first_name)
        .bind(&customer.gid)
        .bind(seen_by_sync)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        return Ok(if inserted == 1 { Upserted::Created } else { Upserted::Unchanged });
    };
    let id: i64 = row.get("id");
    let status: String = row.get("status");
    let status_changed_at: DateTime<Utc> = row.get("status_changed_at");
    // Refresh details: name, the customer id if we did not know it, the address if it changed in
    // Shopify and no other subscriber has it.
    sqlx::query(
        "UPDATE subscribers SET
            first_name = COALESCE($2, first_name),
            shopify_customer_id = COALESCE(shopify_customer_id, $3),
            email = CASE WHEN lower(email) <> lower($4)
                          AND NOT EXISTS (SELECT 1 FROM subscribers o WHERE lower(o.email) = lower($4) AND o.id <> $1)
                         THEN $4 ELSE email END,
            shopify_seen_sync = COALESCE($5, shopify_seen_sync),
            updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(&first_name)
    .bind(&customer.gid)
    .bind(customer.email.as_str())
    .bind(seen_by_sync)
    .execute(&mut *tx)
    .await?;
    match status.as_str() {
        "active" => Ok(Upserted::Unchanged),
        "unsubscribed" if customer.consent_at.is_some_and(|c| c > status_changed_at) => {
            sqlx::query(
                "UPDATE subscribers SET status = 'active', status_changed_at = now(), updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "DELETE FROM suppressions WHERE reason = 'unsubscribe'
                 AND email_lower = (SELECT lower(email) FROM subscribers WHERE id = $1)",
            )
            .bind(id)
            .execute(&mut *tx)
            .await?;
            Ok(Upserted::Reactivated)
        }
        _ => Ok(Upserted::Skipped),
    }
}

/// Unsubscribes (from Shopify's side: nothing is written back) and suppresses the address.
pub async fn unsubscribe(tx: &mut PgConnection, id: i64, detail: &str) -> sqlx::Result<()> {
    super::subscribers::unsubscribe_in(tx, id, detail).await.map(drop)
}
