//! Operator views of subscribers and the delivery ledger, and CSV import.

use serde::Serialize;
use sqlx::{FromRow, PgPool};

use crate::domain::{EmailAddress, Level};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct SubscriberRow {
    pub id: i64,
    pub email: String,
    pub first_name: Option<String>,
    pub status: String,
    pub level: Option<i16>,
    pub shopify_customer_id: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Keyset page of subscribers, optionally filtered by a search on email/name and by status.
pub async fn list(
    pool: &PgPool,
    search: Option<&str>,
    status: Option<&str>,
    after_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<SubscriberRow>> {
    let pattern = search.map(|s| format!("%{}%", s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")));
    sqlx::query_as(
        "SELECT id, email, first_name, status, level, shopify_customer_id, created_at FROM subscribers
         WHERE id > $1 AND ($2::text IS NULL OR email ILIKE $2 OR first_name ILIKE $2) AND ($3::text IS NULL OR status = $3)
         ORDER BY id LIMIT $4",
    )
    .bind(after_id)
    .bind(pattern)
    .bind(status)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct LedgerRow {
    pub id: i64,
    pub subscriber_id: i64,
    pub week: String,
    pub kind: String,
    pub challenge_id: Option<i64>,
    pub state: String,
    pub attempts: i32,
    pub ambiguous: bool,
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub sent_at: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

const LEDGER_COLUMNS: &str =
    "id, subscriber_id, week, kind, challenge_id, state, attempts, ambiguous, message_id, reason, sent_at, updated_at";

pub async fn delivery(pool: &PgPool, id: i64) -> sqlx::Result<Option<LedgerRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {LEDGER_COLUMNS} FROM deliveries WHERE id = $1")))
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn ledger_for_subscriber(pool: &PgPool, subscriber_id: i64) -> sqlx::Result<Vec<LedgerRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LEDGER_COLUMNS} FROM deliveries WHERE subscriber_id = $1 ORDER BY week DESC LIMIT 520"
    )))
    .bind(subscriber_id)
    .fetch_all(pool)
    .await
}

pub async fn ledger_for_week(
    pool: &PgPool,
    week: &str,
    state: Option<&str>,
    after_id: i64,
    limit: i64,
) -> sqlx::Result<Vec<LedgerRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {LEDGER_COLUMNS} FROM deliveries WHERE week = $1 AND ($2::text IS NULL OR state = $2) AND id > $3
         ORDER BY id LIMIT $4"
    )))
    .bind(week)
    .bind(state)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ImportError {
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ImportReport {
    /// New subscribers created.
    pub imported: u64,
    /// Rows whose address is already a subscriber (left as they are: an unsubscribed person is
    /// never re-subscribed by an import).
    pub existing: u64,
    /// Rows refused, by line number (the header is line 1).
    pub errors: Vec<ImportError>,
}

/// Imports `email,first_name,level` CSV (header required; `first_name` and `level` optional).
/// Good rows are kept even when others are bad.
pub async fn import_csv(pool: &PgPool, csv_text: &str) -> anyhow::Result<ImportReport> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(csv_text.as_bytes());
    let headers = reader.headers()?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(email_col) = column("email") else {
        anyhow::bail!("the CSV header must name an `email` column (optional: first_name, level)");
    };
    let (name_col, level_col) = (column("first_name"), column("level"));
    let mut report = ImportReport::default();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(err) => {
                let line = err.position().map(|p| p.line()).unwrap_or(0);
                report.errors.push(ImportError { line, message: err.to_string() });
                continue;
            }
        };
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let email = match EmailAddress::parse(record.get(email_col).unwrap_or("")) {
            Ok(e) => e,
            Err(err) => {
                report.errors.push(ImportError { line, message: format!("email: {err}") });
                continue;
            }
        };
        let level = match level_col.and_then(|c| record.get(c)).filter(|v| !v.is_empty()) {
            None => None,
            Some(raw) => match raw.parse::<i16>().ok().and_then(|v| Level::new(v).ok()) {
                Some(level) => Some(level.get()),
                None => {
                    report.errors.push(ImportError {
                        line,
                        message: format!("level: `{raw}` is not a level (1-{})", Level::MAX),
                    });
                    continue;
                }
            },
        };
        let first_name = name_col
            .and_then(|c| record.get(c))
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(200).collect::<String>());
        // The name goes into the email's greeting: one line.
        if first_name.as_deref().is_some_and(crate::domain::has_control_characters) {
            report.errors.push(ImportError {
                line,
                message: "first_name: must be one line, without control characters".to_owned(),
            });
            continue;
        }
        let inserted = sqlx::query(
            "INSERT INTO subscribers (email, first_name, level) VALUES ($1, $2, $3) ON CONFLICT ((lower(email))) DO NOTHING",
        )
        .bind(email.as_str())
        .bind(first_name)
        .bind(level)
        .execute(pool)
        .await?
        .rows_affected();
        if inserted == 1 { report.imported += 1 } else { report.existing += 1 }
    }
    Ok(report)
}
