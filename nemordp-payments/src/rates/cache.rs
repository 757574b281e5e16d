//! [`CachedRates`]: a TTL cache in front of any [`RateSource`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;

use nemordp_core::{
    Asset, Clock, Currency, Result, SystemClock, Timestamp,
    rates::{Quote, RateSource},
};

type Slot = Arc<tokio::sync::Mutex<Option<(Quote, Timestamp)>>>;

/// Reuses a source's successful quote for `ttl` (measured from when it was fetched), and lets
/// only one caller per pair fetch at a time, so a burst of checkouts makes one upstream call.
/// Failures are not cached: the next caller tries again.
pub struct CachedRates<S> {
    inner: S,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    slots: Mutex<HashMap<(Asset, Currency), Slot>>,
}

impl<S: RateSource> std::fmt::Debug for CachedRates<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedRates")
            .field("inner", &self.inner)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl<S: RateSource> CachedRates<S> {
    /// Caches `inner`'s quotes for `ttl` (BTCPay refreshes every 30 s or so; FX daily).
    pub fn new(inner: S, ttl: Duration) -> Self {
        Self {
            inner,
            ttl,
            clock: Arc::new(SystemClock),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The clock measuring the TTL.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The wrapped source.
    pub fn inner(&self) -> &S {
        &self.inner
    }
}

#[async_trait]
impl<S: RateSource> RateSource for CachedRates<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn quote(&self, base: Asset, quote: Currency) -> Result<Quote> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((base, quote))
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some((q, fetched)) = cached.as_ref()
            && self.clock.now().duration_since(*fetched) < self.ttl
        {
            return Ok(q.clone());
        }
        let q = self.inner.quote(base, quote).await?;
        *cached = Some((q.clone(), self.clock.now()));
        Ok(q)
    }
}
