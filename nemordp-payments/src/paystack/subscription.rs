//! Recurring billing on Paystack: customer, plan per catalog plan, subscription started with a
//! verified reusable authorization, renewals extending the service period, and lapses leading
//! to suspension after a grace period and then termination, through the Provisioner's
//! lifecycle operations.
//!
//! State lives in the host's [`Store`] as records:
//! - `paystack.customer` / e-mail → `CUS_…`;
//! - `paystack.plan` / `<plan id>:<amount>:<currency>:<interval>` → `PLN_…`;
//! - `paystack.subscription` / order id → [`SubscriptionRecord`] (the authorization code and
//!   the e-mail token are sealed with the [`Sealer`] for that order, never stored or logged in
//!   clear);
//! - `paystack.subscription_code` / `SUB_…` → order id;
//! - `paystack.subscription_event` / dedupe key → marker (a redelivered event is a no-op).

use std::{sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use nemordp_core::{
    Error, ErrorKind, Money, OrderId, Result, Store, Timestamp,
    order::OrderState,
    payment::WebhookRequest,
    plan::{BillingPeriod, Plan},
    provisioner::{LifecycleOp, Provisioner},
    seal::Sealer,
    store::{Batch, RecordWrite},
};

use super::{
    NAME, Paystack, SIGNATURE_HEADER, VerifiedCharge,
    client::Retry,
    webhook::{self, InvoiceStage, PaystackEvent, SubscriptionStage},
};

const CUSTOMERS: &str = "paystack.customer";
const PLANS: &str = "paystack.plan";
const SUBSCRIPTIONS: &str = "paystack.subscription";
const CODES: &str = "paystack.subscription_code";
const EVENTS: &str = "paystack.subscription_event";
const BY_CUSTOMER_PLAN: &str = "paystack.subscription_by_customer_plan";
const AUTH_FIELD: &str = "paystack.authorization_code";
const TOKEN_FIELD: &str = "paystack.email_token";

/// Where a subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SubscriptionState {
    /// Paid up.
    Active,
    /// A renewal failed or the customer cancelled: suspension after the grace period.
    Lapsing,
    /// Suspended for non-payment; termination follows.
    Suspended,
    /// Terminated.
    Terminated,
}

/// One order's subscription, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SubscriptionRecord {
    /// The order served.
    pub order_id: OrderId,
    /// `SUB_…`.
    pub subscription_code: String,
    /// `CUS_…`.
    pub customer_code: String,
    /// `PLN_…`.
    pub plan_code: String,
    /// The reusable authorization code, sealed for this order (hex).
    pub authorization_sealed: String,
    /// The e-mail token (needed to enable/disable), sealed for this order (hex).
    pub email_token_sealed: String,
    /// Service is paid until then.
    pub paid_until: Timestamp,
    /// Where it stands.
    pub state: SubscriptionState,
    /// Since when it is lapsing (renewal failed, cancelled or disabled).
    pub lapsed_at: Option<Timestamp>,
    /// Why.
    pub lapse_reason: Option<String>,
}

/// What a subscription webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SubscriptionOutcome {
    /// The period was extended to this time.
    Renewed(OrderId, Timestamp),
    /// The subscription started lapsing.
    Lapsing(OrderId),
    /// Seen before: nothing done.
    Duplicate,
    /// Not about a subscription we know.
    Ignored,
}

/// Paystack subscriptions for paid orders.
#[derive(Debug, Clone)]
pub struct PaystackSubscriptions {
    paystack: Arc<Paystack>,
    provisioner: Provisioner,
    sealer: Arc<Sealer>,
    grace: Duration,
    terminate_after: Duration,
}

fn interval(period: BillingPeriod) -> Result<&'static str> {
    match period {
        BillingPeriod::Monthly => Ok("monthly"),
        BillingPeriod::SemiAnnual => Ok("biannually"),
        BillingPeriod::Annual => Ok("annually"),
        // The spec's plan interval enum is daily, weekly, monthly, biannually, annually.
        _ => Err(Error::new(
            ErrorKind::NotSupported,
            format!(
                "paystack plans cannot bill {period:?}: Paystack's plan intervals are daily, \
                 weekly, monthly, biannually and annually (no quarterly); sell this plan \
                 monthly, or bill each quarter as a one-off payment"
            ),
        )
        .with_backend(NAME)),
    }
}

/// The end of a period that starts at `from`, in calendar months as Paystack bills them
/// (Jan 31 + 1 month = Feb 28, or 29).
fn period_end(from: Timestamp, period: BillingPeriod) -> Timestamp {
    from.add_months(period.months())
}

/// Slack allowed past the calendar period end for Paystack's own `next_payment_date` (its
/// billing hour and time zone differ from ours).
const NEXT_PAYMENT_SLACK: Duration = Duration::from_secs(3 * 24 * 3600);

/// The end of the paid period: Paystack's `next_payment_date` when it is sent and sane
/// (parses as RFC 3339, lies after `now`, and not beyond the calendar end of one period from
/// `from` plus a little slack, so a bogus date never gives months for free), else the
/// calendar end of one period from `from`.
fn paid_until(
    next_payment_date: Option<&str>,
    now: Timestamp,
    from: Timestamp,
    period: BillingPeriod,
) -> Timestamp {
    let calendar = period_end(from, period);
    let Some(text) = next_payment_date.map(str::trim).filter(|t| !t.is_empty()) else {
        return calendar;
    };
    match Timestamp::parse_rfc3339(text) {
        Ok(next) if next > now && next <= calendar.saturating_add(NEXT_PAYMENT_SLACK) => next,
        Ok(next) => {
            tracing::warn!(
                backend = NAME,
                %next,
                %calendar,
                "paystack next_payment_date is out of range; using the calendar period end"
            );
            calendar
        }
        Err(_) => {
            tracing::warn!(
                backend = NAME,
                next_payment_date = text,
                "paystack next_payment_date does not parse; using the calendar period end"
            );
            calendar
        }
    }
}

#[derive(Deserialize)]
struct CodeOnly {
    #[serde(default)]
    customer_code: Option<String>,
    #[serde(default)]
    plan_code: Option<String>,
    #[serde(default)]
    subscription_code: Option<String>,
    #[serde(default)]
    email_token: Option<SecretString>,
    #[serde(default)]
    next_payment_date: Option<String>,
}

impl PaystackSubscriptions {
    /// Subscriptions through `paystack`, acting on `provisioner`'s orders, sealing secrets with
    /// `sealer`. Defaults: suspend 3 days after a lapse, terminate 14 days after suspension.
    pub fn new(paystack: Arc<Paystack>, provisioner: Provisioner, sealer: Arc<Sealer>) -> Self {
        Self {
            paystack,
            provisioner,
            sealer,
            grace: Duration::from_secs(3 * 24 * 3600),
            terminate_after: Duration::from_secs(14 * 24 * 3600),
        }
    }

    /// Sets the grace period before suspension and the time from suspension to termination.
    #[must_use]
    pub fn with_grace(mut self, grace: Duration, terminate_after: Duration) -> Self {
        self.grace = grace;
        self.terminate_after = terminate_after;
        self
    }

    fn plan(&self, order: &nemordp_core::order::Order) -> Result<Plan> {
        self.provisioner
            .catalog()
            .get(&order.plan_id)
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("plan {} is not in the catalog", order.plan_id))
            })
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.provisioner.store()
    }

    async fn put(&self, write: RecordWrite) -> Result<()> {
        self.store()
            .commit(Batch::new().put_record(write), self.provisioner.now())
            .await
            .map(drop)
    }

    /// Creates the Paystack customer for `email`, or reuses the one recorded.
    pub async fn ensure_customer(&self, email: &str) -> Result<String> {
        let key = email.trim().to_ascii_lowercase();
        if let Some(r) = self.store().get_record(CUSTOMERS, &key).await? {
            return r.decode::<String>();
        }
        // Paystack answers a known e-mail with the existing customer, so this is safe to repeat.
        let c: CodeOnly = self
            .paystack
            .client
            .post(
                "create_customer",
                "/customer",
                &json!({ "email": key }),
                Retry::Safe,
            )
            .await?;
        let code = c
            .customer_code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| unexpected("create_customer", "no customer_code in the answer"))?;
        match self.put(RecordWrite::insert(CUSTOMERS, &key, &code)?).await {
            Ok(()) => Ok(code),
            // Someone else recorded it first: theirs and ours are the same customer.
            Err(e) if e.kind() == ErrorKind::Conflict => Ok(code),
            Err(e) => Err(e),
        }
    }

    /// Creates the Paystack plan for a catalog plan (name, amount in subunits, interval,
    /// currency), or reuses the one recorded for the same terms.
    pub async fn ensure_plan(&self, plan: &Plan) -> Result<String> {
        if plan.price.asset() != self.paystack.asset {
            return Err(Error::invalid_input(format!(
                "plan {} is priced in {}, paystack charges {}",
                plan.id,
                plan.price.asset(),
                self.paystack.asset
            ))
            .with_backend(NAME));
        }
        let units = plan
            .price
            .minor_u64()
            .filter(|u| *u > 0)
            .ok_or_else(|| Error::invalid_input("plan price is zero or too large"))?;
        let interval = interval(plan.period)?;
        let key = format!("{}:{units}:{}:{interval}", plan.id, self.paystack.currency);
        if let Some(r) = self.store().get_record(PLANS, &key).await? {
            return r.decode::<String>();
        }
        let body = json!({
            "name": format!("nemordp {} ({})", plan.name, plan.id),
            "amount": units,
            "interval": interval,
            "currency": self.paystack.currency.code(),
        });
        let p: CodeOnly = self
            .paystack
            .client
            .post("create_plan", "/plan", &body, Retry::IfNotProcessed)
            .await?;
        let code = p
            .plan_code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| unexpected("create_plan", "no plan_code in the answer"))?;
        match self.put(RecordWrite::insert(PLANS, &key, &code)?).await {
            Ok(()) => Ok(code),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                match self.store().get_record(PLANS, &key).await? {
                    Some(r) => r.decode(),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Starts the subscription of a paid order with the reusable authorization of its verified
    /// first charge. The first period counts from now; renewals extend it.
    pub async fn subscribe(
        &self,
        order_id: OrderId,
        charge: &VerifiedCharge,
    ) -> Result<SubscriptionRecord> {
        let order = self.provisioner.order(order_id).await?;
        if !order.state.is_paid() {
            return Err(Error::invalid_input(format!(
                "order {order_id} is not paid"
            )));
        }
        let auth = charge
            .transaction
            .authorization
            .as_ref()
            .filter(|a| a.reusable == Some(true))
            .and_then(|a| a.authorization_code.clone())
            .ok_or_else(|| {
                Error::invalid_input("the charge has no reusable authorization (pay by card first)")
                    .with_backend(NAME)
            })?;
        let email = charge
            .transaction
            .customer
            .as_ref()
            .and_then(|c| c.email.clone())
            .or(order.customer.email.clone())
            .ok_or_else(|| Error::invalid_input("no customer e-mail"))?;
        let plan = self.plan(&order)?;
        let customer_code = self.ensure_customer(&email).await?;
        let plan_code = self.ensure_plan(&plan).await?;
        let now = self.provisioner.now();
        let body = json!({
            "customer": customer_code,
            "plan": plan_code,
            "authorization": auth.expose_secret(),
            // The first period was paid by the verified charge.
            "start_date": rfc3339(period_end(now, plan.period)),
        });
        let s: CodeOnly = self
            .paystack
            .client
            .post(
                "create_subscription",
                "/subscription",
                &body,
                Retry::IfNotProcessed,
            )
            .await?;
        let code = s
            .subscription_code
            .filter(|c| !c.is_empty())
            .ok_or_else(|| {
                unexpected("create_subscription", "no subscription_code in the answer")
            })?;
        let token = s
            .email_token
            .ok_or_else(|| unexpected("create_subscription", "no email_token in the answer"))?;
        let record = SubscriptionRecord {
            order_id,
            subscription_code: code.clone(),
            customer_code,
            plan_code,
            authorization_sealed: hex::encode(self.sealer.seal(order_id, AUTH_FIELD, &auth)?),
            email_token_sealed: hex::encode(self.sealer.seal(order_id, TOKEN_FIELD, &token)?),
            paid_until: paid_until(s.next_payment_date.as_deref(), now, now, plan.period),
            state: SubscriptionState::Active,
            lapsed_at: None,
            lapse_reason: None,
        };
        self.store()
            .commit(
                Batch::new()
                    .put_record(RecordWrite::insert(
                        SUBSCRIPTIONS,
                        &order_id.to_string(),
                        &record,
                    )?)
                    .put_record(RecordWrite::insert(CODES, &code, &order_id)?)
                    .put_record(RecordWrite::insert(
                        BY_CUSTOMER_PLAN,
                        &format!("{}:{}", record.customer_code, record.plan_code),
                        &code,
                    )?),
                now,
            )
            .await?;
        Ok(record)
    }

    /// The stored subscription of an order.
    pub async fn get(&self, order_id: OrderId) -> Result<Option<SubscriptionRecord>> {
        Ok(self.load(order_id).await?.map(|(r, _)| r))
    }

    async fn load(&self, order_id: OrderId) -> Result<Option<(SubscriptionRecord, u64)>> {
        match self
            .store()
            .get_record(SUBSCRIPTIONS, &order_id.to_string())
            .await?
        {
            Some(r) => Ok(Some((r.decode()?, r.version))),
            None => Ok(None),
        }
    }

    /// The unsealed reusable authorization code (to charge the card directly).
    pub async fn authorization_code(&self, order_id: OrderId) -> Result<SecretString> {
        let (r, _) = self
            .load(order_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("no subscription for order {order_id}")))?;
        let blob = hex::decode(&r.authorization_sealed)
            .map_err(|_| Error::new(ErrorKind::Unexpected, "sealed authorization is not hex"))?;
        self.sealer.open(order_id, AUTH_FIELD, &blob)
    }

    /// Disables (`enable = false`) or re-enables the subscription on Paystack.
    pub async fn set_enabled(&self, order_id: OrderId, enable: bool) -> Result<()> {
        let (r, _) = self
            .load(order_id)
            .await?
            .ok_or_else(|| Error::not_found(format!("no subscription for order {order_id}")))?;
        let blob = hex::decode(&r.email_token_sealed)
            .map_err(|_| Error::new(ErrorKind::Unexpected, "sealed email token is not hex"))?;
        let token = self.sealer.open(order_id, TOKEN_FIELD, &blob)?;
        let path = if enable {
            "/subscription/enable"
        } else {
            "/subscription/disable"
        };
        let body = json!({ "code": r.subscription_code, "token": token.expose_secret() });
        // Enabling or disabling twice leaves the same state: idempotent.
        self.paystack
            .client
            .post_ok("set_subscription", path, &body, Retry::Safe)
            .await?;
        Ok(())
    }

    /// Authenticates (same signature and allow-list rules as the verifier), dedupes and applies
    /// a subscription-related webhook: renewals extend the period (after a verify call
    /// confirms the renewal charge), failures and cancellations start the grace period.
    pub async fn handle_webhook(&self, request: WebhookRequest<'_>) -> Result<SubscriptionOutcome> {
        self.paystack.check_source(request.headers)?;
        let sig = request.headers.get(SIGNATURE_HEADER).ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthenticated,
                "webhook without x-paystack-signature",
            )
            .with_backend(NAME)
        })?;
        webhook::verify_signature(
            self.paystack.client.key().expose_secret().as_bytes(),
            request.body,
            sig.as_bytes(),
        )?;
        let parsed = webhook::parse_event(request.body)?;
        let now = self.provisioner.now();
        // Paystack's own next charge date, when the payload carries it (invoice events).
        let mut next_payment_date: Option<String> = None;
        let (code, renewal) = match &parsed.payload {
            // A renewal charge names the customer and the plan, not the subscription.
            PaystackEvent::ChargeSuccess(tx) => {
                let (Some(plan), Some(customer)) = (
                    tx.plan_code(),
                    tx.customer
                        .as_ref()
                        .and_then(|c| c.customer_code.as_deref()),
                ) else {
                    return Ok(SubscriptionOutcome::Ignored);
                };
                let code = self
                    .store()
                    .get_record(BY_CUSTOMER_PLAN, &format!("{customer}:{plan}"))
                    .await?
                    .map(|r| r.decode::<String>())
                    .transpose()?;
                (code, Some(tx.reference.clone()))
            }
            PaystackEvent::Invoice(InvoiceStage::Updated, inv) if inv.paid == Some(true) => {
                next_payment_date = inv
                    .subscription
                    .as_ref()
                    .and_then(|s| s.next_payment_date.clone());
                (
                    inv.subscription
                        .as_ref()
                        .and_then(|s| s.subscription_code.clone()),
                    inv.transaction.as_ref().map(|t| t.reference.clone()),
                )
            }
            PaystackEvent::Invoice(InvoiceStage::PaymentFailed, inv) => (
                inv.subscription
                    .as_ref()
                    .and_then(|s| s.subscription_code.clone()),
                None,
            ),
            PaystackEvent::Subscription(
                SubscriptionStage::NotRenewing | SubscriptionStage::Disabled,
                s,
            ) => (s.subscription_code.clone(), None),
            _ => return Ok(SubscriptionOutcome::Ignored),
        };
        let Some(code) = code else {
            return Ok(SubscriptionOutcome::Ignored);
        };
        let Some(order_id) = self
            .store()
            .get_record(CODES, &code)
            .await?
            .map(|r| r.decode::<OrderId>())
            .transpose()?
        else {
            return Ok(SubscriptionOutcome::Ignored);
        };
        let Some((mut record, version)) = self.load(order_id).await? else {
            return Ok(SubscriptionOutcome::Ignored);
        };
        let order = self.provisioner.order(order_id).await?;
        let plan = self.plan(&order)?;
        let outcome = if let Some(reference) = &renewal {
            // Money moved: believe the verify call, not the body.
            let tx = self.paystack.verify(reference).await?;
            let paid = tx
                .amount
                .filter(|_| tx.status == "success" && tx.currency == self.paystack.currency.code())
                .map(|a| Money::from_minor(self.paystack.asset, a));
            if paid != Some(plan.price) {
                return Err(Error::new(
                    ErrorKind::Rejected,
                    format!("renewal {reference} does not verify as {} paid", plan.price),
                )
                .with_backend(NAME));
            }
            let from = if record.paid_until > now {
                record.paid_until
            } else {
                now
            };
            record.paid_until = paid_until(next_payment_date.as_deref(), now, from, plan.period);
            record.lapsed_at = None;
            record.lapse_reason = None;
            if record.state == SubscriptionState::Suspended {
                self.provisioner
                    .request(
                        order_id,
                        LifecycleOp::Unsuspend,
                        Some("subscription renewed"),
                    )
                    .await?;
            }
            record.state = SubscriptionState::Active;
            SubscriptionOutcome::Renewed(order_id, record.paid_until)
        } else {
            if record.lapsed_at.is_none() {
                record.lapsed_at = Some(now);
                record.lapse_reason = Some(parsed.event.clone());
            }
            if record.state == SubscriptionState::Active {
                record.state = SubscriptionState::Lapsing;
            }
            SubscriptionOutcome::Lapsing(order_id)
        };
        // `charge.success` and `invoice.update` both report one renewal: dedupe on its charge.
        let dedupe = match &renewal {
            Some(reference) => format!("renewal:{reference}"),
            None => parsed.dedupe_key.clone(),
        };
        let batch = Batch::new()
            .put_record(RecordWrite::insert(EVENTS, &dedupe, &now)?)
            .put_record(RecordWrite::update(
                SUBSCRIPTIONS,
                &order_id.to_string(),
                &record,
                version,
            )?);
        match self.store().commit(batch, now).await {
            Ok(_) => Ok(outcome),
            Err(e) if e.kind() == ErrorKind::Conflict => {
                if self.store().get_record(EVENTS, &dedupe).await?.is_some() {
                    Ok(SubscriptionOutcome::Duplicate)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Suspends lapsed subscriptions whose grace period is over (and active ones whose paid
    /// period ended more than the grace period ago), and terminates suspended ones after the
    /// termination delay. Call it periodically; returns how many orders it acted on.
    pub async fn enforce(&self) -> Result<usize> {
        let now = self.provisioner.now();
        let mut acted = 0;
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store()
                .list_records(SUBSCRIPTIONS, "", after.as_deref(), 100)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for rec in &page {
                let mut r: SubscriptionRecord = rec.decode()?;
                // Without a lapse event, the end of the paid period is when it lapsed.
                let lapse_start = r.lapsed_at.unwrap_or(r.paid_until);
                let next = match r.state {
                    SubscriptionState::Active | SubscriptionState::Lapsing
                        if now >= lapse_start.saturating_add(self.grace) =>
                    {
                        let order = self.provisioner.order(r.order_id).await?;
                        if order.state == OrderState::Active {
                            self.provisioner
                                .request(
                                    r.order_id,
                                    LifecycleOp::Suspend,
                                    Some("subscription unpaid"),
                                )
                                .await?;
                        }
                        r.lapsed_at.get_or_insert(lapse_start);
                        Some(SubscriptionState::Suspended)
                    }
                    SubscriptionState::Suspended
                        if now
                            >= lapse_start
                                .saturating_add(self.grace)
                                .saturating_add(self.terminate_after) =>
                    {
                        self.provisioner
                            .request(
                                r.order_id,
                                LifecycleOp::Terminate,
                                Some("subscription ended"),
                            )
                            .await?;
                        Some(SubscriptionState::Terminated)
                    }
                    _ => None,
                };
                if let Some(state) = next {
                    r.state = state;
                    self.put(RecordWrite::update(
                        SUBSCRIPTIONS,
                        &rec.key,
                        &r,
                        rec.version,
                    )?)
                    .await?;
                    acted += 1;
                }
            }
        }
        Ok(acted)
    }
}

fn unexpected(operation: &'static str, m: &str) -> Error {
    Error::new(ErrorKind::Unexpected, m.to_owned())
        .with_backend(NAME)
        .with_operation(operation)
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a timestamp (civil-from-days, no calendar crate needed).
fn rfc3339(at: Timestamp) -> String {
    let secs = at.as_unix_secs();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let doe = shifted.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(
            rfc3339(Timestamp::from_unix_secs(0)),
            "1970-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_unix_secs(1_767_225_600)),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            rfc3339(Timestamp::from_unix_secs(951_782_400 + 3661)),
            "2000-02-29T01:01:01Z"
        );
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn periods_are_calendar_months_or_paystacks_next_payment_date() {
        let jan31 = at("2026-01-31T09:00:00Z");
        assert_eq!(
            period_end(jan31, BillingPeriod::Monthly),
            at("2026-02-28T09:00:00Z")
        );
        assert_eq!(
            period_end(at("2027-08-31T09:00:00Z"), BillingPeriod::SemiAnnual),
            at("2028-02-29T09:00:00Z")
        );
        assert_eq!(
            period_end(jan31, BillingPeriod::Annual),
            at("2027-01-31T09:00:00Z")
        );
        let now = jan31;
        let monthly = |next: Option<&str>| paid_until(next, now, jan31, BillingPeriod::Monthly);
        // Paystack's date wins when sane, in its own format.
        assert_eq!(
            monthly(Some("2026-03-01T08:00:00.000Z")),
            at("2026-03-01T08:00:00Z")
        );
        // Absent, garbage, in the past, or a year away: the calendar month.
        for next in [
            None,
            Some(""),
            Some("soon"),
            Some("2026-02-30T00:00:00Z"),
            Some("2025-12-01T00:00:00Z"),
            Some("2027-01-31T00:00:00Z"),
        ] {
            assert_eq!(monthly(next), at("2026-02-28T09:00:00Z"), "{next:?}");
        }
    }

    #[test]
    fn intervals() {
        assert_eq!(interval(BillingPeriod::Monthly).unwrap(), "monthly");
        assert_eq!(interval(BillingPeriod::Annual).unwrap(), "annually");
        let e = interval(BillingPeriod::Quarterly).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        assert!(e.to_string().contains("no quarterly"), "{e}");
    }
}
