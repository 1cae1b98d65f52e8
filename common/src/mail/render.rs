//! Rendering the weekly email: HTML and text parts with signed links, and the RFC 8058 one-click
//! unsubscribe headers that Gmail and Yahoo require of bulk senders.

use url::Url;

use super::OutgoingEmail;
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

pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

pub fn render(
    from: &str,
    to: &str,
    first_name: Option<&str>,
    body: &EmailBody<'_>,
    links: &Links,
    delivery_id: i64,
) -> OutgoingEmail {
    let greeting = match first_name.map(one_line).as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) => format!("Hi {name},"),
        None => "Hi,".to_owned(),
    };
    let (subject, intro, heading, detail, action) = match body {
        EmailBody::Challenge { level, title, body, .. } => (
            format!("Your weekly challenge: {}", one_line(title)),
            format!("Here is this week's level {level} challenge."),
            one_line(title),
            body.to_string(),
            "Open the challenge and submit your answer",
        ),
        EmailBody::QuestionnaireInvite => (
            "Find your level: a 2-minute questionnaire".to_owned(),
            "Before your first challenge we need to know where to start.".to_owned(),
            "Placement questionnaire".to_owned(),
            "Answer a few questions and we will match every weekly challenge to your level.".to_owned(),
            "Take the questionnaire",
        ),
    };
    let text = format!(
        "{greeting}\n\n{intro}\n\n{heading}\n{underline}\n\n{detail}\n\n{action}:\n{primary}\n\n\
         Your level and progress: {progress}\n\n--\nYou get this email because you subscribed to the LevelUp weekly challenge.\n\
         Unsubscribe: {unsubscribe}\n",
        underline = "=".repeat(heading.chars().count()),
        primary = links.primary,
        progress = links.progress,
        unsubscribe = links.unsubscribe,
    );
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{subject}</title></head>\n\
         <body style=\"font-family: system-ui, sans-serif; max-width: 36rem; margin: auto; padding: 1rem; line-height: 1.5\">\n\
         <p>{greeting}</p>\n<p>{intro}</p>\n<h1 style=\"font-size: 1.4rem\">{heading}</h1>\n<p>{detail}</p>\n\
         <p><a href=\"{primary}\" style=\"display: inline-block; padding: .6rem 1rem; background: #1d4ed8; color: #fff; \
         text-decoration: none; border-radius: .3rem\">{action}</a></p>\n\
         <p><a href=\"{progress}\">Your level and progress</a></p>\n\
         <hr><p style=\"font-size: .85rem; color: #555\">You get this email because you subscribed to the LevelUp weekly \
         challenge. <a href=\"{unsubscribe}\">Unsubscribe</a></p>\n</body></html>\n",
        subject = escape_html(&subject),
        greeting = escape_html(&greeting),
        intro = escape_html(&intro),
        heading = escape_html(&heading),
        detail = escape_html(&detail),
        action = escape_html(action),
        primary = escape_html(links.primary.as_str()),
        progress = escape_html(links.progress.as_str()),
        unsubscribe = escape_html(links.unsubscribe.as_str()),
    );
    OutgoingEmail {
        from: from.to_owned(),
        to: to.to_owned(),
        subject,
        text,
        html,
        headers: vec![
            ("List-Unsubscribe".into(), format!("<{}>", links.unsubscribe)),
            ("List-Unsubscribe-Post".into(), "List-Unsubscribe=One-Click".into()),
        ],
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
        assert!(email.html.contains("Tags &lt;b&gt;") && email.html.contains("Do &amp; done"));
        assert!(email.html.contains("https://levelup.example/unsubscribe?token=UNSUB"));
        assert_eq!(
            email.headers[0],
            ("List-Unsubscribe".into(), "<https://levelup.example/unsubscribe?token=UNSUB>".into())
        );
        assert_eq!(email.headers[1].1, "List-Unsubscribe=One-Click");
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
}
