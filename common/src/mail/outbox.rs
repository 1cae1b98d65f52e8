//! The local outbox: each message becomes a readable `.eml` file. The default transport when
//! SES is not configured, so the system can be tried without an AWS account.

use std::path::PathBuf;

use anyhow::Context;
use mail_builder::{
    MessageBuilder,
    headers::{raw::Raw, url::URL},
};

use super::{ListHeader, MailTransport, OutgoingEmail, SendError, split_mailbox};
use crate::domain::one_line;

pub struct OutboxTransport {
    dir: PathBuf,
}

impl OutboxTransport {
    pub fn new(dir: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating outbox folder {}", dir.display()))?;
        Ok(Self { dir })
    }

    pub fn render_eml(email: &OutgoingEmail, message_id: &str) -> std::io::Result<String> {
        // mail-builder writes ASCII header values as they are: every value is made one line here,
        // so no field can add a header (or end the headers) whatever it holds.
        let (from_name, from_address) = split_mailbox(&email.from);
        let mut builder = MessageBuilder::new()
            .message_id(one_line(message_id))
            .from((one_line(from_name.unwrap_or("")), one_line(from_address)))
            .to(one_line(&email.to))
            .subject(one_line(&email.subject))
            .text_body(email.text.clone())
            .html_body(email.html.clone());
        for header in &email.headers {
            builder = match header {
                ListHeader::Unsubscribe(url) => builder.header(header.name(), URL::new(one_line(url.as_str()))),
                ListHeader::UnsubscribePost | ListHeader::Test => {
                    builder.header(header.name(), Raw::new(header.value()))
                }
            };
        }
        builder.write_to_string()
    }
}

#[async_trait::async_trait]
impl MailTransport for OutboxTransport {
    async fn send(&self, email: &OutgoingEmail) -> Result<String, SendError> {
        let message_id = format!("{}@outbox.levelup", uuid::Uuid::now_v7());
        let eml = Self::render_eml(email, &message_id).map_err(|e| SendError::Permanent { reason: e.to_string() })?;
        let stem = email.reference.file_stem();
        let final_path = self.dir.join(format!("{stem}.eml"));
        let temp_path = self.dir.join(format!(".{stem}.eml.tmp"));
        // Write then rename, so a reader never sees half a message.
        tokio::fs::write(&temp_path, eml).await.map_err(|e| SendError::transient(format!("writing outbox: {e}")))?;
        tokio::fs::rename(&temp_path, &final_path)
            .await
            .map_err(|e| SendError::transient(format!("writing outbox: {e}")))?;
        Ok(message_id)
    }

    fn name(&self) -> &'static str {
        "outbox"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mail::{
        MailRef,
        render::{EmailBody, Links, render},
    };

    #[test]
    fn the_one_click_unsubscribe_headers_are_written_as_rfc_8058_asks() {
        let base = url::Url::parse("https://levelup.example/").unwrap();
        let body = EmailBody::QuestionnaireInvite;
        let links = Links::new(&base, &body, "A", "U");
        let email = render(
            "LevelUp <a@levelup.example>",
            "x@y.example",
            Some("Ada\r\nBcc: t@evil.example"),
            &body,
            &links,
            MailRef::Delivery(5),
        );
        let eml = OutboxTransport::render_eml(&email, "m@outbox.levelup").unwrap();
        assert!(eml.contains("\r\nList-Unsubscribe: <https://levelup.example/unsubscribe?token=U>\r\n"), "{eml}");
        assert!(eml.contains("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"), "{eml}");
        assert!(eml.contains("\r\nSubject: Find your level: a 2-minute questionnaire\r\n"), "{eml}");
        assert!(!eml.lines().any(|line| line.to_ascii_lowercase().starts_with("bcc:")), "{eml}");
    }
}
