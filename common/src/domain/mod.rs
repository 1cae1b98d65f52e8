//! Domain types. Parse, don't validate: once a value has one of these types it is valid.
//! Nothing here does I/O or imports another layer of ours.

mod customer;
mod email;
mod iso_week;
mod level;
pub mod placement;
mod ses_event;
pub mod states;
mod text;
pub mod tokens;

pub use customer::{ShopifyCustomer, gid};
pub use email::EmailAddress;
pub use iso_week::IsoWeek;
pub use level::Level;
pub use ses_event::SesEvent;
pub use states::{
    DeadLetterQueue, DeliveryKind, DeliveryState, LevelChangeReason, RunAction, RunStatus, SubscriberStatus,
    SuppressionReason, SyncMode, SyncStatus, TestSendState, WebhookSource, WritebackState,
};
pub use text::{has_control_characters, one_line};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("not a valid email address")]
    InvalidEmail,
    #[error("not an ISO week (expected YYYY-Www, e.g. 2026-W47)")]
    InvalidWeek,
    #[error("level must be between 1 and {max}", max = Level::MAX)]
    InvalidLevel,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

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
