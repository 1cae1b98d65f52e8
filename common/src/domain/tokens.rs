//! Signed, expiring subscriber tokens for the links in emails.
//!
//! Format: `v1.<kid>.<payload>.<signature>` where payload is base64url(`<subscriber id>.<purpose>.<expires unix>`)
//! and signature is base64url(HMAC-SHA256(key[kid], "v1.<kid>.<payload>")). The key id makes key
//! rotation possible: sign with the newest key, verify with any configured one.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Open and submit challenges, see level and progress, take the questionnaire.
    Access,
    /// Unsubscribe (also used by the one-click `List-Unsubscribe` URL).
    Unsubscribe,
}

impl Purpose {
    fn as_str(self) -> &'static str {
        match self {
            Purpose::Access => "access",
            Purpose::Unsubscribe => "unsub",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the link token is malformed")]
    Malformed,
    #[error("the link token's signature is invalid")]
    BadSignature,
    #[error("the link token has expired")]
    Expired,
    #[error("the link token is not valid for this action")]
    WrongPurpose,
    #[error("no signing key is configured (LEVELUP_TOKEN_KEYS)")]
    NoKey,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub subscriber_id: i64,
    pub purpose: Purpose,
    pub expires_at: i64,
}

#[derive(Clone)]
pub struct TokenSigner {
    keys: Vec<(String, SecretString)>,
}

impl TokenSigner {
    pub fn new(keys: Vec<(String, SecretString)>) -> Self {
        Self { keys }
    }

    fn mac(key: &SecretString, signed: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()).expect("HMAC takes any key length");
        mac.update(signed.as_bytes());
        mac
    }

    pub fn issue(&self, subscriber_id: i64, purpose: Purpose, expires_at: i64) -> Result<String, TokenError> {
        let (kid, key) = self.keys.first().ok_or(TokenError::NoKey)?;
        let payload = URL_SAFE_NO_PAD.encode(format!("{subscriber_id}.{}.{expires_at}", purpose.as_str()));
        let signed = format!("v1.{kid}.{payload}");
        let signature = URL_SAFE_NO_PAD.encode(Self::mac(key, &signed).finalize().into_bytes());
        Ok(format!("{signed}.{signature}"))
    }

    /// Checks signature, expiry (against `now`, unix seconds) and purpose.
    pub fn verify(&self, token: &str, purpose: Purpose, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some("v1"), Some(kid), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let (_, key) = self.keys.iter().find(|(k, _)| k == kid).ok_or(TokenError::BadSignature)?;
        let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
        Self::mac(key, &format!("v1.{kid}.{payload}"))
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?)
            .map_err(|_| TokenError::Malformed)?;
        let mut fields = payload.split('.');
        let (Some(id), Some(token_purpose), Some(expires), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(TokenError::Malformed);
        };
        let subscriber_id = id.parse().map_err(|_| TokenError::Malformed)?;
        let expires_at: i64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        if token_purpose != purpose.as_str() {
            return Err(TokenError::WrongPurpose);
        }
        if expires_at <= now {
            return Err(TokenError::Expired);
        }
        Ok(Claims { subscriber_id, purpose, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(keys: &[(&str, &str)]) -> TokenSigner {
        TokenSigner::new(keys.iter().map(|(k, s)| (k.to_string(), SecretString::from(s.to_string()))).collect())
    }

    const KEY1: (&str, &str) = ("k1", "0123456789abcdef0123456789abcdef");
    const KEY2: (&str, &str) = ("k2", "fedcba9876543210fedcba9876543210");

    #[test]
    fn round_trip_and_rejections() {
        let s = signer(&[KEY1]);
        let token = s.issue(42, Purpose::Access, 1_000).unwrap();
        assert_eq!(s.verify(&token, Purpose::Access, 999).unwrap().subscriber_id, 42);
        assert_eq!(s.verify(&token, Purpose::Access, 1_000), Err(TokenError::Expired));
        assert_eq!(s.verify(&token, Purpose::Unsubscribe, 0), Err(TokenError::WrongPurpose));
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 3.., "AAA");
        assert_eq!(s.verify(&forged, Purpose::Access, 0), Err(TokenError::BadSignature));
        // Another subscriber's payload with this signature.
        let other = s.issue(43, Purpose::Access, 1_000).unwrap();
        let spliced = format!("{}.{}", other.rsplit_once('.').unwrap().0, token.rsplit_once('.').unwrap().1);
        assert_eq!(s.verify(&spliced, Purpose::Access, 0), Err(TokenError::BadSignature));
        assert_eq!(s.verify("garbage", Purpose::Access, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn rotation_verifies_old_keys() {
        let old = signer(&[KEY1]);
        let token = old.issue(7, Purpose::Unsubscribe, 100).unwrap();
        let rotated = signer(&[KEY2, KEY1]);
        assert!(rotated.verify(&token, Purpose::Unsubscribe, 0).is_ok());
        assert!(rotated.issue(7, Purpose::Access, 100).unwrap().starts_with("v1.k2."));
        assert_eq!(signer(&[KEY2]).verify(&token, Purpose::Unsubscribe, 0), Err(TokenError::BadSignature));
    }
}
