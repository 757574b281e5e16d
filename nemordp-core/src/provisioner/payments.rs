//! Payment side of the provisioner: open a request, apply verified observations, and turn a
//! settlement into a provisioning job in the same transaction (`reliability.md` §2.1, §5).

use crate::{
    error::{Error, ErrorKind, Result},
    ids::{OrderId, PaymentId},
    money::Rounding,
    notify::NotificationKind,
    order::{OrderEvent, OrderState},
    payment::{
        InvoiceEvent, InvoiceException, InvoiceState, InvoiceStatus, InvoiceTerms, LockedRate,
        Payment, PaymentRequest, VerifiedEventKind, WebhookRequest,
    },
    store::{Batch, CommitOutcome, Job, OutboxEntry, StoreExt},
};

use super::{Provisioner, Stage};

/// What a webhook delivery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WebhookOutcome {
    /// Events applied.
    pub applied: usize,
    /// Events seen before (replays), ignored.
    pub duplicates: usize,
    /// Authenticated events of no interest, or for references we do not know.
    pub ignored: usize,
}

impl Provisioner {
    /// Opens a payment request for an order with the named method. Crypto methods are priced
    /// through the rate source, rounding up (the customer pays at most one base unit more), and
    /// the rate is locked into the payment.
    pub async fn open_payment(&self, order_id: OrderId, method: &str) -> Result<Payment> {
        let verifier = self
            .inner
            .verifiers
            .get(method)
            .ok_or_else(|| {
                Error::invalid_input(format!("payment method {method:?} is not registered"))
            })?
            .clone();
        let now = self.now();
        let order = self.inner.store.require_order(order_id).await?;
        crate::fraud::refuse_if_rejected(&order)?;
        let order_next = order.transition(&OrderEvent::PaymentRequested, now)?;
        let asset = verifier.asset();
        let (amount, locked_rate) = if asset == order.price.asset() {
            (order.price, None)
        } else {
            let rates = self.inner.rates.as_ref().ok_or_else(|| {
                Error::invalid_config(format!("method {method} needs a rate source"))
            })?;
            let fiat = order
                .price
                .asset()
                .fiat()
                .ok_or_else(|| Error::invalid_input("order price must be fiat"))?;
            let quote = rates.quote(asset, fiat).await?;
            let rate = quote.rate()?;
            let due = order.price.convert(&rate, Rounding::Up)?;
            (
                due,
                Some(LockedRate {
                    rate,
                    source: quote.source.clone(),
                    quoted_at: quote.at,
                }),
            )
        };
        let expires_at = now.saturating_add(self.inner.config.payment_expiry);
        let mut req = PaymentRequest::new(order_id, amount, expires_at);
        if let Some(email) = &order.customer.email {
            req = req.with_email(email.clone());
        }
        let opened = verifier.open(&req).await?;
        let payment = Payment {
            id: req.payment_id,
            order_id,
            method: verifier.name().to_owned(),
            reference: opened.reference,
            pay_to: opened.pay_to,
            checkout_url: opened.checkout_url,
            terms: InvoiceTerms {
                due: amount,
                tolerance_percent: self.inner.config.payment_tolerance_percent,
            },
            locked_rate,
            state: InvoiceState::NEW,
            seen: crate::Money::zero(asset),
            confirmed: crate::Money::zero(asset),
            expires_at,
            monitor_until: expires_at.saturating_add(self.inner.config.payment_monitoring),
            created_at: now,
            updated_at: now,
            version: 0,
        };
        self.inner
            .store
            .commit(
                Batch::new()
                    .insert_payment(payment.clone())
                    .update_order(order_next),
                now,
            )
            .await?;
        Ok(payment)
    }

    /// Asks the payment's verifier for its current totals and applies them.
    pub async fn refresh_payment(&self, payment_id: PaymentId) -> Result<Payment> {
        let payment = self
            .inner
            .store
            .get_payment(payment_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("payment {payment_id} not found")))?;
        let verifier = self
            .inner
            .verifiers
            .get(payment.method.as_str())
            .ok_or_else(|| {
                Error::invalid_config(format!(
                    "payment method {:?} is not registered",
                    payment.method
                ))
            })?;
        let obs = verifier.check(&payment).await?;
        self.apply_invoice_event(payment_id, &obs.as_event(), None)
            .await?;
        self.inner
            .store
            .get_payment(payment_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("payment {payment_id} vanished")))
    }

    /// Authenticates a webhook for `method` and applies its events, each exactly once (the
    /// dedupe key is recorded in the same transaction as the state change it causes).
    pub async fn handle_webhook(
        &self,
        method: &str,
        request: WebhookRequest<'_>,
    ) -> Result<WebhookOutcome> {
        let verifier = self.inner.verifiers.get(method).ok_or_else(|| {
            Error::invalid_input(format!("payment method {method:?} is not registered"))
        })?;
        let events = verifier.parse_webhook(request).await?;
        let mut outcome = WebhookOutcome::default();
        for event in events {
            let (reference, invoice_event) = match &event.kind {
                VerifiedEventKind::Observed(obs) => (obs.reference.clone(), Some(obs.as_event())),
                VerifiedEventKind::Reversed { reference, .. } => (reference.clone(), None),
                _ => {
                    outcome.ignored += 1;
                    continue;
                }
            };
            let Some(payment) = self.inner.store.find_payment(method, &reference).await? else {
                tracing::warn!(method, "webhook for an unknown reference ignored");
                outcome.ignored += 1;
                continue;
            };
            let dedupe = Some((method.to_owned(), event.event_key.clone()));
            let result = match (invoice_event, &event.kind) {
                (Some(ev), _) => self.apply_invoice_event(payment.id, &ev, dedupe).await?,
                (None, VerifiedEventKind::Reversed { reason, .. }) => {
                    self.apply_reversal(payment.order_id, reason, dedupe)
                        .await?
                }
                (None, _) => CommitOutcome::Applied,
            };
            match result {
                CommitOutcome::Duplicate => outcome.duplicates += 1,
                _ => outcome.applied += 1,
            }
        }
        Ok(outcome)
    }

    /// Applies an invoice event; on settlement (or a late payment) moves the order on and
    /// enqueues provisioning, all in one commit. Retries lost compare-and-sets.
    async fn apply_invoice_event(
        &self,
        payment_id: PaymentId,
        event: &InvoiceEvent,
        dedupe: Option<(String, String)>,
    ) -> Result<CommitOutcome> {
        let store = &self.inner.store;
        for _ in 0..8 {
            let now = self.now();
            let payment = store
                .get_payment(payment_id)
                .await?
                .ok_or_else(|| Error::not_found(format!("payment {payment_id} not found")))?;
            let next = payment.transition(event, now)?;
            let mut batch = Batch::new().update_payment(next.clone());
            if let Some((source, key)) = &dedupe {
                batch = batch.dedupe(source.clone(), key.clone());
            }
            let newly_settled = next.state.status == InvoiceStatus::Settled
                && payment.state.status != InvoiceStatus::Settled;
            let newly_late = next.state.exception == Some(InvoiceException::PaidLate)
                && payment.state.exception != Some(InvoiceException::PaidLate)
                && !next.confirmed.try_cmp(&next.terms.minimum()?)?.is_lt();
            let mut settled_order = None;
            let mut fraud = None;
            if newly_settled || newly_late {
                let order = store.require_order(payment.order_id).await?;
                if matches!(
                    order.state,
                    OrderState::AwaitingPayment | OrderState::Expired
                ) {
                    let mut order_next = order.transition(&OrderEvent::PaymentSettled, now)?;
                    fraud = self
                        .fraud_on_payment_arrived(&mut order_next, &next)
                        .await?;
                    let rejected = order_next.fraud_rejected();
                    batch = batch
                        .update_order(order_next.clone())
                        .notify(OutboxEntry::new(
                            order.id,
                            NotificationKind::PaymentReceived {
                                amount: next.confirmed,
                            },
                            now,
                        ));
                    if matches!(order_next.state, OrderState::Paid) && !rejected {
                        batch = batch.enqueue(Job::provision(order.id, now));
                    }
                    settled_order = Some(order_next);
                }
            }
            match store.commit(batch, now).await {
                Ok(CommitOutcome::Applied) => {
                    if let Some(order) = settled_order {
                        metrics::counter!("nemordp_payments_settled_total", "method" => payment.method.clone()).increment(1);
                        if let Some(decision) = &fraud {
                            self.emit(order.id, Stage::Fraud, 0, decision.to_string());
                        }
                        if matches!(order.state, OrderState::Paid) {
                            self.emit(order.id, Stage::Paid, 5, "payment verified");
                        } else if !order.fraud_rejected() {
                            self.emit(
                                order.id,
                                Stage::NeedsAttention,
                                0,
                                "payment arrived after the order expired",
                            );
                        }
                        self.inner.outbox_wake.notify_one();
                    }
                    return Ok(CommitOutcome::Applied);
                }
                Ok(other) => return Ok(other),
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!(
            "payment {payment_id} kept changing under us"
        )))
    }

    async fn apply_reversal(
        &self,
        order_id: OrderId,
        reason: &str,
        dedupe: Option<(String, String)>,
    ) -> Result<CommitOutcome> {
        let now = self.now();
        let mut batch = Batch::new();
        if let Some((source, key)) = dedupe {
            batch = batch.dedupe(source, key);
        }
        let order = self.inner.store.require_order(order_id).await?;
        batch = match order.state {
            OrderState::Active => batch.enqueue(
                Job::new(crate::store::JobKind::Suspend, order_id, now)
                    .with_note(format!("payment reversed: {reason}")),
            ),
            OrderState::Paid | OrderState::Provisioning { .. } | OrderState::Suspended => batch
                .update_order(order.transition(
                    &OrderEvent::Escalate {
                        reason: crate::order::AttentionReason::new(
                            crate::order::AttentionCode::PaymentReversed,
                            reason,
                        ),
                    },
                    now,
                )?),
            _ => batch,
        };
        self.inner.store.commit(batch, now).await
    }

    /// Expires unpaid payment requests whose time is up, and their orders.
    pub async fn expire_payments(&self) -> Result<usize> {
        let store = &self.inner.store;
        let mut expired = 0;
        for order in store
            .all_orders_in(Some(crate::order::OrderStateKind::AwaitingPayment))
            .await?
        {
            let now = self.now();
            let payments = store.payments_for_order(order.id).await?;
            let mut batch = Batch::new();
            let mut all_expired = !payments.is_empty();
            for p in payments {
                if p.state.status == InvoiceStatus::New && p.expires_at <= now {
                    batch = batch.update_payment(p.transition(&InvoiceEvent::Expire, now)?);
                } else if p.state.status != InvoiceStatus::Expired {
                    all_expired = false;
                }
            }
            if all_expired {
                batch = batch.update_order(order.transition(&OrderEvent::PaymentExpired, now)?);
                expired += 1;
            }
            if !batch.is_empty() {
                match store.commit(batch, now).await {
                    Ok(_) => {}
                    // Someone paid or changed it meanwhile; the next round looks again.
                    Err(e) if e.kind() == ErrorKind::Conflict => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(expired)
    }
}
