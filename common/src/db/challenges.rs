//! Challenges, authored per level and ordered by `position`.

use serde::Serialize;
use sqlx::{FromRow, PgPool};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Challenge {
    pub id: i64,
    pub level: i16,
    pub position: i32,
    pub title: String,
    pub body: String,
    pub archived: bool,
}

pub async fn list(pool: &PgPool, level: Option<i16>, include_archived: bool) -> sqlx::Result<Vec<Challenge>> {
    sqlx::query_as(
        "SELECT id, level, position, title, body, archived FROM challenges
         WHERE ($1::smallint IS NULL OR level = $1) AND ($2 OR NOT archived)
         ORDER BY level, position",
    )
    .bind(level)
    .bind(include_archived)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Challenge>> {
    sqlx::query_as("SELECT id, level, position, title, body, archived FROM challenges WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Creates a challenge; without a position it goes after the level's last one.
pub async fn create(
    pool: &PgPool,
    level: i16,
    position: Option<i32>,
    title: &str,
    body: &str,
) -> sqlx::Result<Challenge> {
    sqlx::query_as(
        "INSERT INTO challenges (level, position, title, body)
         VALUES ($1, COALESCE($2, (SELECT COALESCE(max(position) + 1, 0) FROM challenges WHERE level = $1)), $3, $4)
         RETURNING id, level, position, title, body, archived",
    )
    .bind(level)
    .bind(position)
    .bind(title)
    .bind(body)
    .fetch_one(pool)
    .await
}

pub async fn update(
    pool: &PgPool,
    id: i64,
    title: &str,
    body: &str,
    archived: bool,
) -> sqlx::Result<Option<Challenge>> {
    sqlx::query_as(
        "UPDATE challenges SET title = $2, body = $3, archived = $4, updated_at = now() WHERE id = $1
         RETURNING id, level, position, title, body, archived",
    )
    .bind(id)
    .bind(title)
    .bind(body)
    .bind(archived)
    .fetch_optional(pool)
    .await
}
