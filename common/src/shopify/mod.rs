//! Shopify: the GraphQL Admin API client, the durable subscriber sync and the write-back of
//! unsubscribes. Only this module talks to Shopify.

pub mod client;
pub mod sync;
pub mod upsert;
pub mod writeback;

pub use client::{CustomerPage, ShopifyClient, ShopifyCustomer, ShopifyError};

/// The global id `gid://shopify/{kind}/{n}` for a numeric id or a gid of that kind.
pub fn gid(kind: &str, raw: &str) -> Option<String> {
    let raw = raw.trim();
    let prefix = format!("gid://shopify/{kind}/");
    let number = raw.strip_prefix(&prefix).unwrap_or(raw);
    (!number.is_empty() && number.chars().all(|c| c.is_ascii_digit())).then(|| format!("{prefix}{number}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn gids() {
        assert_eq!(super::gid("Product", "42").as_deref(), Some("gid://shopify/Product/42"));
        assert_eq!(super::gid("Product", "gid://shopify/Product/42").as_deref(), Some("gid://shopify/Product/42"));
        assert_eq!(super::gid("Product", "gid://shopify/Customer/42"), None);
        assert_eq!(super::gid("Product", ""), None);
    }
}
