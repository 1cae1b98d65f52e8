//! Operator endpoints for the Shopify subscriber sync: start a full sync, follow its progress,
//! and see the unsubscribes written back to the store.

use levelup_common::shopify::{
    sync::{self, Start, Sync},
    writeback::{self, Writeback},
};
use poem_openapi::{ApiResponse, Object, OpenApi, Tags, param::Path, payload::Json};

use crate::{AppState, auth::AdminKey, problem::Problem};

#[derive(Tags)]
enum SyncTags {
    /// Shopify subscriber sync: trigger and inspect.
    AdminShopify,
}

pub struct AdminSyncApi {
    pub state: AppState,
}

#[derive(Object)]
#[oai(skip_serializing_if_is_none)]
struct SyncView {
    id: i64,
    /// `schedule`, `admin` or `job`.
    trigger: String,
    /// `running`, `completed` or `failed`.
    status: String,
    /// `pages` (cursor pagination) or `bulk` (a bulk operation, for stores above
    /// `LEVELUP_SHOPIFY_BULK_THRESHOLD`); absent until the first job has counted the customers.
    mode: Option<String>,
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
    /// `pending`, `done` or `failed`.
    state: String,
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

#[derive(ApiResponse)]
enum StartResponse {
    /// A full sync started; workers carry it out page by page.
    #[oai(status = 202)]
    Started(Json<SyncView>),
    /// A sync is already running (one at a time): here it is.
    #[oai(status = 200)]
    AlreadyRunning(Json<SyncView>),
    /// No Shopify store is configured (`LEVELUP_SHOPIFY_SHOP`, `LEVELUP_SHOPIFY_ACCESS_TOKEN`).
    #[oai(status = 409, content_type = "application/problem+json")]
    NotConfigured(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

#[derive(ApiResponse)]
enum SyncResponse {
    #[oai(status = 200)]
    Ok(Json<SyncView>),
    #[oai(status = 404, content_type = "application/problem+json")]
    NotFound(Json<Problem>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

#[derive(ApiResponse)]
enum SyncsResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<SyncView>>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

#[derive(ApiResponse)]
enum WritebacksResponse {
    #[oai(status = 200)]
    Ok(Json<Vec<WritebackView>>),
    #[oai(status = 500, content_type = "application/problem+json")]
    Internal(Json<Problem>),
}

fn internal(err: impl std::fmt::Display) -> Json<Problem> {
    tracing::error!(error = %err, "admin request failed");
    Json(Problem::internal())
}

/// Starts a full sync (or returns the running one): shared by this endpoint and `POST /v1/admin/jobs`.
pub async fn start_sync(state: &AppState, trigger: &str) -> Result<(bool, Sync), Problem> {
    if state.config.shopify.is_none() {
        return Err(Problem::new(
            "shopify-not-configured",
            "Shopify is not configured",
            409,
            "set LEVELUP_SHOPIFY_SHOP and LEVELUP_SHOPIFY_ACCESS_TOKEN to sync subscribers from a store",
        ));
    }
    match sync::start(&state.db, trigger).await {
        Ok(Start::Started(sync)) => Ok((true, sync)),
        Ok(Start::AlreadyRunning(sync)) => Ok((false, sync)),
        Err(err) => Err(internal(err).0),
    }
}

#[OpenApi(prefix_path = "/v1/admin/shopify", tag = "SyncTags::AdminShopify")]
impl AdminSyncApi {
    /// Start a full subscriber sync from Shopify (one runs at a time; the scheduler also starts
    /// one on `LEVELUP_SYNC_CRON`, daily by default).
    #[oai(path = "/syncs", method = "post")]
    async fn start(&self, _auth: AdminKey) -> StartResponse {
        match start_sync(&self.state, "admin").await {
            Ok((true, sync)) => StartResponse::Started(Json(sync.into())),
            Ok((false, sync)) => StartResponse::AlreadyRunning(Json(sync.into())),
            Err(problem) if problem.status == 409 => StartResponse::NotConfigured(Json(problem)),
            Err(problem) => StartResponse::Internal(Json(problem)),
        }
    }

    /// Recent syncs, newest first.
    #[oai(path = "/syncs", method = "get")]
    async fn list(&self, _auth: AdminKey) -> SyncsResponse {
        match sync::list(&self.state.db, 50).await {
            Ok(syncs) => SyncsResponse::Ok(Json(syncs.into_iter().map(Into::into).collect())),
            Err(err) => SyncsResponse::Internal(internal(err)),
        }
    }

    /// One sync's progress.
    #[oai(path = "/syncs/:id", method = "get")]
    async fn get(&self, _auth: AdminKey, id: Path<i64>) -> SyncResponse {
        match sync::get(&self.state.db, id.0).await {
            Ok(Some(sync)) => SyncResponse::Ok(Json(sync.into())),
            Ok(None) => SyncResponse::NotFound(Json(Problem::new(
                "sync-not-found",
                "Sync not found",
                404,
                format!("no sync with id {}", id.0),
            ))),
            Err(err) => SyncResponse::Internal(internal(err)),
        }
    }

    /// Unsubscribes made in LevelUp and their write-back to Shopify, newest first.
    #[oai(path = "/writebacks", method = "get")]
    async fn writebacks(&self, _auth: AdminKey) -> WritebacksResponse {
        match writeback::list(&self.state.db, 100).await {
            Ok(rows) => WritebacksResponse::Ok(Json(rows.into_iter().map(Into::into).collect())),
            Err(err) => WritebacksResponse::Internal(internal(err)),
        }
    }
}
