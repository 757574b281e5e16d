//! The outbox relay: delivers queued notifications at least once, unsealing credentials only
//! for the moment of sending. A notification that keeps failing until
//! [`ProvisionerConfig::outbox_deadline`](super::ProvisionerConfig::outbox_deadline), or that
//! the channel refuses for good, is marked failed with its history, never dropped.

use std::{collections::HashMap, time::Duration};

use futures::StreamExt as _;

use crate::{
    error::{Error, ErrorKind, Result},
    ids::{NotificationId, OrderId},
    notify::{Notification, NotificationKind},
    store::{OrderRecords, OutboxEntry},
};

use super::Provisioner;

/// How long a claimed entry is leased to this relay before another may take it.
const OUTBOX_LEASE: Duration = Duration::from_secs(60);

impl Provisioner {
    /// Claims due outbox entries and delivers them. Returns how many were delivered.
    ///
    /// Rows of different orders go out concurrently (at most
    /// [`ProvisionerConfig::outbox_concurrency`](super::ProvisionerConfig::outbox_concurrency)
    /// at once); the rows of one order go out one after another, oldest first. The round reads
    /// its orders in one call and marks what it sent in one call at its end (a crash before
    /// that sends those rows again: delivery is at least once either way).
    pub async fn relay_outbox_once(&self) -> Result<usize> {
        let store = &self.inner.store;
        let cfg = &self.inner.config;
        let entries = store
            .claim_outbox(cfg.outbox_batch, OUTBOX_LEASE, self.now())
            .await?;
        if entries.is_empty() {
            return Ok(0);
        }
        let mut groups: Vec<Vec<OutboxEntry>> = Vec::new();
        let mut group_of: HashMap<OrderId, usize> = HashMap::new();
        for entry in entries {
            let i = *group_of.entry(entry.order_id).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[i].push(entry);
        }
        let order_ids: Vec<OrderId> = group_of.keys().copied().collect();
        let orders: HashMap<OrderId, OrderRecords> = store
            .get_order_records(&order_ids)
            .await?
            .into_iter()
            .map(|r| (r.order.id, r))
            .collect();
        let rounds: Vec<(Vec<NotificationId>, Option<Error>)> = futures::stream::iter(
            groups
                .into_iter()
                .map(|group| self.deliver_group(group, &orders)),
        )
        .buffer_unordered(cfg.outbox_concurrency.max(1))
        .collect()
        .await;
        let mut delivered = Vec::new();
        let mut first_error = None;
        for (ids, error) in rounds {
            delivered.extend(ids);
            if let Some(e) = error {
                first_error.get_or_insert(e);
            }
        }
        // Every group ran to its end before an error is reported, so one store failure does
        // not strand the sent rows unmarked.
        store
            .mark_outbox_delivered_many(&delivered, self.now())
            .await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(delivered.len()),
        }
    }

    /// Delivers one order's claimed rows in order; returns the ids sent, and the store error
    /// that stopped the group early, if one did.
    async fn deliver_group(
        &self,
        group: Vec<OutboxEntry>,
        orders: &HashMap<OrderId, OrderRecords>,
    ) -> (Vec<NotificationId>, Option<Error>) {
        let mut delivered = Vec::with_capacity(group.len());
        for entry in group {
            let sent = match orders.get(&entry.order_id) {
                Some(records) => self.deliver_entry(&entry, records).await,
                None => Err(Error::not_found(format!(
                    "order {} not found",
                    entry.order_id
                ))),
            };
            match sent {
                Ok(()) => {
                    metrics::counter!("nemordp_notifications_total", "result" => "delivered", "kind" => entry.kind.as_str()).increment(1);
                    delivered.push(entry.id);
                }
                Err(e) => {
                    if let Err(stored) = self.record_delivery_failure(&entry, &e).await {
                        return (delivered, Some(stored));
                    }
                }
            }
        }
        (delivered, None)
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

    async fn deliver_entry(&self, entry: &OutboxEntry, records: &OrderRecords) -> Result<()> {
        let mut n = Notification::new(
            entry.id,
            entry.order_id,
            records.order.customer.clone(),
            entry.kind.clone(),
        );
        if matches!(entry.kind, NotificationKind::Ready) {
            n = n.with_connection(self.connection_details_from(
                entry.order_id,
                records.credentials.clone(),
                records.instance.clone(),
            )?);
        }
        self.inner.notifier.send(&n).await.map(drop)
    }
}
