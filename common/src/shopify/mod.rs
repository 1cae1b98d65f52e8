//! Shopify: the GraphQL Admin API client, the durable subscriber sync and the write-back of
//! unsubscribes. Only this module talks to Shopify.

pub mod client;

pub use crate::domain::{ShopifyCustomer, gid};
pub use client::{CustomerPage, ShopifyClient, ShopifyError};

#[cfg(test)]
mod tests {
    use super::gid;

    #[test]
    fn gids() {
        assert_eq!(gid("Product", "42").as_deref(), Some("gid://shopify/Product/42"));
        assert_eq!(gid("Product", "gid://shopify/Product/42").as_deref(), Some("gid://shopify/Product/42"));
        assert_eq!(gid("Product", "gid://shopify/Customer/42"), None);
        assert_eq!(gid("Product", ""), None);
    }
}
