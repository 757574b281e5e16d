//! Live progress events for dashboards (forward them over SSE or WebSocket).

use std::{
    pin::Pin,
    task::{Context, Poll},
};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{clock::Timestamp, ids::OrderId};

/// Where an order is, for humans. Secret-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// Payment verified.
    Paid,
    /// Intent recorded, about to create.
    Preparing,
    /// Create sent.
    Creating,
    /// Create outcome unknown; looking the machine up by label.
    Reconciling,
    /// The provider accepted the machine.
    Created,
    /// Waiting for the provider to finish installing.
    Booting,
    /// The machine has an address; waiting for RDP to answer.
    WaitingForRdp,
    /// RDP answers; credentials sealed.
    Ready,
    /// Delivered.
    Active,
    /// Needs a human.
    NeedsAttention,
    /// A fraud rule asked for review or rejected the order (the reasons are in the message
    /// and on the order).
    Fraud,
    /// A lifecycle operation ran (restart, stop, start, suspend, unsuspend, terminate).
    Lifecycle,
}

/// One progress event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProgressEvent {
    /// The order.
    pub order_id: OrderId,
    /// The stage reached.
    pub stage: Stage,
    /// Rough completion in percent (0–100).
    pub percent: u8,
    /// A short human message (never a secret).
    pub message: String,
    /// When.
    pub at: Timestamp,
}

/// A stream of [`ProgressEvent`]s from [`Provisioner::subscribe`](super::Provisioner::subscribe).
///
/// A slow subscriber that falls more than the channel capacity behind skips the oldest
/// events (and is told how many via [`ProgressStream::missed`]) rather than slowing
/// provisioning down.
#[derive(Debug)]
pub struct ProgressStream {
    inner: tokio_stream::wrappers::BroadcastStream<ProgressEvent>,
    missed: u64,
}

impl ProgressStream {
    pub(crate) fn new(rx: broadcast::Receiver<ProgressEvent>) -> Self {
        Self {
            inner: tokio_stream::wrappers::BroadcastStream::new(rx),
            missed: 0,
        }
    }

    /// Events skipped because this subscriber lagged.
    pub fn missed(&self) -> u64 {
        self.missed
    }

    /// The next event, or `None` when the provisioner is gone.
    pub async fn next(&mut self) -> Option<ProgressEvent> {
        futures::StreamExt::next(self).await
    }
}

impl futures::Stream for ProgressStream {
    type Item = ProgressEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ProgressEvent>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(e))) => return Poll::Ready(Some(e)),
                Poll::Ready(Some(Err(
                    tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n),
                ))) => {
                    self.missed += n;
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
