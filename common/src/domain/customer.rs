use chrono::{DateTime, Utc};

/// A customer as Shopify reports it (a sync page, a bulk export line): what we need to decide
/// whether they are a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopifyCustomer {
    pub gid: String,
    pub first_name: Option<String>,
    pub email: Option<String>,
    pub marketing_state: Option<String>,
    pub marketing_updated_at: Option<DateTime<Utc>>,
}

/// The global id `gid://shopify/{kind}/{n}` for a numeric id or a gid of that kind.
pub fn gid(kind: &str, raw: &str) -> Option<String> {
    let raw = raw.trim();
    let prefix = format!("gid://shopify/{kind}/");
    let number = raw.strip_prefix(&prefix).unwrap_or(raw);
    (!number.is_empty() && number.chars().all(|c| c.is_ascii_digit())).then(|| format!("{prefix}{number}"))
}
