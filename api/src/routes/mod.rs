//! The operations, by audience: health and metrics, webhooks, the subscriber's JSON API and
//! pages, and the operator's API and page. Handlers read the request, call `flows`/`db`, and
//! answer through [`crate::http`].

pub(crate) mod admin;
pub(crate) mod ops;
pub(crate) mod pages;
pub(crate) mod subscriber;
pub(crate) mod webhooks;
