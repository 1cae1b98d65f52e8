use super::{SubscriberStatus, SuppressionReason};

/// What an SES notification (inside an SNS `Notification`) asks of us.
#[derive(Debug, PartialEq, Eq)]
pub struct SesEvent {
    /// `notificationType` (or `eventType`): `Bounce`, `Complaint`, `Delivery`, …
    pub kind: String,
    /// Permanent bounces and complaints: the suppression and the subscriber status they cause.
    pub effect: Option<(SuppressionReason, SubscriberStatus)>,
    /// The recipients concerned, lower-cased.
    pub recipients: Vec<String>,
    /// SES's id of the message the event is about.
    pub ses_message_id: Option<String>,
}
