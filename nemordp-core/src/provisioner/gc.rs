//! Orphan reconciliation: machines carrying our label that no order owns.
//!
//! The provider is listed *before* the store is read (as Karpenter does), so the store is the
//! fresher view and an instance created between the two reads is never mistaken for an orphan.

use crate::{
    clock::Timestamp,
    cloud::{CloudProviderExt, Instance},
    error::Result,
    ids::{InstanceId, LABEL_PREFIX, OrderId},
    order::OrderState,
};

use super::Provisioner;

/// What to do with orphans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OrphanPolicy {
    /// Only report them.
    Report,
    /// Remove them, preferring reuse: each is first offered to the provider's
    /// [`CloudProvider::retain_for_reuse`] (Contabo with a reuse pool keeps it for the next
    /// order's reinstall); only if the provider declines is it deleted (or cancelled: on
    /// providers that bill by contract, [`Removal::Cancel`], that forfeits the paid term).
    ///
    /// [`CloudProvider::retain_for_reuse`]: crate::cloud::CloudProvider::retain_for_reuse
    /// [`Removal::Cancel`]: crate::cloud::Removal::Cancel
    Delete,
}

/// An instance that carries our label but that no live order owns.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Orphan {
    /// Provider name.
    pub provider: &'static str,
    /// Provider instance id.
    pub instance_id: InstanceId,
    /// Its label.
    pub label: String,
    /// The order its label names, if it parses.
    pub order_id: Option<OrderId>,
    /// Why it counts as an orphan.
    pub why: &'static str,
    /// Whether it was removed in this run.
    pub removed: bool,
    /// Whether the provider kept it for reuse instead (see
    /// [`CloudProvider::retain_for_reuse`](crate::cloud::CloudProvider::retain_for_reuse)).
    pub recycled: bool,
}

impl Provisioner {
    /// Lists every registered provider's `nemordp-` instances, finds those no order owns and
    /// that are older than the orphan grace period, and applies `policy`.
    pub async fn reconcile_orphans(&self, policy: OrphanPolicy) -> Result<Vec<Orphan>> {
        let mut out = Vec::new();
        for (name, provider) in &self.inner.providers {
            let instances: Vec<Instance> = provider.list_all_instances().await?;
            let now = self.now();
            for inst in instances {
                if !inst.label.starts_with(LABEL_PREFIX) {
                    continue;
                }
                let old_enough = inst.created_at.is_none_or(|c: Timestamp| {
                    now.duration_since(c) >= self.inner.config.orphan_grace
                });
                if !old_enough {
                    continue;
                }
                let order_id = OrderId::from_instance_label(&inst.label);
                let why = match order_id {
                    None => Some("label names no order"),
                    Some(id) => self.orphan_reason(id, &inst.id).await?,
                };
                let Some(why) = why else { continue };
                let (mut removed, mut recycled) = (false, false);
                if policy == OrphanPolicy::Delete {
                    // Reuse beats removal where the provider offers it (a Contabo machine is a
                    // paid contract: reinstalling it saves ordering another).
                    recycled = provider.retain_for_reuse(&inst.id).await?;
                    if !recycled {
                        provider.delete_instance(&inst.id).await?;
                        removed = true;
                    }
                }
                tracing::warn!(provider = name, instance = %inst.id, label = %inst.label, why, removed, recycled, "orphan instance");
                metrics::counter!("nemordp_orphans_total", "provider" => *name).increment(1);
                out.push(Orphan {
                    provider: name,
                    instance_id: inst.id,
                    label: inst.label,
                    order_id,
                    why,
                    removed,
                    recycled,
                });
            }
        }
        Ok(out)
    }

    async fn orphan_reason(
        &self,
        order_id: OrderId,
        instance: &InstanceId,
    ) -> Result<Option<&'static str>> {
        let store = &self.inner.store;
        let Some(order) = store.get_order(order_id).await? else {
            return Ok(Some("no such order"));
        };
        if matches!(order.state, OrderState::Terminated | OrderState::Expired) {
            return Ok(Some("order is terminated or expired"));
        }
        match store.get_instance(order_id).await? {
            None => Ok(Some("order never recorded a machine")),
            Some(rec) => match &rec.instance_id {
                Some(owned) if owned != instance => {
                    Ok(Some("a duplicate: the order owns another machine"))
                }
                // Create still unresolved: the provisioner will adopt it.
                _ => Ok(None),
            },
        }
    }
}
