//! The outbox relay: delivers queued notifications at least once, unsealing credentials only
//! for the moment of sending.

use std::time::Duration;

use crate::{
    error::{ErrorKind, Result},
    notify::{Notification, NotificationKind},
    store::{OutboxEntry, StoreExt},
};

use super::Provisioner;

impl Provisioner {
    /// Claims due outbox entries and delivers them. Returns how many were delivered.
    pub async fn relay_outbox_once(&self) -> Result<usize> {
        let store = &self.inner.store;
        let cfg = &self.inner.config;
        let entries = store
            .claim_outbox(cfg.outbox_batch, Duration::from_secs(60), self.now())
            .await?;
        let mut delivered = 0;
        for entry in entries {
            match self.deliver_entry(&entry).await {
                Ok(()) => {
                    store.mark_outbox_delivered(entry.id, self.now()).await?;
                    delivered += 1;
                }
                Err(e) => {
                    // At most an hour between attempts; a permanent refusal still gets retried
                    // slowly so an operator can fix the address and see it go out.
                    let base = if e.kind() == ErrorKind::Rejected {
                        Duration::from_secs(3600)
                    } else {
                        Duration::from_secs(5)
                    };
                    let wait = base
                        .saturating_mul(1u32 << entry.attempts.min(10))
                        .min(Duration::from_secs(3600))
                        .max(e.retry_after().unwrap_or_default());
                    tracing::warn!(order_id = %entry.order_id, kind = entry.kind.as_str(), error = %e, "notification failed; will retry");
                    store
                        .retry_outbox(entry.id, self.now().saturating_add(wait), &e.to_string())
                        .await?;
                }
            }
        }
        Ok(delivered)
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
