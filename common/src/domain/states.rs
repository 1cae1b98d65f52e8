//! The states and kinds the database stores as constrained `TEXT` (see the `CHECK`s in
//! `migrations/`). Each is an enum here, mapped to and from its text in one place
//! ([`text_enum!`]): Postgres, JSON and logs all use the same snake_case names, and a value the
//! enum does not know fails to decode instead of travelling on as a string. With the `openapi`
//! feature (the API's) they are also poem-openapi enums, documented with the same names.

use std::{fmt, str::FromStr};

/// A stored text that is not one of the enum's names.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown {kind}: {value:?}")]
pub struct UnknownName {
    pub kind: &'static str,
    pub value: String,
}

/// Declares an enum stored as constrained text: `as_str`, `Display`, `FromStr`, serde and the
/// sqlx `Type`/`Encode`/`Decode` impls for Postgres `TEXT`.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "openapi", derive(poem_openapi::Enum))]
        pub enum $name {
            $($(#[$vmeta])* #[cfg_attr(feature = "openapi", oai(rename = $text))] $variant,)+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;
            fn from_str(value: &str) -> Result<Self, Self::Err> {
                match value {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownName { kind: stringify!($name), value: value.to_owned() }),
                }
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                <&str as sqlx::Type<sqlx::Postgres>>::type_info()
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(
                &self,
                buf: &mut sqlx::postgres::PgArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl sqlx::Decode<'_, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?;
                Ok(text.parse()?)
            }
        }
    };
}

text_enum! {
    /// `subscribers.status`.
    SubscriberStatus {
        Active => "active",
        Unsubscribed => "unsubscribed",
        Bounced => "bounced",
        Complained => "complained",
    }
}

text_enum! {
    /// `deliveries.state`: `queued → sending → sent | failed | skipped`; a transient failure
    /// puts a row back to `queued`.
    DeliveryState {
        Queued => "queued",
        Sending => "sending",
        Sent => "sent",
        Failed => "failed",
        Skipped => "skipped",
    }
}

impl DeliveryState {
    /// No worker will touch the row again (short of an operator's replay).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Sent | Self::Failed | Self::Skipped)
    }
}

text_enum! {
    /// `deliveries.kind`: what the email is.
    DeliveryKind {
        Challenge => "challenge",
        QuestionnaireInvite => "questionnaire_invite",
    }
}

text_enum! {
    /// `weekly_runs.status`.
    RunStatus {
        FanningOut => "fanning_out",
        Sending => "sending",
        Completed => "completed",
    }
}

text_enum! {
    /// `shopify_syncs.status`.
    SyncStatus {
        Running => "running",
        Completed => "completed",
        Failed => "failed",
    }
}

text_enum! {
    /// `shopify_syncs.mode`: page by page through GraphQL, or one bulk operation.
    SyncMode {
        Pages => "pages",
        Bulk => "bulk",
    }
}

text_enum! {
    /// `shopify_writebacks.state`.
    WritebackState {
        Pending => "pending",
        Done => "done",
        Failed => "failed",
    }
}

text_enum! {
    /// `test_sends.state`: `queued → sending → sent | failed`. A test send is tried once: a
    /// failure is final, and the operator sends another.
    TestSendState {
        Queued => "queued",
        Sending => "sending",
        Sent => "sent",
        Failed => "failed",
    }
}

text_enum! {
    /// `suppressions.reason`: why we never mail an address.
    SuppressionReason {
        Bounce => "bounce",
        Complaint => "complaint",
        Unsubscribe => "unsubscribe",
        Manual => "manual",
    }
}

text_enum! {
    /// `level_history.reason`.
    LevelChangeReason {
        Placement => "placement",
        Promotion => "promotion",
        Admin => "admin",
    }
}

text_enum! {
    /// `received_webhooks.source`: whose redelivered webhooks we deduplicate.
    WebhookSource {
        Shopify => "shopify",
        Ses => "ses",
    }
}

text_enum! {
    /// `dead_letters.queue`.
    DeadLetterQueue {
        Email => "email",
        ShopifySync => "shopify-sync",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_fail() {
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>(), Ok(*state));
            assert_eq!(serde_json::to_value(state).unwrap(), serde_json::json!(state.as_str()));
        }
        assert_eq!(
            "delivered".parse::<DeliveryState>(),
            Err(UnknownName { kind: "DeliveryState", value: "delivered".to_owned() })
        );
        assert!(serde_json::from_str::<RunStatus>("\"done\"").is_err());
        assert_eq!(serde_json::from_str::<DeadLetterQueue>("\"shopify-sync\"").unwrap(), DeadLetterQueue::ShopifySync);
    }
}

text_enum! {
    /// `run_events.action`: what an operator (or the reputation guard) did to a run.
    RunAction {
        Paused => "paused",
        Resumed => "resumed",
    }
}
