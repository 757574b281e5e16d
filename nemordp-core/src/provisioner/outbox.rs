//! The outbox relay: delivers queued notifications at least once, unsealing credentials only
//! for the moment of sending. A notification that keeps failing until
//! [`ProvisionerConfig::outbox_deadline`](super::ProvisionerConfig::outbox_deadline), or that
//! the channel refuses for good, is marked failed with its history, never dropped.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt as _;

use crate::{
    error::{Error, ErrorKind, Result},
    ids::OrderId,
    notify::{Notification, NotificationKind},
    store::{OutboxEntry, StoreExt},
};

use super::Provisioner;

/// How long a claimed entry is leased to this relay before another may take it.
const OUTBOX_LEASE: Duration = Duration::from_secs(60);

impl Provisioner {
    /// Claims due outbox entries and delivers them. Returns how many were delivered.
    ///
    /// Rows of different orders go out concurrently (at most
    /// [`ProvisionerConfig::outbox_concurrency`](super::ProvisionerConfig::outbox_concurrency)
    /// at once); the rows of one order go out one after another, oldest first.
    pub async fn relay_outbox_once(&self) -> Result<usize> {
        let store = &self.inner.store;
        let cfg = &self.inner.config;
        let entries = store
            .claim_outbox(cfg.outbox_batch, OUTBOX_LEASE, self.now())
            .await?;
        let mut groups: Vec<Vec<OutboxEntry>> = Vec::new();
        let mut group_of: HashMap<OrderId, usize> = HashMap::new();
        for entry in entries {
            let i = *group_of.entry(entry.order_id).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(entry);
        }
        let rounds: Vec<Result<usize>> =
            futures::stream::iter(groups.into_iter().map(|group| self.deliver_group(group)))
                .buffer_unordered(cfg.outbox_concurrency.max(1))
                .collect()
                .await;
        let mut delivered = 0;
        let mut first_error = None;
        for round in rounds {
            match round {
                Ok(n) => delivered += n,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        // Every group ran to its end before an error is reported, so one store failure does
        // not strand the other groups' sent rows unmarked.
        match first_error {
            Some(e) => Err(e),
            None => Ok(delivered),
        }
    }

    /// Delivers one order's claimed rows in order.
    async fn deliver_group(&self, group: Vec<OutboxEntry>) -> Result<usize> {
        let store = &self.inner.store;
        let mut delivered = 0;
        for entry in group {
            match self.deliver_entry(&entry).await {
                Ok(()) => {
                    store.mark_outbox_delivered(entry.id, self.now()).await?;
                    metrics::counter!("nemordp_notifications_total", "result" => "delivered", "kind" => entry.kind.as_str()).increment(1);
                    delivered += 1;
                }
                Err(e) => self.record_delivery_failure(&entry, &e).await?,
            }
        }
        Ok(delivered)
    }

    /// Reschedules a failed delivery with backoff, or gives up on it.
    async fn record_delivery_failure(&self, entry: &OutboxEntry, e: &Error) -> Result<()> {
        let store = &self.inner.store;
        let now = self.now();
        let age = now.duration_since(entry.created_at);
        // A refusal (bad address, a 4xx other than 408/429) will not change by retrying. Other
        // errors, a misconfiguration included, are retried until the deadline so fixing the
        // cause sends the notice.
        let permanent = e.kind() == ErrorKind::Rejected;
        if permanent || age >= self.inner.config.outbox_deadline {
            tracing::error!(
                order_id = %entry.order_id,
                notification_id = %entry.id,
                kind = entry.kind.as_str(),
                attempts = entry.attempts,
                error = %e,
                "notification failed; giving up (see the outbox entry's history)"
            );
            metrics::counter!("nemordp_notifications_total", "result" => "failed", "kind" => entry.kind.as_str()).increment(1);
            return store.fail_outbox(entry.id, &e.to_string(), now).await;
        }
        // 5 s doubling to an hour, at least what the channel asked for.
        let wait = Duration::from_secs(5)
            .saturating_mul(1u32 << entry.attempts.saturating_sub(1).min(10))
            .min(Duration::from_secs(3600))
            .max(e.retry_after().unwrap_or_default());
        tracing::warn!(
            order_id = %entry.order_id,
            notification_id = %entry.id,
            kind = entry.kind.as_str(),
            attempts = entry.attempts,
            error = %e,
            retry_in_s = wait.as_secs(),
            "notification failed; will retry"
        );
        metrics::counter!("nemordp_notifications_total", "result" => "retry", "kind" => entry.kind.as_str()).increment(1);
        store
            .retry_outbox(entry.id, now.saturating_add(wait), &e.to_string(), now)
            .await
    }

    async fn deliver_entry(&self, entry: &OutboxEntry) -> Result<()> {
        let order = self.inner.store.require_order(entry.order_id).await?;
        let mut n = Notification::new(
            entry.id,
            entry.order_id,
            order.customer.clone(),
            entry.kind.clone(),
        );
        if matches!(entry.kind, NotificationKind::Ready) {
            n = n.with_connection(self.connection_details(entry.order_id).await?);
        }
        self.inner.notifier.send(&n).await.map(drop)
    }
}
