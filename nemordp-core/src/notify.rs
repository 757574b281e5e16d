//! The [`Notifier`] trait and the notifications nemordp sends to customers.
//!
//! Two shapes: [`NotificationKind`] is what sits in the store's outbox and never holds a
//! secret; [`Notification`] is what a notifier delivers, with the credentials unsealed only
//! for the moment of sending.

use std::fmt;

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{
    error::Result,
    ids::{NotificationId, OrderId},
    money::Money,
    order::{AttentionReason, Customer},
};

/// What happened, as stored in the outbox. Secret-free by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotificationKind {
    /// Payment verified.
    PaymentReceived {
        /// Amount received.
        amount: Money,
    },
    /// Provisioning began.
    ProvisioningStarted,
    /// The machine is reachable; the delivered notification carries credentials and `.rdp`.
    Ready,
    /// Provisioning failed and a human is on it.
    Failed {
        /// Why.
        reason: AttentionReason,
    },
    /// The machine was suspended.
    Suspended {
        /// Why (shown to the customer).
        reason: String,
    },
    /// The machine was terminated.
    Terminated,
    /// A renewal payment failed; the machine will be suspended unless the customer pays.
    /// Queued by the host's billing (nemordp does not renew by itself).
    RenewalFailed {
        /// Why (shown to the customer).
        reason: String,
    },
}

impl NotificationKind {
    /// Snake-case name for templates and metrics.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Self::PaymentReceived { .. } => "payment_received",
            Self::ProvisioningStarted => "provisioning_started",
            Self::Ready => "ready",
            Self::Failed { .. } => "failed",
            Self::Suspended { .. } => "suspended",
            Self::Terminated => "terminated",
            Self::RenewalFailed { .. } => "renewal_failed",
        }
    }
}

/// How to connect to a delivered machine.
#[derive(Clone)]
#[non_exhaustive]
pub struct ConnectionDetails {
    /// Host name or IP.
    pub host: String,
    /// RDP port.
    pub port: u16,
    /// Login name.
    pub username: String,
    /// Login password.
    pub password: SecretString,
    /// Contents of a ready `.rdp` file (contains no password).
    pub rdp_file: String,
}

impl ConnectionDetails {
    /// Connection details.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        username: impl Into<String>,
        password: SecretString,
        rdp_file: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            username: username.into(),
            password,
            rdp_file: rdp_file.into(),
        }
    }
}

impl fmt::Debug for ConnectionDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionDetails")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("rdp_file", &format_args!("<{} bytes>", self.rdp_file.len()))
            .finish()
    }
}

/// A notification ready to deliver.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Notification {
    /// Stable across retries; receivers dedupe on it.
    pub id: NotificationId,
    /// The order concerned.
    pub order_id: OrderId,
    /// Who to tell.
    pub customer: Customer,
    /// What happened.
    pub kind: NotificationKind,
    /// Present for [`NotificationKind::Ready`] only.
    pub connection: Option<ConnectionDetails>,
}

impl Notification {
    /// A notification without connection details.
    pub fn new(
        id: NotificationId,
        order_id: OrderId,
        customer: Customer,
        kind: NotificationKind,
    ) -> Self {
        Self {
            id,
            order_id,
            customer,
            kind,
            connection: None,
        }
    }

    /// Attaches connection details (for `Ready`).
    #[must_use]
    pub fn with_connection(mut self, connection: ConnectionDetails) -> Self {
        self.connection = Some(connection);
        self
    }
}

/// Proof of delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// Channel name (`"smtp"`, `"webhook"`, `"recording"`).
    pub channel: &'static str,
    /// The channel's own receipt (SMTP queue id, HTTP status), if any.
    pub receipt: Option<String>,
}

impl Delivery {
    /// A delivery receipt.
    pub fn new(channel: &'static str, receipt: Option<String>) -> Self {
        Self { channel, receipt }
    }
}

/// Delivers notifications to customers.
#[async_trait]
#[auto_impl::auto_impl(&, Arc, Box)]
pub trait Notifier: fmt::Debug + Send + Sync + 'static {
    /// Channel name used in errors and metrics.
    fn name(&self) -> &'static str;

    /// Delivers one notification.
    ///
    /// # Behavior
    /// - At least once: the outbox may call this again with the same `id` after a crash;
    ///   receivers dedupe on it.
    /// - Throttling → `RateLimited` with `retry_after`; a recipient that can never receive
    ///   (bad address, 410 Gone) → `Rejected`.
    async fn send(&self, notification: &Notification) -> Result<Delivery>;
}
