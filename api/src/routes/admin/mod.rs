//! The operator's API (`/v1/admin`, bearer admin key) and page (`/admin`).

pub(crate) mod challenges;
pub(crate) mod page;
pub(crate) mod runs;
pub(crate) mod shopify;
pub(crate) mod subscribers;
