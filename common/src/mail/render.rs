//! Rendering the weekly email: HTML and text parts with signed links, and the RFC 8058 one-click
//! unsubscribe headers that Gmail and Yahoo require of bulk senders.
//!
//! [`weekly_email`] is the one way to build it: the worker's sends, the operator's preview and
//! test sends all call it, so what an operator sees is what a subscriber gets.

use std::time::Duration;

use askama::Template;
use url::Url;

use super::{ListHeader, MailRef, OutgoingEmail};
use crate::{
    Config,
    domain::{
        one_line,
        tokens::{Purpose, TokenError, TokenSigner},
    },
};

/// How long an email's unsubscribe link works: long after the email was sent.
pub const UNSUBSCRIBE_LINK_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// The token in the links of an email that must not act for anyone (a sample subscriber's, a test
/// send's): the pages answer it with 401, like any invalid token.
pub const INERT_TOKEN: &str = "sample-link-not-valid";

/// The subject of a test send starts with this.
pub const TEST_SUBJECT_PREFIX: &str = "[TEST] ";

/// The sample subscriber of a preview or test send made without a real one.
pub const SAMPLE_FIRST_NAME: &str = "Ada";
pub const SAMPLE_ADDRESS: &str = "subscriber@example.com";

/// Who the email goes to and how it greets them.
pub struct Recipient<'a> {
    pub to: &'a str,
    pub first_name: Option<&'a str>,
}

/// The tokens an email's links carry.
pub enum LinkTokens {
    /// A subscriber's own signed tokens, as a run sends them.
    Signed { access: String, unsubscribe: String },
    /// [`INERT_TOKEN`]: links that open nothing.
    Inert,
}

impl LinkTokens {
    /// Subscriber `subscriber_id`'s tokens issued at `now` (unix seconds): access for
    /// `LEVELUP_TOKEN_TTL_SECS`, unsubscribe for [`UNSUBSCRIBE_LINK_LIFETIME`].
    pub fn signed(config: &Config, signer: &TokenSigner, subscriber_id: i64, now: i64) -> Result<Self, TokenError> {
        let access = signer.issue(subscriber_id, Purpose::Access, now + config.token_ttl.as_secs() as i64)?;
        let unsubscribe =
            signer.issue(subscriber_id, Purpose::Unsubscribe, now + UNSUBSCRIBE_LINK_LIFETIME.as_secs() as i64)?;
        Ok(Self::Signed { access, unsubscribe })
    }
}

/// The weekly email, with links under `LEVELUP_PUBLIC_BASE_URL` from `LEVELUP_MAIL_FROM`.
pub fn weekly_email(
    config: &Config,
    recipient: &Recipient<'_>,
    body: &EmailBody<'_>,
    tokens: &LinkTokens,
    reference: MailRef,
) -> OutgoingEmail {
    let (access, unsubscribe) = match tokens {
        LinkTokens::Signed { access, unsubscribe } => (access.as_str(), unsubscribe.as_str()),
        LinkTokens::Inert => (INERT_TOKEN, INERT_TOKEN),
    };
    let links = Links::new(&config.public_base_url, body, access, unsubscribe);
    render(&config.mail_from, recipient.to, recipient.first_name, body, &links, reference)
}

/// Marks `email` as an operator's test send, so nobody takes it for a delivery of a run:
/// [`TEST_SUBJECT_PREFIX`] before the subject and `X-LevelUp-Test: 1`.
pub fn mark_as_test(mut email: OutgoingEmail) -> OutgoingEmail {
    email.subject = [TEST_SUBJECT_PREFIX, &email.subject].concat();
    email.headers.push(ListHeader::Test);
    email
}

/// What the email is about.
pub enum EmailBody<'a> {
    Challenge { challenge_id: i64, level: i16, title: &'a str, body: &'a str },
    QuestionnaireInvite,
}

impl<'a> EmailBody<'a> {
    /// A challenge's email for a subscriber at `subscriber_level`: the email names the
    /// subscriber's level, as a run's does (their challenges are of their level); a subscriber
    /// without one (and the sample subscriber) sees the challenge's.
    pub fn challenge(
        challenge_id: i64,
        challenge_level: i16,
        subscriber_level: Option<i16>,
        title: &'a str,
        body: &'a str,
    ) -> Self {
        Self::Challenge { challenge_id, level: subscriber_level.unwrap_or(challenge_level), title, body }
    }
}

/// Links carried by the email, already signed.
pub struct Links {
    pub primary: Url,
    pub progress: Url,
    pub unsubscribe: Url,
}

impl Links {
    /// Builds the subscriber's links under `base`: `access_token` opens pages, `unsubscribe_token`
    /// unsubscribes.
    pub fn new(base: &Url, body: &EmailBody<'_>, access_token: &str, unsubscribe_token: &str) -> Self {
        let with_token = |path: &str, token: &str| {
            let mut url = base.join(path).expect("static path joins");
            url.query_pairs_mut().append_pair("token", token);
            url
        };
        let primary = match body {
            EmailBody::Challenge { challenge_id, .. } => with_token(&format!("challenge/{challenge_id}"), access_token),
            EmailBody::QuestionnaireInvite => with_token("questionnaire", access_token),
        };
        Self {
            primary,
            progress: with_token("level", access_token),
            unsubscribe: with_token("unsubscribe", unsubscribe_token),
        }
    }
}

/// The frame every email shares: subject, greeting and links.
struct Frame<'a> {
    subject: &'a str,
    /// The greeting's name, on one line; `None` greets without one.
    first_name: Option<&'a str>,
    links: &'a Links,
}

struct Challenge<'a> {
    level: i16,
    /// On one line: it is also the subject.
    title: String,
    body: &'a str,
}

impl Challenge<'_> {
    /// The text part's `===` under the title.
    fn underline(&self) -> String {
        "=".repeat(self.title.chars().count())
    }
}

// One template per part and kind under `common/templates/mail/`: `.html` ones escape every value,
// `.txt` ones (the text part and the subject) write values as they are. askama drops a template
// file's last line break, so the layouts end with an empty line: each part ends with one.
// Rendering only fails if a value's `Display` does, and ours (text, numbers, URLs) never do, so
// the parts are rendered with `to_string`.

#[derive(Template)]
#[template(path = "mail/challenge_subject.txt")]
struct ChallengeSubject<'a> {
    title: &'a str,
}

#[derive(Template)]
#[template(path = "mail/challenge.txt")]
struct ChallengeText<'a> {
    mail: &'a Frame<'a>,
    challenge: &'a Challenge<'a>,
}

#[derive(Template)]
#[template(path = "mail/challenge.html")]
struct ChallengeHtml<'a> {
    mail: &'a Frame<'a>,
    challenge: &'a Challenge<'a>,
}

#[derive(Template)]
#[template(path = "mail/questionnaire_invite_subject.txt")]
struct QuestionnaireInviteSubject;

#[derive(Template)]
#[template(path = "mail/questionnaire_invite.txt")]
struct QuestionnaireInviteText<'a> {
    mail: &'a Frame<'a>,
}

#[derive(Template)]
#[template(path = "mail/questionnaire_invite.html")]
struct QuestionnaireInviteHtml<'a> {
    mail: &'a Frame<'a>,
}

pub fn render(
    from: &str,
    to: &str,
    first_name: Option<&str>,
    body: &EmailBody<'_>,
    links: &Links,
    reference: MailRef,
) -> OutgoingEmail {
    let first_name = first_name.map(one_line);
    let first_name = first_name.as_deref().map(str::trim).filter(|n| !n.is_empty());
    let (subject, text, html) = match body {
        EmailBody::Challenge { level, title, body, .. } => {
            let challenge = Challenge { level: *level, title: one_line(title), body };
            let subject = ChallengeSubject { title: &challenge.title }.to_string();
            let mail = Frame { subject: &subject, first_name, links };
            let text = ChallengeText { mail: &mail, challenge: &challenge }.to_string();
            let html = ChallengeHtml { mail: &mail, challenge: &challenge }.to_string();
            (subject, text, html)
        }
        EmailBody::QuestionnaireInvite => {
            let subject = QuestionnaireInviteSubject.to_string();
            let mail = Frame { subject: &subject, first_name, links };
            let text = QuestionnaireInviteText { mail: &mail }.to_string();
            let html = QuestionnaireInviteHtml { mail: &mail }.to_string();
            (subject, text, html)
        }
    };
    OutgoingEmail {
        from: from.to_owned(),
        to: to.to_owned(),
        subject,
        text,
        html,
        headers: vec![ListHeader::Unsubscribe(links.unsubscribe.clone()), ListHeader::UnsubscribePost],
        reference,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_email_has_both_parts_links_and_one_click_headers() {
        let base = Url::parse("https://levelup.example/").unwrap();
        let body = EmailBody::Challenge { challenge_id: 9, level: 2, title: "Tags <b>", body: "Do & done" };
        let links = Links::new(&base, &body, "ACCESS", "UNSUB");
        let email =
            render("LevelUp <a@levelup.example>", "x@y.example", Some("Ada"), &body, &links, MailRef::Delivery(5));
        assert!(email.text.contains("https://levelup.example/challenge/9?token=ACCESS"));
        assert!(email.html.contains("Tags &#60;b&#62;") && email.html.contains("Do &#38; done"));
        assert!(email.html.contains("https://levelup.example/unsubscribe?token=UNSUB"));
        assert_eq!(email.headers[0].name(), "List-Unsubscribe");
        assert_eq!(email.headers[0].value(), "<https://levelup.example/unsubscribe?token=UNSUB>");
        assert_eq!(email.headers[1].name(), "List-Unsubscribe-Post");
        assert_eq!(email.headers[1].value(), "List-Unsubscribe=One-Click");
        // Snapshots compare without trailing line breaks; both parts end with one.
        assert!(email.text.ends_with("?token=UNSUB\n") && email.html.ends_with("</body></html>\n"));
    }

    #[test]
    fn line_breaks_in_names_and_titles_stay_on_their_line() {
        let base = Url::parse("https://levelup.example/").unwrap();
        let body = EmailBody::Challenge { challenge_id: 9, level: 2, title: "X\r\nBcc: t@evil.example", body: "b" };
        let links = Links::new(&base, &body, "A", "U");
        let email =
            render("a@levelup.example", "x@y.example", Some("Ada\r\nP.S. click"), &body, &links, MailRef::Delivery(5));
        assert_eq!(email.subject, "Your weekly challenge: X  Bcc: t@evil.example");
        assert!(email.text.starts_with("Hi Ada  P.S. click,\n"), "{}", email.text);
    }

    #[test]
    fn a_test_send_is_the_weekly_email_marked_with_inert_links() {
        let config = crate::Config::from_lookup(|name| {
            (name == "LEVELUP_PUBLIC_BASE_URL").then(|| "https://levelup.example/app/".to_owned())
        })
        .unwrap();
        let body = EmailBody::challenge(7, 1, Some(2), "FizzBuzz", "Print 1 to 100.");
        let recipient = Recipient { to: "ops@example.com", first_name: Some("Ada") };
        let weekly = weekly_email(&config, &recipient, &body, &LinkTokens::Inert, MailRef::TestSend(3));
        let test = mark_as_test(weekly.clone());
        assert_eq!(test.subject, "[TEST] Your weekly challenge: FizzBuzz");
        assert_eq!((test.text.as_str(), test.html.as_str()), (weekly.text.as_str(), weekly.html.as_str()));
        assert!(test.text.contains("this week's level 2 challenge"), "the subscriber's level: {}", test.text);
        assert!(test.text.contains("https://levelup.example/app/unsubscribe?token=sample-link-not-valid"));
        let headers: Vec<(&str, String)> = test.headers.iter().map(|h| (h.name(), h.value())).collect();
        assert!(headers.contains(&("X-LevelUp-Test", "1".to_owned())), "{headers:?}");
        assert_eq!(weekly.headers.len() + 1, test.headers.len());
    }

    // Snapshots of every email, from fixed data. `hostile` values show the escaping: markup and
    // quotes are escaped in the HTML part, kept as written in the text part, and line breaks never
    // reach a header.
    const HOSTILE_TITLE: &str = "<script>alert(\"x\")</script> & 'quotes'\r\nBcc: t@evil.example";
    const HOSTILE_NAME: &str = "Ada \"<b>\" O'Neil\r\nP.S. click";

    fn snapshot(name: &str, email: &OutgoingEmail) {
        let headers: Vec<(String, String)> = email.headers.iter().map(|h| (h.name().to_owned(), h.value())).collect();
        insta::assert_debug_snapshot!(format!("{name}_headers"), (&email.from, &email.to, &email.subject, &headers));
        insta::assert_snapshot!(format!("{name}_text"), email.text);
        insta::assert_snapshot!(format!("{name}_html"), email.html);
    }

    fn email(first_name: Option<&str>, body: &EmailBody<'_>) -> OutgoingEmail {
        let base = Url::parse("https://levelup.example/app/").unwrap();
        let links = Links::new(&base, body, "v1.k1.ACCESS.mac", "v1.k1.UNSUB.mac");
        render(
            "LevelUp <challenges@levelup.example>",
            "ada@example.com",
            first_name,
            body,
            &links,
            MailRef::Delivery(42),
        )
    }

    #[test]
    fn challenge_email() {
        let body = EmailBody::Challenge {
            challenge_id: 7,
            level: 2,
            title: "FizzBuzz, but lazy",
            body: "Print the numbers 1 to 100.\nMultiples of 3: Fizz.",
        };
        snapshot("challenge", &email(Some("Ada"), &body));
    }

    #[test]
    fn challenge_email_with_hostile_values() {
        let body = EmailBody::Challenge {
            challenge_id: 7,
            level: 2,
            title: HOSTILE_TITLE,
            body: "<img src=x onerror=alert(1)> \"quoted\" & 'single'",
        };
        snapshot("challenge_hostile", &email(Some(HOSTILE_NAME), &body));
    }

    #[test]
    fn questionnaire_invite_email() {
        snapshot("questionnaire_invite", &email(None, &EmailBody::QuestionnaireInvite));
    }

    #[test]
    fn questionnaire_invite_email_with_hostile_name() {
        snapshot("questionnaire_invite_hostile", &email(Some(HOSTILE_NAME), &EmailBody::QuestionnaireInvite));
    }
}
