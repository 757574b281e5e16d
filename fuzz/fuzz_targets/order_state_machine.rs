//! The order and invoice state machines under arbitrary event sequences.
//!
//! Orders, from `Created`: a refused event is an `InvalidInput` error (and, `apply` taking
//! `&self`, the state is kept); `Terminated` is never left; every paid state (`Paid`,
//! `Provisioning`, `Active`, `Suspended`) is reached only after a `PaymentSettled` was
//! accepted; provisioning steps only move along `ProvisionStep::successors`; `Active` comes
//! only from `Provisioning(Ready)` or `Suspended`; states survive a serde round trip.
//!
//! Invoices, from `NEW`: a final status (`Settled`, `Invalid`) never changes (nor its
//! exception) and refuses operator marks; refused events are `InvalidInput`; observations,
//! expiry and end of monitoring are idempotent; `Settled` comes only from an operator mark or
//! a confirmed total at or above the minimum; `Expired` never reopens.
//!
//! Input: `arbitrary` picks the event lists, the invoice terms and the amounts.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use nemordp_core::{
    order::{AttentionCode, AttentionReason, OrderEvent, OrderState, ProvisionStep},
    payment::{InvoiceEvent, InvoiceException, InvoiceState, InvoiceStatus, InvoiceTerms},
    Asset, Decimal, ErrorKind, Money,
};

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Step {
    IntentRecorded,
    CreateUnknown,
    Created,
    Booting,
    Ready,
}

impl From<Step> for ProvisionStep {
    fn from(s: Step) -> Self {
        match s {
            Step::IntentRecorded => Self::IntentRecorded,
            Step::CreateUnknown => Self::CreateUnknown,
            Step::Created => Self::Created,
            Step::Booting => Self::Booting,
            Step::Ready => Self::Ready,
        }
    }
}

#[derive(Debug, Clone, Arbitrary)]
enum OrderEv {
    PaymentRequested,
    PaymentSettled,
    PaymentExpired,
    StepReached(Step),
    Activated,
    Suspend,
    Unsuspend,
    Terminate,
    Escalate(bool),
    RetryProvisioning,
}

impl From<&OrderEv> for OrderEvent {
    fn from(e: &OrderEv) -> Self {
        match e {
            OrderEv::PaymentRequested => Self::PaymentRequested,
            OrderEv::PaymentSettled => Self::PaymentSettled,
            OrderEv::PaymentExpired => Self::PaymentExpired,
            OrderEv::StepReached(s) => Self::StepReached { step: (*s).into() },
            OrderEv::Activated => Self::Activated,
            OrderEv::Suspend => Self::Suspend,
            OrderEv::Unsuspend => Self::Unsuspend,
            OrderEv::Terminate => Self::Terminate,
            OrderEv::Escalate(boot) => Self::Escalate {
                reason: AttentionReason::new(
                    if *boot {
                        AttentionCode::BootDeadline
                    } else {
                        AttentionCode::Other
                    },
                    "fuzz",
                ),
            },
            OrderEv::RetryProvisioning => Self::RetryProvisioning,
        }
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
enum Amount {
    Zero,
    Units(u64),
    /// `due` plus or minus a little.
    NearDue(i16),
    /// The minimum (due less tolerance) plus or minus a little.
    NearMinimum(i16),
}

#[derive(Debug, Clone, Arbitrary)]
enum InvEv {
    Observed {
        seen: Amount,
        confirmed: Amount,
        wrong_asset: bool,
    },
    Expire,
    MonitoringOver,
    MarkSettled,
    MarkInvalid,
}

#[derive(Debug, Arbitrary)]
struct Input {
    order: Vec<OrderEv>,
    due_units: u64,
    tolerance_mantissa: i32,
    tolerance_scale: u8,
    invoice: Vec<InvEv>,
}

fn paid_kind(s: &OrderState) -> bool {
    matches!(
        s,
        OrderState::Paid
            | OrderState::Provisioning { .. }
            | OrderState::Active
            | OrderState::Suspended
    )
}

fn run_order(events: &[OrderEv]) {
    let mut state = OrderState::Created;
    let mut settled = false;
    for ev in events {
        let event = OrderEvent::from(ev);
        match state.apply(&event) {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
                // Deterministic: refused again, the state is kept.
                assert!(state.apply(&event).is_err());
            }
            Ok(next) => {
                assert!(
                    !state.is_terminal(),
                    "left Terminated with {event:?} to {next:?}"
                );
                if matches!(event, OrderEvent::PaymentSettled) {
                    settled = true;
                }
                if paid_kind(&next) || next.is_paid() {
                    assert!(settled, "{next:?} reached without a settled payment");
                }
                if let OrderState::Provisioning { step: to } = next {
                    match &state {
                        OrderState::Paid => assert_eq!(to, ProvisionStep::IntentRecorded),
                        OrderState::Provisioning { step: from } => assert!(
                            *from == to || from.successors().contains(&to),
                            "step {from} -> {to}"
                        ),
                        other => panic!("provisioning entered from {other:?}"),
                    }
                }
                if next == OrderState::Active {
                    assert!(
                        matches!(
                            state,
                            OrderState::Provisioning {
                                step: ProvisionStep::Ready
                            } | OrderState::Suspended
                        ),
                        "active from {state:?}"
                    );
                }
                if matches!(event, OrderEvent::Terminate) {
                    assert_eq!(next, OrderState::Terminated);
                }
                let json = serde_json::to_string(&next).unwrap();
                let back: OrderState = serde_json::from_str(&json).unwrap();
                assert_eq!(back, next);
                state = next;
            }
        }
        if !state.is_terminal() {
            // Terminate is accepted from every non-terminal state.
            assert_eq!(
                state.apply(&OrderEvent::Terminate).ok(),
                Some(OrderState::Terminated)
            );
        }
    }
}

fn money(asset: Asset, amount: Amount, due: u64, minimum: Option<u64>) -> Money {
    let units = match amount {
        Amount::Zero => 0,
        Amount::Units(u) => u,
        Amount::NearDue(d) => due.saturating_add_signed(i64::from(d)),
        Amount::NearMinimum(d) => minimum.unwrap_or(due).saturating_add_signed(i64::from(d)),
    };
    Money::from_minor(asset, units)
}

fn run_invoice(input: &Input) {
    let asset = Asset::Btc;
    let terms = InvoiceTerms {
        due: Money::from_minor(asset, input.due_units),
        tolerance_percent: Decimal::new(
            i64::from(input.tolerance_mantissa),
            u32::from(input.tolerance_scale % 8),
        ),
    };
    let minimum = terms.minimum().ok();
    let min_units = minimum.and_then(|m| m.minor_u64());
    let mut state = InvoiceState::NEW;
    for ev in &input.invoice {
        let event = match *ev {
            InvEv::Observed {
                seen,
                confirmed,
                wrong_asset,
            } => InvoiceEvent::Observed {
                seen: money(asset, seen, input.due_units, min_units),
                confirmed: money(
                    if wrong_asset { Asset::Eth } else { asset },
                    confirmed,
                    input.due_units,
                    min_units,
                ),
            },
            InvEv::Expire => InvoiceEvent::Expire,
            InvEv::MonitoringOver => InvoiceEvent::MonitoringOver,
            InvEv::MarkSettled => InvoiceEvent::MarkSettled,
            InvEv::MarkInvalid => InvoiceEvent::MarkInvalid,
        };
        let was_final = state.status.is_final();
        match state.apply(&terms, &event) {
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
                if let InvoiceEvent::Observed { seen, confirmed } = &event {
                    // Only wrong assets, confirmed > seen, or unusable terms are refused.
                    let bad_asset = seen.asset() != asset || confirmed.asset() != asset;
                    let over = !bad_asset && confirmed.try_cmp(seen).unwrap().is_gt();
                    assert!(
                        bad_asset || over || minimum.is_none(),
                        "observation refused: {e}"
                    );
                } else {
                    assert!(
                        was_final
                            && matches!(
                                event,
                                InvoiceEvent::MarkSettled | InvoiceEvent::MarkInvalid
                            ),
                        "{event:?} refused in {state:?}: {e}"
                    );
                }
            }
            Ok(next) => {
                if was_final {
                    assert_eq!(next, state, "final {state:?} changed by {event:?}");
                    assert!(
                        !matches!(event, InvoiceEvent::MarkSettled | InvoiceEvent::MarkInvalid),
                        "mark accepted in final {state:?}"
                    );
                }
                if state.status == InvoiceStatus::Expired {
                    assert!(
                        matches!(
                            next.status,
                            InvoiceStatus::Expired
                                | InvoiceStatus::Settled
                                | InvoiceStatus::Invalid
                        ),
                        "expired invoice reopened as {next:?}"
                    );
                    if next.status != InvoiceStatus::Expired {
                        assert_eq!(next.exception, Some(InvoiceException::Marked));
                    }
                }
                if next.status == InvoiceStatus::Settled && !was_final {
                    match &event {
                        InvoiceEvent::MarkSettled => {
                            assert_eq!(next.exception, Some(InvoiceException::Marked));
                        }
                        InvoiceEvent::Observed { confirmed, .. } => {
                            let min = minimum.expect("settled without a minimum");
                            assert!(
                                !confirmed.try_cmp(&min).unwrap().is_lt(),
                                "settled with {confirmed} below minimum {min}"
                            );
                        }
                        other => panic!("settled by {other:?}"),
                    }
                }
                if !matches!(event, InvoiceEvent::MarkSettled | InvoiceEvent::MarkInvalid) {
                    // Replaying the same event changes nothing.
                    assert_eq!(
                        next.apply(&terms, &event).ok(),
                        Some(next),
                        "{event:?} not idempotent from {next:?}"
                    );
                }
                state = next;
            }
        }
    }
}

fuzz_target!(|input: Input| {
    run_order(&input.order);
    run_invoice(&input);
});
