//! Success replies shared by the operations (errors are [`super::error::ApiError`]): a plain
//! `200` is poem-openapi's `Json<T>`; these add the statuses that say what happened.

use poem_openapi::{ApiResponse, payload::Json, types::ToJSON};

/// `201 Created` with the new resource.
#[derive(ApiResponse)]
pub enum Created<T: ToJSON + Send + Sync> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>),
}

/// `201` with the new resource, or `200` with the one that already existed (idempotent creation).
#[derive(ApiResponse)]
pub enum CreatedOrExisting<T: ToJSON + Send + Sync> {
    /// Created.
    #[oai(status = 201)]
    Created(Json<T>),
    /// It already existed: here it is, unchanged.
    #[oai(status = 200)]
    Existing(Json<T>),
}

impl<T: ToJSON + Send + Sync> CreatedOrExisting<T> {
    pub fn new(created: bool, value: T) -> Self {
        if created { Self::Created(Json(value)) } else { Self::Existing(Json(value)) }
    }
}

/// `202 Accepted`: queued for a worker, which carries it out.
#[derive(ApiResponse)]
pub enum Accepted<T: ToJSON + Send + Sync> {
    /// Accepted: a worker carries it out; follow it at the resource's `status_url`.
    #[oai(status = 202)]
    Accepted(Json<T>),
}

/// `202 Accepted`: work started in the background; or `200` with the one already under way.
#[derive(ApiResponse)]
pub enum AcceptedOrExisting<T: ToJSON + Send + Sync> {
    /// Started; workers carry it out.
    #[oai(status = 202)]
    Accepted(Json<T>),
    /// Already under way (one at a time): here it is.
    #[oai(status = 200)]
    Existing(Json<T>),
}

impl<T: ToJSON + Send + Sync> AcceptedOrExisting<T> {
    pub fn new(started: bool, value: T) -> Self {
        if started { Self::Accepted(Json(value)) } else { Self::Existing(Json(value)) }
    }
}
