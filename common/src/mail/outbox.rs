//! The local outbox: each message becomes a readable `.eml` file. The default transport when
//! SES is not configured, so the system can be tried without an AWS account.

use std::path::PathBuf;

use anyhow::Context;
use mail_builder::{MessageBuilder, headers::raw::Raw};

use super::{MailTransport, OutgoingEmail, SendError, header_name, split_mailbox};
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
        for (name, value) in &email.headers {
            builder = builder.header(header_name(name), Raw::new(one_line(value)));
        }
        builder.write_to_string()
    }
}

#[async_trait::async_trait]
impl MailTransport for OutboxTransport {
    async fn send(&self, email: &OutgoingEmail) -> Result<String, SendError> {
        let message_id = format!("{}@outbox.levelup", uuid::Uuid::now_v7());
        let eml = Self::render_eml(email, &message_id).map_err(|e| SendError::Permanent { reason: e.to_string() })?;
        let final_path = self.dir.join(format!("delivery-{}.eml", email.delivery_id));
        let temp_path = self.dir.join(format!(".delivery-{}.eml.tmp", email.delivery_id));
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
