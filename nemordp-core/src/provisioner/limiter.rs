//! A provider-wide request rate limiter shared by every in-flight order (GCRA, i.e. a token
//! bucket expressed as a "theoretical arrival time"), on Tokio's clock so paused-clock tests
//! and benchmarks see it too.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

/// Spaces requests at least `1 / per_second` apart, with an optional burst.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    burst_allowance: Duration,
    next_free: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `per_second` requests per second (0 disables limiting); `burst` requests may go at once
    /// after an idle period (1 = strictly spaced, which never trips an upstream bucket of the
    /// same rate).
    pub fn new(per_second: u32, burst: u32) -> Self {
        let interval = if per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(1_000_000_000 / u64::from(per_second))
        };
        Self {
            interval,
            burst_allowance: interval * burst.saturating_sub(1),
            next_free: Mutex::new(None),
        }
    }

    /// Waits for a slot. Cancel-safe: a dropped wait still consumes its slot, which only makes
    /// the limiter more conservative.
    pub async fn acquire(&self) {
        if self.interval.is_zero() {
            return;
        }
        let now = Instant::now();
        let start = {
            let mut next = self
                .next_free
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let tat = next.unwrap_or(now).max(now);
            let start = tat
                .checked_sub(self.burst_allowance)
                .map_or(now, |s| s.max(now));
            *next = Some(tat + self.interval);
            start
        };
        if start > now {
            tokio::time::sleep_until(start).await;
        }
    }

    /// Pushes every future request back by `wait` (after a 429 with `Retry-After`).
    pub fn back_off(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut next = self
            .next_free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if next.is_none_or(|n| n < until) {
            *next = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests() {
        let l = std::sync::Arc::new(RateLimiter::new(30, 1));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..90 {
            let l = l.clone();
            tasks.push(tokio::spawn(async move {
                l.acquire().await;
                Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap());
        }
        times.sort();
        // No one-second window holds more than 30 requests.
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_window <= 30, "{in_window} requests within 1 s");
        }
        assert!(times.last().unwrap().duration_since(start) >= Duration::from_millis(2900));
    }

    #[tokio::test(start_paused = true)]
    async fn back_off_delays_everyone() {
        let l = RateLimiter::new(10, 1);
        l.back_off(Duration::from_secs(5));
        let start = Instant::now();
        l.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(5));
        let unlimited = RateLimiter::new(0, 1);
        let t = Instant::now();
        unlimited.acquire().await;
        assert_eq!(t.elapsed(), Duration::ZERO);
    }
}
