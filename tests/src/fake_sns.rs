//! A stand-in for SNS's side of SES notifications: the signing certificate and a SubscribeURL
//! served locally, and messages signed per the SNS documentation (written out here independently
//! of the code under test). Point `LEVELUP_SNS_TRUSTED_CERT_PREFIXES` at [`fake_sns`]'s base URL
//! and `LEVELUP_SNS_TOPIC_ARNS` at [`OUR_TOPIC`].

use std::sync::{Arc, Mutex};

use base64::{Engine, engine::general_purpose::STANDARD};
use poem::{EndpointExt, Route, Server, get, handler, listener::TcpAcceptor, web::Data};
use rsa::{
    RsaPrivateKey,
    pkcs1v15::SigningKey,
    pkcs8::DecodePrivateKey,
    signature::{SignatureEncoding, Signer},
};
use serde_json::{Value, json};

const KEY: &str = include_str!("../fixtures/sns-test-key.pem");
const CERT: &str = include_str!("../fixtures/sns-test-cert.pem");
pub const OUR_TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-events";

#[handler]
fn cert() -> &'static str {
    CERT
}

#[handler]
fn confirm(Data(hits): Data<&Arc<Mutex<u32>>>) -> &'static str {
    *hits.lock().unwrap() += 1;
    "<ConfirmSubscriptionResponse/>"
}

/// Serves the signing certificate and a SubscribeURL; returns the base URL and the confirm hit counter.
pub fn fake_sns() -> (String, Arc<Mutex<u32>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}/", listener.local_addr().unwrap());
    let hits = Arc::new(Mutex::new(0));
    let app = Route::new().at("/cert.pem", get(cert)).at("/confirm", get(confirm)).data(hits.clone());
    let acceptor = TcpAcceptor::from_std(listener).unwrap();
    tokio::spawn(async move {
        let _ = Server::new_with_acceptor(acceptor).run(app).await;
    });
    (base, hits)
}

/// Signs per the SNS documentation, written out here independently of the code under test.
pub fn sign(mut message: Value, version: &str) -> Value {
    let get = |name: &str| message.get(name).and_then(Value::as_str).map(str::to_owned);
    let names: &[&str] = if get("Type").as_deref() == Some("Notification") {
        &["Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"]
    } else {
        &["Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"]
    };
    let canonical: String = names.iter().filter_map(|n| get(n).map(|v| format!("{n}\n{v}\n"))).collect();
    let key = RsaPrivateKey::from_pkcs8_pem(KEY).unwrap();
    let signature = match version {
        "1" => SigningKey::<sha1::Sha1>::new(key).sign(canonical.as_bytes()).to_vec(),
        _ => SigningKey::<sha2::Sha256>::new(key).sign(canonical.as_bytes()).to_vec(),
    };
    message["SignatureVersion"] = json!(version);
    message["Signature"] = json!(STANDARD.encode(signature));
    message
}

pub fn notification(base: &str, id: &str, inner: Value) -> Value {
    json!({
        "Type": "Notification", "MessageId": id, "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events",
        "Message": inner.to_string(), "Timestamp": "2026-11-22T12:00:00.000Z",
        "SigningCertURL": format!("{base}cert.pem"),
    })
}

/// A permanent bounce of the SES message `ses_message_id` to `recipient`, as SNS delivers it
/// (signed, SNS message id `sns_id`), ready to post to `/v1/webhooks/ses`.
pub fn permanent_bounce(base: &str, sns_id: &str, ses_message_id: &str, recipient: &str) -> Value {
    let bounce = json!({"notificationType": "Bounce", "mail": {"messageId": ses_message_id},
        "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": recipient}]}});
    sign(notification(base, sns_id, bounce), "2")
}
