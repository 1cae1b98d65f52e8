//! Domain types. Parse, don't validate: once a value has one of these types it is valid.

use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("not a valid email address")]
    InvalidEmail,
    #[error("not an ISO week (expected YYYY-Www, e.g. 2026-W47)")]
    InvalidWeek,
    #[error("level must be between 1 and {max}", max = Level::MAX)]
    InvalidLevel,
}

/// A syntactically plausible email address, trimmed. Case is kept for display; uniqueness and
/// suppression use the lower-cased form.
/// Whether `text` has a control character (CR, LF, tab, NUL, …): such text cannot be a one-line
/// value (a name, a title), which may end up in a mail header.
pub fn has_control_characters(text: &str) -> bool {
    text.chars().any(char::is_control)
}

/// `text` with every control character replaced by a space, so it can never start a new line in
/// a mail header or a greeting, whatever reached the database.
pub fn one_line(text: &str) -> String {
    text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let email = raw.trim();
        let (local, domain) = email.split_once('@').ok_or(DomainError::InvalidEmail)?;
        let valid = !local.is_empty()
            && local.len() <= 64
            && email.len() <= 320
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"'));
        if valid { Ok(Self(email.to_owned())) } else { Err(DomainError::InvalidEmail) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn lowercase(&self) -> String {
        self.0.to_lowercase()
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> Self {
        value.0
    }
}

/// An ISO 8601 week, e.g. `2026-W47`: the unit of the weekly run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IsoWeek {
    year: i32,
    week: u32,
}

impl IsoWeek {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let (year, week) = raw.trim().split_once("-W").ok_or(DomainError::InvalidWeek)?;
        if year.len() != 4 || week.len() != 2 {
            return Err(DomainError::InvalidWeek);
        }
        let year: i32 = year.parse().map_err(|_| DomainError::InvalidWeek)?;
        let week: u32 = week.parse().map_err(|_| DomainError::InvalidWeek)?;
        NaiveDate::from_isoywd_opt(year, week, chrono::Weekday::Mon).ok_or(DomainError::InvalidWeek)?;
        Ok(Self { year, week })
    }

    pub fn containing(date: NaiveDate) -> Self {
        let iso = date.iso_week();
        Self { year: iso.year(), week: iso.week() }
    }

    pub fn monday(&self) -> NaiveDate {
        NaiveDate::from_isoywd_opt(self.year, self.week, chrono::Weekday::Mon).expect("validated on construction")
    }
}

impl fmt::Display for IsoWeek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-W{:02}", self.year, self.week)
    }
}

impl TryFrom<String> for IsoWeek {
    type Error = DomainError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<IsoWeek> for String {
    fn from(value: IsoWeek) -> Self {
        value.to_string()
    }
}

/// A skill level, 1 (beginner) up to [`Level::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i16", into = "i16")]
pub struct Level(i16);

impl Level {
    pub const MAX: i16 = 100;

    pub fn new(value: i16) -> Result<Self, DomainError> {
        if (1..=Self::MAX).contains(&value) { Ok(Self(value)) } else { Err(DomainError::InvalidLevel) }
    }

    pub fn get(self) -> i16 {
        self.0
    }
}

impl TryFrom<i16> for Level {
    type Error = DomainError;
    fn try_from(value: i16) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Level> for i16 {
    fn from(value: Level) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(EmailAddress::parse("  Ada@Example.com ").unwrap().as_str(), "Ada@Example.com");
        assert_eq!(EmailAddress::parse("Ada@Example.com").unwrap().lowercase(), "ada@example.com");
        for bad in ["", "ada", "@example.com", "ada@", "ada@localhost", "a b@example.com", "ada@ex..com", "<a>@x.com"] {
            assert_eq!(EmailAddress::parse(bad), Err(DomainError::InvalidEmail), "{bad}");
        }
    }

    #[test]
    fn iso_weeks() {
        let week = IsoWeek::parse("2026-W47").unwrap();
        assert_eq!(week.to_string(), "2026-W47");
        assert_eq!(week.monday(), NaiveDate::from_ymd_opt(2026, 11, 16).unwrap());
        // 2027-01-01 is a Friday in ISO week 2026-W53.
        assert_eq!(IsoWeek::containing(NaiveDate::from_ymd_opt(2027, 1, 1).unwrap()).to_string(), "2026-W53");
        for bad in ["2026-47", "2026-W00", "2025-W53", "26-W01", "2026-W1", "x"] {
            assert!(IsoWeek::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn levels() {
        assert!(Level::new(0).is_err());
        assert!(Level::new(101).is_err());
        assert_eq!(Level::new(3).unwrap().get(), 3);
    }
}
