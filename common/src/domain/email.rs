use serde::{Deserialize, Serialize};

use super::DomainError;

/// A syntactically plausible email address, trimmed. Case is kept for display; uniqueness and
/// suppression use the lower-cased form.
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
