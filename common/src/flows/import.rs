//! The operator's CSV import of subscribers.

use serde::Serialize;
use sqlx::PgPool;

use super::FlowError;
use crate::{
    db::subscribers,
    domain::{EmailAddress, Level, has_control_characters},
};

fn invalid_body(message: String) -> FlowError {
    FlowError::Invalid { field: "body", message }
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
/// Good rows are kept even when others are bad; a file without a usable header is refused
/// ([`FlowError::Invalid`] on `body`) before anything is written.
pub async fn import_csv(pool: &PgPool, csv_text: &str) -> Result<ImportReport, FlowError> {
    if csv_text.contains('\0') {
        return Err(invalid_body("must not contain NUL characters".to_owned()));
    }
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(csv_text.as_bytes());
    let headers = reader.headers().map_err(|err| invalid_body(err.to_string()))?.clone();
    let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let Some(email_col) = column("email") else {
        return Err(invalid_body(
            "the CSV header must name an `email` column (optional: first_name, level)".to_owned(),
        ));
    };
    let (name_col, level_col) = (column("first_name"), column("level"));
    let mut report = ImportReport::default();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(err) => {
                let line = err.position().map(csv::Position::line).unwrap_or(0);
                report.errors.push(ImportError { line, message: err.to_string() });
                continue;
            }
        };
        let line = record.position().map(csv::Position::line).unwrap_or(0);
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
                Some(level) => Some(level),
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
        if first_name.as_deref().is_some_and(has_control_characters) {
            report.errors.push(ImportError {
                line,
                message: "first_name: must be one line, without control characters".to_owned(),
            });
            continue;
        }
        let inserted = subscribers::insert_if_new(pool, &email, first_name.as_deref(), level).await?;
        if inserted { report.imported += 1 } else { report.existing += 1 }
    }
    Ok(report)
}
