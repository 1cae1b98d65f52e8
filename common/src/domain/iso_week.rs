use std::fmt;

use chrono::{Datelike, NaiveDate};
use serde::{Deserialize, Serialize};

use super::DomainError;

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

// Stored as `TEXT` (`weekly_runs.week`, `deliveries.week`, constrained by a `CHECK`), mapped the
// way `states.rs`'s `text_enum!` maps the state enums: a stored text that is not an ISO week fails
// to decode instead of travelling on as a string.
impl sqlx::Type<sqlx::Postgres> for IsoWeek {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::Type<sqlx::Postgres>>::type_info()
    }
    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
    }
}

impl sqlx::Encode<'_, sqlx::Postgres> for IsoWeek {
    fn encode_by_ref(
        &self,
        buf: &mut sqlx::postgres::PgArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<sqlx::Postgres>>::encode(self.to_string(), buf)
    }
}

impl sqlx::Decode<'_, sqlx::Postgres> for IsoWeek {
    fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
        Ok(Self::parse(text)?)
    }
}

impl sqlx::postgres::PgHasArrayType for IsoWeek {
    fn array_type_info() -> sqlx::postgres::PgTypeInfo {
        <&str as sqlx::postgres::PgHasArrayType>::array_type_info()
    }
}
