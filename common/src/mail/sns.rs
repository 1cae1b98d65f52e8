//! Amazon SNS messages carrying SES bounce and complaint notifications: signature verification
//! (SignatureVersion 1 = SHA1withRSA, 2 = SHA256withRSA), signing-certificate URL checks and a
//! certificate cache, and the effect of a notification on subscribers (suppression).
//!
//! A signing certificate is fetched only from `https://sns.<region>.amazonaws.com/…` (or a prefix
//! configured for local fakes), and cached by URL.

use std::{collections::HashMap, sync::Arc, time::Duration};

use crate::domain::{SesEvent, SubscriberStatus, SuppressionReason};
use base64::{Engine, engine::general_purpose::STANDARD};
use rsa::{RsaPublicKey, pkcs1v15::VerifyingKey, pkcs8::DecodePublicKey, signature::Verifier};
use serde_json::Value;
use x509_cert::{Certificate, der::DecodePem, der::Encode};

#[derive(Debug, thiserror::Error)]
pub enum SnsError {
    #[error("not an SNS message: {0}")]
    Malformed(String),
    #[error("signing certificate URL is not trusted: {0}")]
    UntrustedCertUrl(String),
    #[error("could not fetch the signing certificate: {0}")]
    CertFetch(String),
    #[error("signature does not verify")]
    BadSignature,
}

/// Verifies SNS signatures, caching signing certificates.
#[derive(Clone)]
pub struct SnsVerifier {
    http: reqwest::Client,
    trusted_prefixes: Vec<String>,
    cache: Arc<tokio::sync::Mutex<HashMap<String, RsaPublicKey>>>,
}

fn field<'a>(message: &'a Value, name: &str) -> Result<&'a str, SnsError> {
    message.get(name).and_then(Value::as_str).ok_or_else(|| SnsError::Malformed(format!("missing {name}")))
}

/// The canonical string SNS signs, per message type.
pub fn string_to_sign(message: &Value) -> Result<String, SnsError> {
    let kind = field(message, "Type")?;
    let names: &[&str] = match kind {
        "Notification" => &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"],
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
            &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
        }
        other => return Err(SnsError::Malformed(format!("unknown Type {other}"))),
    };
    let mut out = String::new();
    for name in names {
        match message.get(*name).and_then(Value::as_str) {
            Some(value) => {
                out.push_str(name);
                out.push('\n');
                out.push_str(value);
                out.push('\n');
            }
            // Subject is optional in notifications; everything else is required.
            None if *name == "Subject" => {}
            None => return Err(SnsError::Malformed(format!("missing {name}"))),
        }
    }
    Ok(out)
}

impl SnsVerifier {
    pub fn new(extra_trusted_prefixes: Vec<String>) -> Self {
        Self {
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().expect("HTTP client"),
            trusted_prefixes: extra_trusted_prefixes,
            cache: Arc::default(),
        }
    }

    /// `https://sns.<region>.amazonaws.com[.cn]/…`, or a configured prefix.
    pub fn is_trusted_url(&self, raw: &str) -> bool {
        if self.trusted_prefixes.iter().any(|p| !p.is_empty() && raw.starts_with(p.as_str())) {
            return true;
        }
        let Ok(url) = url::Url::parse(raw) else { return false };
        let host = url.host_str().unwrap_or("");
        let region_host = host
            .strip_prefix("sns.")
            .and_then(|rest| rest.strip_suffix(".amazonaws.com").or_else(|| rest.strip_suffix(".amazonaws.com.cn")));
        url.scheme() == "https"
            && url.port().is_none()
            && region_host.is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
    }

    async fn public_key(&self, cert_url: &str) -> Result<RsaPublicKey, SnsError> {
        if let Some(key) = self.cache.lock().await.get(cert_url) {
            return Ok(key.clone());
        }
        let pem = self
            .http
            .get(cert_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| SnsError::CertFetch(e.to_string()))?
            .text()
            .await
            .map_err(|e| SnsError::CertFetch(e.to_string()))?;
        let cert = Certificate::from_pem(pem.as_bytes())
            .map_err(|e| SnsError::CertFetch(format!("not a PEM certificate: {e}")))?;
        let spki =
            cert.tbs_certificate.subject_public_key_info.to_der().map_err(|e| SnsError::CertFetch(e.to_string()))?;
        let key = RsaPublicKey::from_public_key_der(&spki)
            .map_err(|e| SnsError::CertFetch(format!("not an RSA key: {e}")))?;
        self.cache.lock().await.insert(cert_url.to_owned(), key.clone());
        Ok(key)
    }

    /// Checks the message's signature against its (trusted) signing certificate.
    pub async fn verify(&self, message: &Value) -> Result<(), SnsError> {
        let cert_url = field(message, "SigningCertURL")?;
        if !self.is_trusted_url(cert_url) {
            return Err(SnsError::UntrustedCertUrl(cert_url.to_owned()));
        }
        let signature = STANDARD.decode(field(message, "Signature")?).map_err(|_| SnsError::BadSignature)?;
        let signature = rsa::pkcs1v15::Signature::try_from(signature.as_slice()).map_err(|_| SnsError::BadSignature)?;
        let signed = string_to_sign(message)?;
        let key = self.public_key(cert_url).await?;
        let verified = match field(message, "SignatureVersion")? {
            "1" => VerifyingKey::<sha1::Sha1>::new(key).verify(signed.as_bytes(), &signature),
            "2" => VerifyingKey::<sha2::Sha256>::new(key).verify(signed.as_bytes(), &signature),
            other => return Err(SnsError::Malformed(format!("unknown SignatureVersion {other}"))),
        };
        verified.map_err(|_| SnsError::BadSignature)
    }

    /// Confirms a subscription by visiting its (trusted) SubscribeURL.
    pub async fn confirm_subscription(&self, message: &Value) -> Result<(), SnsError> {
        let url = field(message, "SubscribeURL")?;
        if !self.is_trusted_url(url) {
            return Err(SnsError::UntrustedCertUrl(url.to_owned()));
        }
        self.http
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| SnsError::CertFetch(format!("confirming the subscription: {e}")))?;
        Ok(())
    }
}

/// Reads an SES notification (the `Message` of an SNS `Notification`).
pub fn parse_ses_event(ses_message: &Value) -> SesEvent {
    {
        let kind = ses_message
            .get("notificationType")
            .or_else(|| ses_message.get("eventType"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let (effect, recipients) = match kind {
            "Bounce" if ses_message.pointer("/bounce/bounceType").and_then(Value::as_str) == Some("Permanent") => (
                Some((SuppressionReason::Bounce, SubscriberStatus::Bounced)),
                addresses(ses_message.pointer("/bounce/bouncedRecipients")),
            ),
            "Complaint" => (
                Some((SuppressionReason::Complaint, SubscriberStatus::Complained)),
                addresses(ses_message.pointer("/complaint/complainedRecipients")),
            ),
            _ => (None, Vec::new()),
        };
        SesEvent {
            kind: kind.to_owned(),
            effect,
            recipients,
            ses_message_id: ses_message.pointer("/mail/messageId").and_then(Value::as_str).map(str::to_owned),
        }
    }
}

fn addresses(list: Option<&Value>) -> Vec<String> {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("emailAddress").and_then(Value::as_str))
                .map(|e| e.trim().to_lowercase())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sns_hosts_are_trusted() {
        let v = SnsVerifier::new(vec![]);
        assert!(v.is_trusted_url("https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem"));
        assert!(v.is_trusted_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem"));
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
            "https://evil.com/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns..amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
        ] {
            assert!(!v.is_trusted_url(bad), "{bad}");
        }
        assert!(SnsVerifier::new(vec!["http://127.0.0.1:9/".into()]).is_trusted_url("http://127.0.0.1:9/cert.pem"));
    }

    #[test]
    fn string_to_sign_follows_the_documented_field_order() {
        let m = serde_json::json!({"Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": "hi", "Timestamp": "ts"});
        assert_eq!(
            string_to_sign(&m).unwrap(),
            "Message\nhi\nMessageId\nm\nTimestamp\nts\nTopicArn\nt\nType\nNotification\n"
        );
    }
}
