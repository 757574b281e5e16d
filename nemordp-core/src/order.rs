//! Orders and their lifecycle as one explicit state machine.
//!
//! ```text
//! created ─► awaiting_payment ─► paid ─► provisioning(step…) ─► active ⇄ suspended
//!    │              │              │            │                  │          │
//!    └──────────────┴─► expired    └────────────┴─► needs_attention ◄─────────┘
//!                        │                              │   └─► paid (operator retry)
//!                        └─► needs_attention (paid late) └─► terminated
//! (every non-terminal state) ─► terminated
//! ```
//!
//! [`OrderState::apply`] is the single transition table; anything not in it is an
//! [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) error and leaves the state as it was.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{
    clock::Timestamp,
    error::{Error, Result},
    ids::{OrderId, PlanId},
    money::Money,
};

/// Who ordered: the host's own customer reference plus where to reach them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Customer {
    /// The host panel's customer id.
    pub id: String,
    /// E-mail for notifications, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The customer's public IP, if known (used to restrict RDP in a firewall).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<std::net::IpAddr>,
}

impl Customer {
    /// A customer known by the host's id only.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            email: None,
            ip: None,
        }
    }

    /// Adds an e-mail address.
    #[must_use]
    pub fn with_email(mut self, email: impl Into<String>) -> Self {
        self.email = Some(email.into());
        self
    }

    /// Adds the customer's IP address.
    #[must_use]
    pub fn with_ip(mut self, ip: std::net::IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }
}

/// Where provisioning has got to. Each step is persisted before and after its side effect
/// (see `reliability.md` §1–2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProvisionStep {
    /// The attempt (label, provider, region, plan, image) is recorded; no create sent yet,
    /// or a create was proven never to have landed.
    IntentRecorded,
    /// A create was sent and its outcome is unknown (timeout, reset, 5xx): look up by label.
    CreateUnknown,
    /// The provider's instance id (and any returned password, sealed) is stored.
    Created,
    /// Waiting for the machine to run and answer RDP.
    Booting,
    /// Credentials sealed and notifications queued; activation pending.
    Ready,
}

impl ProvisionStep {
    /// Steps that may follow `self` (staying put is always allowed: steps are idempotent).
    pub const fn successors(self) -> &'static [ProvisionStep] {
        use ProvisionStep::{Booting, CreateUnknown, Created, IntentRecorded, Ready};
        match self {
            IntentRecorded => &[CreateUnknown, Created],
            CreateUnknown => &[Created, IntentRecorded],
            Created => &[Booting],
            Booting => &[Ready],
            Ready => &[],
        }
    }

    /// Snake-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IntentRecorded => "intent_recorded",
            Self::CreateUnknown => "create_unknown",
            Self::Created => "created",
            Self::Booting => "booting",
            Self::Ready => "ready",
        }
    }
}

impl fmt::Display for ProvisionStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an order needs a human.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttentionCode {
    /// The machine did not become reachable over RDP before the plan's boot deadline.
    BootDeadline,
    /// The whole-order deadline passed while the provider was failing.
    ProviderOutage,
    /// The provider refused the request for good (bad plan, region sold out, quota).
    ProviderRejected,
    /// The provider account needs action (verification, payment, manual provisioning).
    ProviderAccount,
    /// More than one instance carries this order's label.
    DuplicateInstances,
    /// The instance disappeared out-of-band.
    InstanceLost,
    /// Money arrived after the order expired.
    PaidLate,
    /// A payment was reversed or disputed after the machine was delivered.
    PaymentReversed,
    /// Anything else; read the message.
    Other,
}

/// A needs-attention reason: a code to act on plus a message for the operator. Never holds
/// secrets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttentionReason {
    /// Machine-readable cause.
    pub code: AttentionCode,
    /// Operator-readable detail.
    pub message: String,
}

impl AttentionReason {
    /// A reason with a code and message.
    pub fn new(code: AttentionCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl fmt::Display for AttentionReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)
    }
}

/// The state of an order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OrderState {
    /// Just placed; no payment request yet.
    Created,
    /// A payment request is open.
    AwaitingPayment,
    /// A payment settled; a provisioning job exists.
    Paid,
    /// The provisioner is working on it.
    Provisioning {
        /// The step reached.
        step: ProvisionStep,
    },
    /// Running and delivered to the customer.
    Active,
    /// Stopped by the host (non-payment, dispute); can be resumed.
    Suspended,
    /// Gone for good; the instance is deleted or cancelled.
    Terminated,
    /// Never paid before the payment request expired.
    Expired,
    /// Stuck; a human must look. Money may have been taken, so this is never silent.
    NeedsAttention {
        /// Why.
        reason: AttentionReason,
    },
}

/// The coarse state without data, for queries and metrics labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OrderStateKind {
    /// See [`OrderState::Created`].
    Created,
    /// See [`OrderState::AwaitingPayment`].
    AwaitingPayment,
    /// See [`OrderState::Paid`].
    Paid,
    /// See [`OrderState::Provisioning`].
    Provisioning,
    /// See [`OrderState::Active`].
    Active,
    /// See [`OrderState::Suspended`].
    Suspended,
    /// See [`OrderState::Terminated`].
    Terminated,
    /// See [`OrderState::Expired`].
    Expired,
    /// See [`OrderState::NeedsAttention`].
    NeedsAttention,
}

impl OrderStateKind {
    /// Every kind.
    pub const ALL: [Self; 9] = [
        Self::Created,
        Self::AwaitingPayment,
        Self::Paid,
        Self::Provisioning,
        Self::Active,
        Self::Suspended,
        Self::Terminated,
        Self::Expired,
        Self::NeedsAttention,
    ];

    /// Snake-case name (as stored).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::AwaitingPayment => "awaiting_payment",
            Self::Paid => "paid",
            Self::Provisioning => "provisioning",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Terminated => "terminated",
            Self::Expired => "expired",
            Self::NeedsAttention => "needs_attention",
        }
    }
}

impl fmt::Display for OrderStateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happens to an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OrderEvent {
    /// A payment request was opened.
    PaymentRequested,
    /// The payment settled (verified amount, asset, recipient, reference).
    PaymentSettled,
    /// The payment request expired unpaid.
    PaymentExpired,
    /// The provisioner recorded intent or moved to another step.
    StepReached {
        /// The step.
        step: ProvisionStep,
    },
    /// The machine is reachable and the customer has been notified.
    Activated,
    /// The host suspends the machine.
    Suspend,
    /// The host resumes a suspended machine.
    Unsuspend,
    /// The order is ended and its machine removed (idempotent).
    Terminate,
    /// Something needs a human.
    Escalate {
        /// Why.
        reason: AttentionReason,
    },
    /// An operator asks for provisioning to be tried again from scratch.
    RetryProvisioning,
    /// The payment reversal that put an already-suspended order into needs-attention was
    /// withdrawn (e.g. a dispute the merchant won): back to suspended, for whatever reason it
    /// was suspended before. Only from needs-attention with
    /// [`AttentionCode::PaymentReversed`].
    ReversalWithdrawn,
}

impl OrderState {
    /// The coarse kind.
    pub const fn kind(&self) -> OrderStateKind {
        match self {
            Self::Created => OrderStateKind::Created,
            Self::AwaitingPayment => OrderStateKind::AwaitingPayment,
            Self::Paid => OrderStateKind::Paid,
            Self::Provisioning { .. } => OrderStateKind::Provisioning,
            Self::Active => OrderStateKind::Active,
            Self::Suspended => OrderStateKind::Suspended,
            Self::Terminated => OrderStateKind::Terminated,
            Self::Expired => OrderStateKind::Expired,
            Self::NeedsAttention { .. } => OrderStateKind::NeedsAttention,
        }
    }

    /// True once nothing can happen to the order any more.
    pub const fn is_terminal(&self) -> bool {
        matches!(self, Self::Terminated)
    }

    /// True from payment on: the customer's money is in and the order must end up
    /// active, or in needs-attention, or terminated on purpose — never lost.
    pub const fn is_paid(&self) -> bool {
        matches!(
            self,
            Self::Paid
                | Self::Provisioning { .. }
                | Self::Active
                | Self::Suspended
                | Self::NeedsAttention { .. }
        )
    }

    /// The transition table. Returns the next state, or an `InvalidInput` error naming the
    /// state and event when the event is not allowed here.
    pub fn apply(&self, event: &OrderEvent) -> Result<OrderState> {
        use OrderEvent as E;
        use OrderState as S;
        let next = match (self, event) {
            (S::Terminated, _) => None,
            // Terminate is accepted everywhere else; the lifecycle job removes any machine.
            (_, E::Terminate) => Some(S::Terminated),
            // A second payment request (e.g. another method) keeps waiting.
            (S::Created | S::AwaitingPayment, E::PaymentRequested) => Some(S::AwaitingPayment),
            // An operator retry starts provisioning over from "paid".
            (S::AwaitingPayment, E::PaymentSettled)
            | (S::NeedsAttention { .. }, E::RetryProvisioning) => Some(S::Paid),
            (S::Created | S::AwaitingPayment, E::PaymentExpired) => Some(S::Expired),
            // Money after expiry is never dropped: a human decides (provision or refund).
            (S::Expired, E::PaymentSettled) => Some(S::NeedsAttention {
                reason: AttentionReason::new(
                    AttentionCode::PaidLate,
                    "payment settled after the order expired",
                ),
            }),
            (
                S::Paid,
                E::StepReached {
                    step: ProvisionStep::IntentRecorded,
                },
            ) => Some(S::Provisioning {
                step: ProvisionStep::IntentRecorded,
            }),
            (S::Provisioning { step: from }, E::StepReached { step: to })
                if from == to || from.successors().contains(to) =>
            {
                Some(S::Provisioning { step: *to })
            }
            (
                S::Provisioning {
                    step: ProvisionStep::Ready,
                },
                E::Activated,
            )
            | (S::Suspended, E::Unsuspend) => Some(S::Active),
            (S::Active, E::Suspend) => Some(S::Suspended),
            (S::NeedsAttention { reason }, E::ReversalWithdrawn)
                if reason.code == AttentionCode::PaymentReversed =>
            {
                Some(S::Suspended)
            }
            (
                S::Paid
                | S::Provisioning { .. }
                | S::Active
                | S::Suspended
                | S::NeedsAttention { .. },
                E::Escalate { reason },
            ) => Some(S::NeedsAttention {
                reason: reason.clone(),
            }),
            _ => None,
        };
        next.ok_or_else(|| {
            Error::invalid_input(format!(
                "order in state {} cannot take event {}",
                self.kind(),
                event_name(event)
            ))
        })
    }
}

fn event_name(e: &OrderEvent) -> &'static str {
    match e {
        OrderEvent::PaymentRequested => "payment_requested",
        OrderEvent::PaymentSettled => "payment_settled",
        OrderEvent::PaymentExpired => "payment_expired",
        OrderEvent::StepReached { .. } => "step_reached",
        OrderEvent::Activated => "activated",
        OrderEvent::Suspend => "suspend",
        OrderEvent::Unsuspend => "unsuspend",
        OrderEvent::Terminate => "terminate",
        OrderEvent::Escalate { .. } => "escalate",
        OrderEvent::RetryProvisioning => "retry_provisioning",
        OrderEvent::ReversalWithdrawn => "reversal_withdrawn",
    }
}

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Order {
    /// Stable id.
    pub id: OrderId,
    /// The plan bought.
    pub plan_id: PlanId,
    /// Who bought it.
    pub customer: Customer,
    /// Price at the time of ordering (plans may change later).
    pub price: Money,
    /// Current state.
    pub state: OrderState,
    /// When placed.
    pub created_at: Timestamp,
    /// Last state change.
    pub updated_at: Timestamp,
    /// Optimistic-concurrency version; the store bumps it on every update.
    pub version: u64,
    /// Fraud decisions other than "allow", oldest first (see [`crate::fraud`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fraud: Vec<crate::fraud::FraudDecision>,
}

impl Order {
    /// A new order in [`OrderState::Created`].
    pub fn new(plan_id: PlanId, customer: Customer, price: Money, now: Timestamp) -> Self {
        Self {
            id: OrderId::new(),
            plan_id,
            customer,
            price,
            state: OrderState::Created,
            created_at: now,
            updated_at: now,
            version: 0,
            fraud: Vec::new(),
        }
    }

    /// True when a fraud rule rejected this order: it is never provisioned.
    pub fn fraud_rejected(&self) -> bool {
        self.fraud
            .iter()
            .any(|d| d.verdict == crate::fraud::Verdict::Reject)
    }

    /// Applies `event`, returning the updated order (same version: the store bumps it on
    /// commit). The order itself is untouched on error.
    pub fn transition(&self, event: &OrderEvent, now: Timestamp) -> Result<Order> {
        let state = self.state.apply(event)?;
        Ok(Order {
            state,
            updated_at: now,
            ..self.clone()
        })
    }

    /// The deterministic instance label (`nemordp-<order id>`).
    pub fn instance_label(&self) -> String {
        self.id.instance_label()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_step() -> impl Strategy<Value = ProvisionStep> {
        prop_oneof![
            Just(ProvisionStep::IntentRecorded),
            Just(ProvisionStep::CreateUnknown),
            Just(ProvisionStep::Created),
            Just(ProvisionStep::Booting),
            Just(ProvisionStep::Ready),
        ]
    }

    fn arb_event() -> impl Strategy<Value = OrderEvent> {
        prop_oneof![
            Just(OrderEvent::PaymentRequested),
            Just(OrderEvent::PaymentSettled),
            Just(OrderEvent::PaymentExpired),
            arb_step().prop_map(|step| OrderEvent::StepReached { step }),
            Just(OrderEvent::Activated),
            Just(OrderEvent::Suspend),
            Just(OrderEvent::Unsuspend),
            Just(OrderEvent::Terminate),
            Just(OrderEvent::Escalate {
                reason: AttentionReason::new(AttentionCode::Other, "x")
            }),
            Just(OrderEvent::RetryProvisioning),
            Just(OrderEvent::ReversalWithdrawn),
            Just(OrderEvent::Escalate {
                reason: AttentionReason::new(AttentionCode::PaymentReversed, "x")
            }),
        ]
    }

    #[test]
    fn happy_path() {
        let mut s = OrderState::Created;
        for e in [
            OrderEvent::PaymentRequested,
            OrderEvent::PaymentSettled,
            OrderEvent::StepReached {
                step: ProvisionStep::IntentRecorded,
            },
            OrderEvent::StepReached {
                step: ProvisionStep::CreateUnknown,
            },
            OrderEvent::StepReached {
                step: ProvisionStep::Created,
            },
            OrderEvent::StepReached {
                step: ProvisionStep::Booting,
            },
            OrderEvent::StepReached {
                step: ProvisionStep::Booting,
            },
            OrderEvent::StepReached {
                step: ProvisionStep::Ready,
            },
            OrderEvent::Activated,
            OrderEvent::Suspend,
            OrderEvent::Unsuspend,
            OrderEvent::Terminate,
        ] {
            s = s.apply(&e).unwrap();
        }
        assert_eq!(s, OrderState::Terminated);
    }

    #[test]
    fn illegal_transitions_are_typed_errors() {
        let err = OrderState::Created
            .apply(&OrderEvent::Activated)
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("created"), "{err}");
        // Skipping from intent straight to booting is not allowed.
        let s = OrderState::Provisioning {
            step: ProvisionStep::IntentRecorded,
        };
        assert!(
            s.apply(&OrderEvent::StepReached {
                step: ProvisionStep::Booting
            })
            .is_err()
        );
        // Unpaid orders never provision.
        assert!(
            OrderState::AwaitingPayment
                .apply(&OrderEvent::StepReached {
                    step: ProvisionStep::IntentRecorded
                })
                .is_err()
        );
        // Only a reversal's needs-attention goes back to suspended when it is withdrawn.
        let other = OrderState::NeedsAttention {
            reason: AttentionReason::new(AttentionCode::BootDeadline, "x"),
        };
        assert!(other.apply(&OrderEvent::ReversalWithdrawn).is_err());
        assert!(
            OrderState::Active
                .apply(&OrderEvent::ReversalWithdrawn)
                .is_err()
        );
        let reversed = OrderState::NeedsAttention {
            reason: AttentionReason::new(AttentionCode::PaymentReversed, "x"),
        };
        assert_eq!(
            reversed.apply(&OrderEvent::ReversalWithdrawn).unwrap(),
            OrderState::Suspended
        );
        // Late money escalates instead of vanishing.
        assert_eq!(
            OrderState::Expired
                .apply(&OrderEvent::PaymentSettled)
                .unwrap()
                .kind(),
            OrderStateKind::NeedsAttention
        );
    }

    #[test]
    fn serde_round_trip() {
        let s = OrderState::NeedsAttention {
            reason: AttentionReason::new(AttentionCode::BootDeadline, "60 min"),
        };
        let j = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<OrderState>(&j).unwrap(), s);
        assert!(serde_json::from_str::<OrderState>(r#"{"state":"flying"}"#).is_err());
    }

    proptest! {
        /// No event sequence reaches an unreachable combination, an error never changes the
        /// state, terminal stays terminal, provisioning happens only after payment, and a paid
        /// order never goes back to an unpaid state.
        #[test]
        fn random_event_sequences_stay_legal(events in proptest::collection::vec(arb_event(), 0..60)) {
            let mut state = OrderState::Created;
            let mut was_paid = false;
            for e in &events {
                let before = state.clone();
                match state.apply(e) {
                    Ok(next) => {
                        prop_assert!(!before.is_terminal(), "left terminal state via {:?}", e);
                        if matches!(next, OrderState::Provisioning { .. }) {
                            prop_assert!(was_paid, "provisioning without payment");
                        }
                        if matches!(next, OrderState::Active) {
                            let from_ready_or_suspended = matches!(before, OrderState::Provisioning { step: ProvisionStep::Ready } | OrderState::Suspended);
                            prop_assert!(from_ready_or_suspended);
                        }
                        if was_paid {
                            prop_assert!(
                                next.is_paid() || next.is_terminal(),
                                "paid order dropped to {:?}", next
                            );
                        }
                        was_paid |= next.is_paid();
                        state = next;
                    }
                    Err(err) => {
                        prop_assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
                        prop_assert_eq!(&state, &before);
                    }
                }
            }
        }
    }
}
