//! Operator endpoints for the Shopify subscriber sync: start a full sync, follow its progress,
//! and see the unsubscribes written back to the store.

use levelup_common::db::{
    shopify_syncs::{self as sync, Start, Sync},
    shopify_writebacks::{self as writeback, Writeback},
};
use levelup_common::domain::{SyncMode, SyncStatus, WritebackState};
use poem_openapi::{Object, OpenApi, Tags, param::Path, payload::Json};

use crate::{
    AppState,
    http::{
        auth::AdminKey,
        error::{ApiError, NotFound},
        problem::Problem,
        reply::AcceptedOrExisting,
    },
};

#[derive(Tags)]
enum SyncTags {
    /// Shopify subscriber sync: trigger and inspect.
    AdminShopify,
}

pub(crate) struct AdminShopifyApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct SyncView {
    id: i64,
    /// `schedule`, `admin` or `job`.
    trigger: String,
    status: SyncStatus,
    /// `pages` (cursor pagination) or `bulk` (a bulk operation, for stores above
    /// `LEVELUP_SHOPIFY_BULK_THRESHOLD`); absent until the first job has counted the customers.
    mode: Option<SyncMode>,
    /// Pages of customers committed (`pages` mode).
    pages: i32,
    /// Lines of the bulk result applied (`bulk` mode).
    bulk_lines: i64,
    /// Customers applied from those pages.
    customers_seen: i64,
    /// New subscribers.
    created: i64,
    /// Unsubscribed subscribers who subscribed again in the store.
    reactivated: i64,
    /// Subscribers who withdrew consent or are no longer subscribed in the store.
    unsubscribed: i64,
    /// Consenting customers we may not mail (no address, bounced, complained, not a buyer).
    skipped: i64,
    /// Times Shopify answered THROTTLED.
    throttled: i64,
    error: Option<String>,
    started_at: chrono::DateTime<chrono::Utc>,
    updated_at: chrono::DateTime<chrono::Utc>,
    finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<Sync> for SyncView {
    fn from(s: Sync) -> Self {
        Self {
            id: s.id,
            trigger: s.trigger,
            status: s.status,
            mode: s.mode,
            pages: s.pages,
            bulk_lines: s.lines_done,
            customers_seen: s.customers_seen,
            created: s.created,
            reactivated: s.reactivated,
            unsubscribed: s.unsubscribed,
            skipped: s.skipped,
            throttled: s.throttled,
            error: s.error,
            started_at: s.started_at,
            updated_at: s.updated_at,
            finished_at: s.finished_at,
        }
    }
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct WritebackView {
    id: i64,
    /// The Shopify customer, `gid://shopify/Customer/…`.
    customer_id: String,
    /// The consent written: `UNSUBSCRIBED`.
    marketing_state: String,
    state: WritebackState,
    attempts: i32,
    last_error: Option<String>,
    created_at: chrono::DateTime<chrono::Utc>,
    done_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<Writeback> for WritebackView {
    fn from(w: Writeback) -> Self {
        Self {
            id: w.id,
            customer_id: w.customer_gid,
            marketing_state: w.marketing_state,
            state: w.state,
            attempts: w.attempts,
            last_error: w.last_error,
            created_at: w.created_at,
            done_at: w.done_at,
        }
    }
}

crate::http::error::status!(
    /// No Shopify store is configured.
    ShopifyNotConfigured = 409,
    "No Shopify store is configured (`LEVELUP_SHOPIFY_SHOP`, `LEVELUP_SHOPIFY_ACCESS_TOKEN`)."
);

/// Starts a full sync (or returns the running one): shared by this endpoint and `POST /v1/admin/jobs`.
/// `true` when it started one.
pub(crate) async fn start_sync<S>(state: &AppState, trigger: &str) -> Result<(bool, Sync), ApiError<S>> {
    if state.config.shopify.is_none() {
        return Err(ApiError::new(Problem::new(
            "shopify-not-configured",
            "Shopify is not configured",
            409,
            "set LEVELUP_SHOPIFY_SHOP and LEVELUP_SHOPIFY_ACCESS_TOKEN to sync subscribers from a store",
        )));
    }
    Ok(match sync::start(&state.db, trigger).await? {
        Start::Started(sync) => (true, sync),
        Start::AlreadyRunning(sync) => (false, sync),
    })
}

#[OpenApi(prefix_path = "/v1/admin/shopify", tag = "SyncTags::AdminShopify")]
impl AdminShopifyApi {
    /// Start a full subscriber sync from Shopify (one runs at a time; the scheduler also starts
    /// one on `LEVELUP_SYNC_CRON`, daily by default).
    #[oai(path = "/syncs", method = "post")]
    async fn start(&self, _auth: AdminKey) -> Result<AcceptedOrExisting<SyncView>, ApiError<ShopifyNotConfigured>> {
        let (started, sync) = start_sync(&self.state, "admin").await?;
        Ok(AcceptedOrExisting::new(started, sync.into()))
    }

    /// Recent syncs, newest first.
    #[oai(path = "/syncs", method = "get")]
    async fn list(&self, _auth: AdminKey) -> Result<Json<Vec<SyncView>>, ApiError> {
        Ok(Json(sync::list(&self.state.db, 50).await?.into_iter().map(Into::into).collect()))
    }

    /// One sync's progress.
    #[oai(path = "/syncs/:id", method = "get")]
    async fn get(&self, _auth: AdminKey, id: Path<i64>) -> Result<Json<SyncView>, ApiError<NotFound>> {
        match sync::get(&self.state.db, id.0).await? {
            Some(sync) => Ok(Json(sync.into())),
            None => Err(ApiError::new(Problem::new(
                "sync-not-found",
                "Sync not found",
                404,
                format!("no sync with id {}", id.0),
            ))),
        }
    }

    /// Unsubscribes made in LevelUp and their write-back to Shopify, newest first.
    #[oai(path = "/writebacks", method = "get")]
    async fn writebacks(&self, _auth: AdminKey) -> Result<Json<Vec<WritebackView>>, ApiError> {
        Ok(Json(writeback::list(&self.state.db, 100).await?.into_iter().map(Into::into).collect()))
    }
}
