use serde::{Deserialize, Serialize};

use super::DomainError;

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
