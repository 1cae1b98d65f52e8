//! AWS SES v2 `SendEmail` through `aws-sdk-sesv2`. The SDK's own retries are off, so our retry
//! policy governs; every call has an operation timeout.

use aws_config::{BehaviorVersion, Region, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_sesv2::{
    Client,
    error::{ProvideErrorMetadata, SdkError},
    operation::send_email::SendEmailError,
    types::{Body, Content, Destination, EmailContent, Message, MessageHeader, MessageTag},
};

use super::{MailTransport, OutgoingEmail, SendError};
use crate::{config::SesConfig, domain::one_line};

pub struct SesTransport {
    client: Client,
    configuration_set: Option<String>,
}

impl SesTransport {
    pub async fn new(config: &SesConfig) -> Self {
        let shared = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .retry_config(RetryConfig::disabled())
            .timeout_config(TimeoutConfig::builder().operation_timeout(config.timeout).build())
            .load()
            .await;
        let mut builder = aws_sdk_sesv2::config::Builder::from(&shared);
        if let Some(url) = &config.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        Self { client: Client::from_conf(builder.build()), configuration_set: config.configuration_set.clone() }
    }

    fn content(text: &str, charset: bool) -> Result<Content, SendError> {
        let builder = Content::builder().data(text);
        let builder = if charset { builder.charset("UTF-8") } else { builder };
        builder.build().map_err(|e| SendError::Permanent { reason: e.to_string() })
    }
}

#[async_trait::async_trait]
impl MailTransport for SesTransport {
    #[tracing::instrument(skip_all, fields(reference = ?email.reference))]
    async fn send(&self, email: &OutgoingEmail) -> Result<String, SendError> {
        let permanent = |e: aws_sdk_sesv2::error::BuildError| SendError::Permanent { reason: e.to_string() };
        // Header values are made one line here (SES builds the MIME message from them), so no
        // field can add a header whatever it holds.
        let mut message = Message::builder().subject(Self::content(&one_line(&email.subject), true)?).body(
            Body::builder().text(Self::content(&email.text, true)?).html(Self::content(&email.html, true)?).build(),
        );
        for header in &email.headers {
            let header = MessageHeader::builder().name(header.name()).value(one_line(&header.value()));
            message = message.headers(header.build().map_err(permanent)?);
        }
        let (tag_name, id) = email.reference.tag();
        let tag = MessageTag::builder().name(tag_name).value(id.to_string()).build().map_err(permanent)?;
        let result = self
            .client
            .send_email()
            .from_email_address(one_line(&email.from))
            .destination(Destination::builder().to_addresses(one_line(&email.to)).build())
            .content(EmailContent::builder().simple(message.build()).build())
            .email_tags(tag)
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await;
        match result {
            Ok(output) => output.message_id.ok_or_else(|| SendError::transient("SES answered without a MessageId")),
            Err(err) => Err(classify(err)),
        }
    }

    fn name(&self) -> &'static str {
        "ses"
    }
}

fn classify<R>(err: SdkError<SendEmailError, R>) -> SendError
where
    R: HttpStatus + std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status_code();
            let err = service.into_err();
            let reason = format!("{}: {}", err.code().unwrap_or("Unknown"), err.message().unwrap_or(""));
            match &err {
                SendEmailError::TooManyRequestsException(_) | SendEmailError::LimitExceededException(_) => {
                    SendError::Transient { reason, throttled: true, maybe_delivered: false }
                }
                // Account-level conditions: the message is fine, the account is not (yet).
                SendEmailError::SendingPausedException(_) | SendEmailError::AccountSuspendedException(_) => {
                    SendError::transient(reason)
                }
                SendEmailError::MessageRejected(_)
                | SendEmailError::MailFromDomainNotVerifiedException(_)
                | SendEmailError::BadRequestException(_)
                | SendEmailError::NotFoundException(_) => SendError::Permanent { reason },
                _ if status >= 500 || status == 429 => {
                    SendError::Transient { reason, throttled: status == 429, maybe_delivered: false }
                }
                _ if (400..500).contains(&status) => SendError::Permanent { reason },
                _ => SendError::transient(reason),
            }
        }
        // The request may have reached SES: we cannot know whether it was accepted.
        SdkError::TimeoutError(_) => {
            SendError::Transient { reason: "SES call timed out".into(), throttled: false, maybe_delivered: true }
        }
        SdkError::ResponseError(e) => SendError::Transient {
            reason: format!("unreadable SES response: {e:?}"),
            throttled: false,
            maybe_delivered: true,
        },
        SdkError::DispatchFailure(e) => SendError::transient(format!("could not reach SES: {e:?}")),
        other => SendError::transient(format!("SES call failed: {other:?}")),
    }
}

/// The HTTP status of a raw SDK response.
pub trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_smithy_runtime_api::http::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}
