//! Rendering the weekly email: HTML and text parts with signed links, and the RFC 8058 one-click
//! unsubscribe headers that Gmail and Yahoo require of bulk senders.

use askama::Template;
use url::Url;

use super::{ListHeader, OutgoingEmail};
use crate::domain::one_line;

/// What the email is about.
pub enum EmailBody<'a> {
    Challenge { challenge_id: i64, level: i16, title: &'a str, body: &'a str },
    QuestionnaireInvite,
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
    delivery_id: i64,
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
        delivery_id,
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
        let email = render("LevelUp <a@levelup.example>", "x@y.example", Some("Ada"), &body, &links, 5);
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
        let email = render("a@levelup.example", "x@y.example", Some("Ada\r\nP.S. click"), &body, &links, 5);
        assert_eq!(email.subject, "Your weekly challenge: X  Bcc: t@evil.example");
        assert!(email.text.starts_with("Hi Ada  P.S. click,\n"), "{}", email.text);
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
        render("LevelUp <challenges@levelup.example>", "ada@example.com", first_name, body, &links, 42)
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
