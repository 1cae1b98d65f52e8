//! SES bounces and complaints arriving through SNS: signatures (v1 SHA1withRSA, v2 SHA256withRSA)
//! verified against a certificate served locally, subscription confirmation, dedupe, suppression.

use levelup_tests::{
    TestEnv,
    fake_sns::{OUR_TOPIC, fake_sns, notification, sign},
    processes::spawn_api,
};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_bounces_and_complaints_suppress_and_tampered_ones_are_rejected() {
    let (base, confirms) = fake_sns();
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SNS_TRUSTED_CERT_PREFIXES", base.clone()).set("LEVELUP_SNS_TOPIC_ARNS", OUR_TOPIC);
    let pool = env.db.pool.clone();
    sqlx::query("INSERT INTO subscribers (email) VALUES ('ada@example.com'), ('bo@example.com'), ('cy@example.com')")
        .execute(&pool)
        .await
        .unwrap();
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let post = |message: Value| {
        client
            .post(api.url("/v1/webhooks/ses"))
            .header("content-type", "text/plain; charset=UTF-8")
            .body(message.to_string())
            .send()
    };
    let status = |email: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM subscribers WHERE email = $1")
                .bind(email)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };

    let subscription = sign(
        json!({
            "Type": "SubscriptionConfirmation", "MessageId": "sub-1", "Token": "tok",
            "TopicArn": "arn:aws:sns:us-east-1:123456789012:ses-events", "Message": "You have chosen to subscribe",
            "SubscribeURL": format!("{base}confirm?Token=tok"), "Timestamp": "2026-11-22T12:00:00.000Z",
            "SigningCertURL": format!("{base}cert.pem"),
        }),
        "1",
    );
    let confirmed = post(subscription).await.unwrap();
    assert_eq!(confirmed.status(), 200);
    assert_eq!(*confirms.lock().unwrap(), 1, "the SubscribeURL was visited");

    let bounce = json!({"notificationType": "Bounce", "mail": {"messageId": "ses-1"},
        "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{"emailAddress": "Ada@Example.com"}]}});
    // Tampered after signing: rejected, nothing changes.
    let mut tampered = sign(notification(&base, "n-1", bounce.clone()), "2");
    tampered["Message"] = json!(
        json!({"notificationType": "Complaint",
        "complaint": {"complainedRecipients": [{"emailAddress": "bo@example.com"}]}})
        .to_string()
    );
    assert_eq!(post(tampered).await.unwrap().status(), 401);
    assert_eq!(status("bo@example.com").await, "active");
    // A certificate from anywhere but SNS is refused.
    let mut elsewhere = notification(&base, "n-x", bounce.clone());
    elsewhere["SigningCertURL"] = json!("https://certs.example.com/cert.pem");
    assert_eq!(post(sign(elsewhere, "2")).await.unwrap().status(), 401);

    let accepted = post(sign(notification(&base, "n-1", bounce.clone()), "2")).await.unwrap();
    assert_eq!(accepted.status(), 200);
    assert_eq!(accepted.json::<Value>().await.unwrap()["outcome"], "suppressed");
    assert_eq!(status("ada@example.com").await, "bounced");
    let again = post(sign(notification(&base, "n-1", bounce), "2")).await.unwrap();
    assert_eq!(again.json::<Value>().await.unwrap()["outcome"], "duplicate");

    let complaint =
        json!({"eventType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "bo@example.com"}]}});
    assert_eq!(post(sign(notification(&base, "n-2", complaint), "1")).await.unwrap().status(), 200);
    assert_eq!(status("bo@example.com").await, "complained");

    let transient = json!({"notificationType": "Bounce",
        "bounce": {"bounceType": "Transient", "bouncedRecipients": [{"emailAddress": "cy@example.com"}]}});
    let ignored = post(sign(notification(&base, "n-3", transient), "2")).await.unwrap();
    assert_eq!(ignored.json::<Value>().await.unwrap()["outcome"], "ignored");
    assert_eq!(status("cy@example.com").await, "active", "a transient bounce does not suppress");

    let suppressed: Vec<(String, String)> =
        sqlx::query_as("SELECT email_lower, reason FROM suppressions ORDER BY 1").fetch_all(&pool).await.unwrap();
    assert_eq!(
        suppressed,
        vec![("ada@example.com".into(), "bounce".into()), ("bo@example.com".into(), "complaint".into())]
    );
    api.stop().await.unwrap();
}

/// A validly signed message proves it came from SNS, not from our topic: anyone can create a topic,
/// subscribe our endpoint and publish. Only the configured topics are heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_a_topic_not_ours_are_refused_and_never_visited() {
    let (base, confirms) = fake_sns();
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_SNS_TRUSTED_CERT_PREFIXES", base.clone())
        .set("LEVELUP_SNS_TOPIC_ARNS", format!("arn:aws:sns:eu-west-1:123456789012:other, {OUR_TOPIC}"));
    let pool = env.db.pool.clone();
    sqlx::query("INSERT INTO subscribers (email) VALUES ('ada@example.com')").execute(&pool).await.unwrap();
    let api = spawn_api(env.config());
    let client = reqwest::Client::new();
    let post = |message: Value| {
        client.post(api.url("/v1/webhooks/ses")).header("content-type", "text/plain").body(message.to_string()).send()
    };
    let attacker_topic = "arn:aws:sns:us-east-1:999999999999:attacker";

    let subscription = sign(
        json!({
            "Type": "SubscriptionConfirmation", "MessageId": "sub-evil", "Token": "tok",
            "TopicArn": attacker_topic, "Message": "You have chosen to subscribe",
            "SubscribeURL": format!("{base}confirm?Token=tok"), "Timestamp": "2026-11-22T12:00:00.000Z",
            "SigningCertURL": format!("{base}cert.pem"),
        }),
        "2",
    );
    let refused = post(subscription).await.unwrap();
    assert_eq!(refused.status(), 401);
    assert_eq!(refused.headers()["content-type"], "application/problem+json");
    assert_eq!(*confirms.lock().unwrap(), 0, "the SubscribeURL of a foreign topic is never visited");

    let complaint = json!({"notificationType": "Complaint", "complaint": {"complainedRecipients": [{"emailAddress": "ada@example.com"}]}});
    let mut foreign = notification(&base, "n-evil", complaint.clone());
    foreign["TopicArn"] = json!(attacker_topic);
    assert_eq!(post(sign(foreign, "2")).await.unwrap().status(), 401);
    let status: String = sqlx::query_scalar("SELECT status FROM subscribers WHERE email = 'ada@example.com'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(status, "active", "a complaint from a foreign topic suppresses nobody");
    let recorded: i64 = sqlx::query_scalar("SELECT count(*) FROM received_webhooks").fetch_one(&pool).await.unwrap();
    assert_eq!(recorded, 0);

    // The same complaint from our topic is applied.
    let ours = post(sign(notification(&base, "n-ours", complaint), "2")).await.unwrap();
    assert_eq!(ours.status(), 200);
    api.stop().await.unwrap();
}

#[tokio::test]
async fn without_configured_topics_the_ses_webhook_is_unavailable() {
    let env = TestEnv::new().await;
    let api = spawn_api(env.config());
    let response = reqwest::Client::new()
        .post(api.url("/v1/webhooks/ses"))
        .header("content-type", "text/plain")
        .body(json!({"Type": "Notification", "TopicArn": OUR_TOPIC}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "60");
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    api.stop().await.unwrap();
}
