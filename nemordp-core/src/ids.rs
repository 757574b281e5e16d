//! Stable identifiers. Ours are UUIDv7 (time-ordered, so indexes stay compact); provider ids are
//! opaque strings because Vultr uses UUIDs and Contabo integers.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing UUID.
            pub const fn from_uuid(u: Uuid) -> Self {
                Self(u)
            }

            /// The UUID inside.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.hyphenated())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| Error::invalid_input(format!(concat!("invalid ", $what, " id {:?}"), s)))
            }
        }
    };
}

uuid_id!(
    /// Identifies an order.
    OrderId,
    "order"
);
uuid_id!(
    /// Identifies a payment request (invoice).
    PaymentId,
    "payment"
);
uuid_id!(
    /// Identifies a job in the store's job table.
    JobId,
    "job"
);
uuid_id!(
    /// Identifies a notification; receivers dedupe on it (`webhook-id`, e-mail `Message-ID`).
    NotificationId,
    "notification"
);

/// The prefix of every label nemordp puts on a cloud instance.
pub const LABEL_PREFIX: &str = "nemordp-";

impl OrderId {
    /// The deterministic instance label for this order, `nemordp-<order id>`: the key used to
    /// find (and adopt) an instance whose create response was lost.
    pub fn instance_label(&self) -> String {
        format!("{LABEL_PREFIX}{self}")
    }

    /// The order id inside a label made by [`OrderId::instance_label`], if it is one.
    pub fn from_instance_label(label: &str) -> Option<Self> {
        label.strip_prefix(LABEL_PREFIX)?.parse().ok()
    }
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string id.
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A provider's own instance id (Vultr UUID, Contabo integer as text).
    InstanceId
);
string_id!(
    /// A plan id from the catalog, e.g. `win-2c-4g-lagos`.
    PlanId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_round_trips_and_rejects_foreign_labels() {
        let id = OrderId::new();
        let label = id.instance_label();
        assert!(label.starts_with("nemordp-"));
        assert_eq!(OrderId::from_instance_label(&label), Some(id));
        assert_eq!(OrderId::from_instance_label("nemordp-xyz"), None);
        assert_eq!(OrderId::from_instance_label(&id.to_string()), None);
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = OrderId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = OrderId::new();
        assert!(a < b);
        assert!("not-a-uuid".parse::<OrderId>().is_err());
    }
}
