//! Payment side of the provisioner: open a request, apply verified observations, and turn a
//! settlement into a provisioning job in the same transaction (`reliability.md` §2.1, §5).

use serde::{Deserialize, Serialize};

use crate::{
    clock::Timestamp,
    error::{Error, ErrorKind, Result},
    ids::{OrderId, PaymentId},
    money::Rounding,
    notify::NotificationKind,
    order::{AttentionCode, AttentionReason, OrderEvent, OrderState, OrderStateKind},
    payment::{
        InvoiceEvent, InvoiceException, InvoiceState, InvoiceStatus, InvoiceTerms, LockedRate,
        Payment, PaymentRequest, VerifiedEventKind, WebhookRequest,
    },
    store::{Batch, CommitOutcome, Job, JobKind, OutboxEntry, RecordWrite, StoreExt},
};

/// Store collection of [`ReversalRecord`]s, keyed by order id.
pub const REVERSAL_COLLECTION: &str = "payment.reversal";

/// Where the reversal that acted on an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ReversalStatus {
    /// The reversal suspended the order (or put it into needs-attention); a withdrawal of
    /// the same reference (a dispute the merchant won) reinstates it.
    Open,
    /// Withdrawn: the order was reinstated.
    Reinstated,
    /// Final: the customer got the money back (refund, lost dispute) or another reversal
    /// followed. The order stays suspended or in needs-attention for an operator.
    Upheld,
}

/// Why and how a payment reversal acted on an order, so that only *its* withdrawal can undo
/// it (an order suspended by an operator or a subscription lapse is never resumed by a
/// dispute outcome). One per order: [`Provisioner::reversal`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ReversalRecord {
    /// The payment method (verifier name).
    pub method: String,
    /// The reversed payment's reference.
    pub reference: String,
    /// The provider's reason text: the reversal's, then `; then: <outcome>` once closed.
    pub reason: String,
    /// The order's state when the reversal arrived: `active` (a suspend job was queued),
    /// or `paid`, `provisioning` or `suspended` (the order went to needs-attention).
    pub order_was: OrderStateKind,
    /// Where it stands.
    pub status: ReversalStatus,
    /// When the reversal arrived.
    pub reversed_at: Timestamp,
    /// When it was reinstated or upheld.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closed_at: Option<Timestamp>,
}

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
                VerifiedEventKind::Reversed { reference, .. }
                | VerifiedEventKind::Reinstated { reference, .. } => (reference.clone(), None),
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
                    self.apply_reversal(&payment, reason, dedupe).await?
                }
                (None, VerifiedEventKind::Reinstated { reason, .. }) => {
                    match self.apply_reinstatement(&payment, reason, dedupe).await? {
                        (CommitOutcome::Applied, false) => {
                            outcome.ignored += 1;
                            continue;
                        }
                        (result, _) => result,
                    }
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

    /// The reversal record of an order, if a payment reversal ever acted on it.
    pub async fn reversal(&self, order_id: OrderId) -> Result<Option<ReversalRecord>> {
        Ok(self.load_reversal(order_id).await?.map(|(r, _)| r))
    }

    async fn load_reversal(&self, order_id: OrderId) -> Result<Option<(ReversalRecord, u64)>> {
        match self
            .inner
            .store
            .get_record(REVERSAL_COLLECTION, &order_id.to_string())
            .await?
        {
            Some(r) => Ok(Some((r.decode()?, r.version))),
            None => Ok(None),
        }
    }

    /// Writes `record` for `order_id`: an insert, or an update of `version`.
    fn reversal_write(
        order_id: OrderId,
        record: &ReversalRecord,
        version: Option<u64>,
    ) -> Result<RecordWrite> {
        let key = order_id.to_string();
        match version {
            Some(v) => RecordWrite::update(REVERSAL_COLLECTION, &key, record, v),
            None => RecordWrite::insert(REVERSAL_COLLECTION, &key, record),
        }
    }

    /// Suspends (active order) or escalates (paid, provisioning, suspended) on a reversal, and
    /// records why in the order's [`ReversalRecord`], in one commit with the dedupe key.
    async fn apply_reversal(
        &self,
        payment: &Payment,
        reason: &str,
        dedupe: Option<(String, String)>,
    ) -> Result<CommitOutcome> {
        let order_id = payment.order_id;
        for _ in 0..8 {
            let now = self.now();
            let mut batch = Batch::new();
            if let Some((source, key)) = &dedupe {
                batch = batch.dedupe(source.clone(), key.clone());
            }
            let order = self.inner.store.require_order(order_id).await?;
            let existing = self.load_reversal(order_id).await?;
            let open = existing
                .as_ref()
                .filter(|(r, _)| r.status == ReversalStatus::Open);
            let escalate = |batch: Batch| -> Result<Batch> {
                Ok(batch.update_order(order.transition(
                    &OrderEvent::Escalate {
                        reason: AttentionReason::new(AttentionCode::PaymentReversed, reason),
                    },
                    now,
                )?))
            };
            let record = if let Some((r, version)) = open {
                // The final word on a reversal that already acted (a refund or a lost dispute
                // after the dispute opened), or a second reversal: never reinstated
                // automatically. The same reference's order stays as that reversal left it.
                let same = r.reference == payment.reference;
                if !same && matches!(order.state, OrderState::Suspended) {
                    batch = escalate(batch)?;
                }
                let mut r = r.clone();
                r.status = ReversalStatus::Upheld;
                r.reason = format!("{}; then: {reason}", r.reason);
                r.closed_at = Some(now);
                tracing::warn!(
                    order_id = %order_id,
                    method = %payment.method,
                    reason,
                    "payment reversal upheld; the order stays suspended for an operator"
                );
                Some(Self::reversal_write(order_id, &r, Some(*version))?)
            } else {
                let order_was = order.state.kind();
                batch = match order.state {
                    OrderState::Active => batch.enqueue(
                        Job::new(JobKind::Suspend, order_id, now)
                            .with_note(format!("payment reversed: {reason}")),
                    ),
                    OrderState::Paid | OrderState::Provisioning { .. } | OrderState::Suspended => {
                        escalate(batch)?
                    }
                    _ => batch,
                };
                let acted = matches!(
                    order_was,
                    OrderStateKind::Active
                        | OrderStateKind::Paid
                        | OrderStateKind::Provisioning
                        | OrderStateKind::Suspended
                );
                acted
                    .then(|| {
                        Self::reversal_write(
                            order_id,
                            &ReversalRecord {
                                method: payment.method.clone(),
                                reference: payment.reference.clone(),
                                reason: reason.to_owned(),
                                order_was,
                                status: ReversalStatus::Open,
                                reversed_at: now,
                                closed_at: None,
                            },
                            existing.as_ref().map(|(_, v)| *v),
                        )
                    })
                    .transpose()?
            };
            if let Some(w) = record {
                batch = batch.put_record(w);
            }
            match self.inner.store.commit(batch, now).await {
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                other => return other,
            }
        }
        Err(Error::conflict(format!(
            "order {order_id} kept changing under a payment reversal"
        )))
    }

    /// Undoes what the open reversal of the same reference did: resumes the machine it
    /// suspended (a durable unsuspend job), returns an order it escalated from suspended to
    /// suspended, or restarts provisioning of an order it escalated before delivery. Anything
    /// else (no open reversal, another reference, an order an operator moved since) is only
    /// logged. The bool says whether the order was reinstated.
    async fn apply_reinstatement(
        &self,
        payment: &Payment,
        reason: &str,
        dedupe: Option<(String, String)>,
    ) -> Result<(CommitOutcome, bool)> {
        let order_id = payment.order_id;
        for _ in 0..8 {
            let now = self.now();
            let mut batch = Batch::new();
            if let Some((source, key)) = &dedupe {
                batch = batch.dedupe(source.clone(), key.clone());
            }
            let order = self.inner.store.require_order(order_id).await?;
            let open = self.load_reversal(order_id).await?.filter(|(r, _)| {
                r.status == ReversalStatus::Open && r.reference == payment.reference
            });
            let reversed_here = matches!(
                &order.state,
                OrderState::NeedsAttention { reason } if reason.code == AttentionCode::PaymentReversed
            );
            let action = match (&open, &order.state) {
                (Some((r, _)), OrderState::Suspended) if r.order_was == OrderStateKind::Active => {
                    Some(
                        batch.enqueue(
                            Job::new(JobKind::Unsuspend, order_id, now)
                                .with_note(format!("payment reinstated: {reason}")),
                        ),
                    )
                }
                (Some((r, _)), OrderState::Active) if r.order_was == OrderStateKind::Active => {
                    // Lifecycle jobs of one order may run in any order: an unsuspend queued
                    // now could run before the pending suspend. Let the provider redeliver
                    // once the suspension is done; with none pending there is nothing to undo.
                    let pending =
                        self.inner
                            .store
                            .jobs_for_order(order_id)
                            .await?
                            .iter()
                            .any(|j| {
                                j.kind == JobKind::Suspend
                                    && matches!(
                                        j.state,
                                        crate::store::JobState::Queued
                                            | crate::store::JobState::Running
                                    )
                            });
                    if pending {
                        return Err(Error::unavailable(format!(
                            "order {order_id} is still being suspended for the reversal; \
                             deliver the reinstatement again later"
                        )));
                    }
                    Some(batch)
                }
                (Some((r, _)), _) if reversed_here && r.order_was == OrderStateKind::Suspended => {
                    Some(batch.update_order(order.transition(&OrderEvent::ReversalWithdrawn, now)?))
                }
                (Some((r, _)), _)
                    if reversed_here
                        && matches!(
                            r.order_was,
                            OrderStateKind::Paid | OrderStateKind::Provisioning
                        )
                        && !order.fraud_rejected() =>
                {
                    let job = Job::new(JobKind::Provision, order_id, now).with_unique_key(format!(
                        "provision:{order_id}:reinstated:{}",
                        now.as_unix_millis()
                    ));
                    Some(
                        batch
                            .update_order(order.transition(&OrderEvent::RetryProvisioning, now)?)
                            .enqueue(job),
                    )
                }
                _ => None,
            };
            let Some(mut batch) = action else {
                tracing::warn!(
                    order_id = %order_id,
                    method = %payment.method,
                    state = %order.state.kind(),
                    reason,
                    "payment reinstated, but no open reversal of this reference suspended the order; left as it is"
                );
                let mut only_dedupe = Batch::new();
                if let Some((source, key)) = &dedupe {
                    only_dedupe = only_dedupe.dedupe(source.clone(), key.clone());
                }
                return Ok((self.inner.store.commit(only_dedupe, now).await?, false));
            };
            let (mut r, version) = open.expect("an action implies an open reversal");
            r.status = ReversalStatus::Reinstated;
            r.reason = format!("{}; then: {reason}", r.reason);
            r.closed_at = Some(now);
            batch = batch.put_record(Self::reversal_write(order_id, &r, Some(version))?);
            match self.inner.store.commit(batch, now).await {
                Ok(CommitOutcome::Applied) => {
                    tracing::info!(order_id = %order_id, reason, "payment reinstated; order reinstated");
                    self.emit(
                        order_id,
                        super::Stage::Lifecycle,
                        0,
                        format!("payment reinstated: {reason}"),
                    );
                    return Ok((CommitOutcome::Applied, true));
                }
                Ok(other) => return Ok((other, false)),
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!(
            "order {order_id} kept changing under a payment reinstatement"
        )))
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
