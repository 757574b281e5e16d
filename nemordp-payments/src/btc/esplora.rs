//! Esplora REST client (blockstream.info, mempool.space, self-hosted electrs): the few calls
//! payment detection needs, a shared request limiter, `Retry-After` handling and defensive
//! parsing (a 429 notice or an HTML error page never reads as "nothing received").

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, SystemTime},
};

use reqwest::{StatusCode, header::RETRY_AFTER};
use serde::Deserialize;
use tokio::{
    sync::{Semaphore, SemaphorePermit},
    time::Instant,
};

use nemordp_core::{Error, ErrorKind, Result};

use super::NAME;

/// Confirmed transactions per page of `/address/:a/txs` and `/txs/chain/:last`.
const CHAIN_PAGE: usize = 25;
/// `/address/:a/txs` returns at most this many mempool transactions and cannot page them.
const MEMPOOL_CAP: usize = 50;

/// How often and how hard the client may call the explorer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Budget {
    /// Least time between two requests started by this client (all requests share it).
    pub(crate) min_spacing: Duration,
    /// Requests in flight at once.
    pub(crate) max_in_flight: usize,
    /// Extra attempts after a 429, a 5xx or a transport failure.
    pub(crate) max_retries: u32,
    /// First backoff when a 429/5xx came without `Retry-After`; doubled per attempt.
    pub(crate) backoff_base: Duration,
    /// Longest single pause, whatever `Retry-After` says.
    pub(crate) max_wait: Duration,
    /// Most pages of confirmed history read for one address.
    pub(crate) max_chain_pages: usize,
}

/// Paces every request of one client: a minimum spacing between starts, a cap on requests in
/// flight, and a shared pause after the explorer throttled us, so thousands of pending
/// payments queue here instead of hammering the explorer.
#[derive(Debug)]
pub(crate) struct Limiter {
    spacing: Duration,
    in_flight: Semaphore,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    /// Earliest start of the next request.
    next_start: Instant,
    /// No request starts before this (set by 429 / `Retry-After`).
    paused_until: Instant,
}

impl Limiter {
    pub(crate) fn new(spacing: Duration, max_in_flight: usize) -> Self {
        let now = Instant::now();
        Self {
            spacing,
            in_flight: Semaphore::new(max_in_flight.max(1)),
            state: Mutex::new(LimiterState {
                next_start: now,
                paused_until: now,
            }),
        }
    }

    /// Waits for a slot; the permit bounds requests in flight until dropped.
    pub(crate) async fn acquire(&self) -> Result<SemaphorePermit<'_>> {
        let permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| Error::unavailable("esplora limiter closed").with_backend(NAME))?;
        loop {
            let start = {
                let mut s = self
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                let start = now.max(s.next_start).max(s.paused_until);
                s.next_start = start + self.spacing;
                start
            };
            tokio::time::sleep_until(start).await;
            // A 429 seen by another request while we slept pushes everyone back.
            let paused_until = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .paused_until;
            if paused_until <= Instant::now() {
                return Ok(permit);
            }
        }
    }

    /// Pauses every request of this client for `wait`.
    pub(crate) fn pause(&self, wait: Duration) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = Instant::now() + wait;
        if until > s.paused_until {
            s.paused_until = until;
        }
    }
}

/// An Esplora transaction, reduced to what accounting reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct EsploraTx {
    pub(crate) txid: String,
    pub(crate) vout: Vec<EsploraOutput>,
    pub(crate) status: TxStatus,
}

/// One output of an Esplora transaction.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct EsploraOutput {
    /// Output script, hex.
    pub(crate) scriptpubkey: String,
    /// Absent for non-standard scripts.
    #[serde(default)]
    pub(crate) scriptpubkey_address: Option<String>,
    /// Satoshis.
    pub(crate) value: u64,
}

/// Confirmation status of a transaction.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TxStatus {
    pub(crate) confirmed: bool,
    #[serde(default)]
    pub(crate) block_height: Option<u64>,
    #[serde(default)]
    pub(crate) block_hash: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BlockStatus {
    in_best_chain: bool,
}

/// One failed exchange.
enum Failure {
    /// Retry after the given wait (throttled, 5xx, transport).
    Retry(Error, Option<Duration>),
    /// Do not retry.
    Fatal(Error),
}

type BlockSlot = std::sync::Arc<tokio::sync::Mutex<Option<(bool, Instant)>>>;

/// The Esplora client.
#[derive(Debug)]
pub(crate) struct Esplora {
    http: reqwest::Client,
    base_url: String,
    budget: Budget,
    limiter: Limiter,
    /// `(tip height, fetched at)`, shared by every check within `tip_ttl`.
    tip: tokio::sync::Mutex<Option<(u64, Instant)>>,
    tip_ttl: Duration,
    /// Block hash → (in best chain, checked at), kept for `tip_ttl`.
    /// One slot per hash, so concurrent checks of payments in one block make one request.
    blocks: Mutex<HashMap<String, BlockSlot>>,
}

impl Esplora {
    pub(crate) fn new(
        http: reqwest::Client,
        base_url: &str,
        budget: Budget,
        tip_ttl: Duration,
    ) -> Self {
        Self {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            limiter: Limiter::new(budget.min_spacing, budget.max_in_flight),
            budget,
            tip: tokio::sync::Mutex::new(None),
            tip_ttl,
            blocks: Mutex::new(HashMap::new()),
        }
    }

    async fn attempt(
        &self,
        operation: &'static str,
        path: &str,
    ) -> std::result::Result<Vec<u8>, Failure> {
        let _permit = self.limiter.acquire().await.map_err(Failure::Fatal)?;
        let resp = match self
            .http
            .get(format!("{}{path}", self.base_url))
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "transport error"
                };
                return Err(Failure::Retry(
                    Error::unavailable(format!("esplora {what}")).with_source(e.without_url()),
                    None,
                ));
            }
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = resp.bytes().await.map_err(|e| {
            Failure::Retry(
                Error::unavailable("esplora response body broken").with_source(e.without_url()),
                None,
            )
        })?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        // Error bodies are plain text (or an HTML page from a proxy): quote a little of it.
        let text: String = String::from_utf8_lossy(&bytes)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let msg = format!("http {}: {}", status.as_u16(), text.trim());
        Err(match status {
            StatusCode::TOO_MANY_REQUESTS => Failure::Retry(
                Error::rate_limited(msg, retry_after),
                Some(retry_after.unwrap_or(Duration::ZERO)),
            ),
            s if s.is_server_error() => Failure::Retry(Error::unavailable(msg), retry_after),
            StatusCode::NOT_FOUND => Failure::Fatal(Error::not_found(msg)),
            StatusCode::BAD_REQUEST => Failure::Fatal(Error::invalid_input(msg)),
            _ => Failure::Fatal(Error::new(ErrorKind::Rejected, msg)),
        }
        .map_op(operation))
    }

    /// `GET path` under the budget: throttling pauses the whole client, bounded retries.
    async fn get_bytes(&self, operation: &'static str, path: &str) -> Result<Vec<u8>> {
        let mut attempt = 0_u32;
        loop {
            match self.attempt(operation, path).await {
                Ok(b) => return Ok(b),
                Err(Failure::Fatal(e)) => {
                    return Err(e.with_backend(NAME).with_operation(operation));
                }
                Err(Failure::Retry(e, asked)) => {
                    if attempt >= self.budget.max_retries {
                        return Err(e.with_backend(NAME).with_operation(operation));
                    }
                    let backoff = self
                        .budget
                        .backoff_base
                        .saturating_mul(2_u32.saturating_pow(attempt.min(16)));
                    let wait = asked
                        .filter(|d| !d.is_zero())
                        .unwrap_or(backoff)
                        .min(self.budget.max_wait);
                    if e.kind() == ErrorKind::RateLimited {
                        // Everyone waits: the explorer throttles per client IP, not per call.
                        self.limiter.pause(wait);
                    } else {
                        tokio::time::sleep(wait).await;
                    }
                    tracing::debug!(backend = NAME, operation, attempt, wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX), error = %e, "retrying esplora request");
                    attempt += 1;
                }
            }
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(
        &self,
        operation: &'static str,
        path: &str,
    ) -> Result<T> {
        let bytes = self.get_bytes(operation, path).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("unreadable esplora response: {e}"),
            )
            .with_backend(NAME)
            .with_operation(operation)
        })
    }

    /// The best chain's height, cached for `tip_ttl` across all checks.
    pub(crate) async fn tip_height(&self) -> Result<u64> {
        let mut tip = self.tip.lock().await;
        if let Some((h, at)) = *tip
            && at.elapsed() < self.tip_ttl
        {
            return Ok(h);
        }
        let bytes = self.get_bytes("tip_height", "/blocks/tip/height").await?;
        let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
        let h: u64 = text.parse().map_err(|_| {
            Error::new(
                ErrorKind::Unexpected,
                format!(
                    "tip height is not a number: {:?}",
                    text.chars().take(40).collect::<String>()
                ),
            )
            .with_backend(NAME)
            .with_operation("tip_height")
        })?;
        *tip = Some((h, Instant::now()));
        Ok(h)
    }

    /// Whether `hash` is in the best chain (`/block/:hash/status`), cached for `tip_ttl`.
    pub(crate) async fn in_best_chain(&self, hash: &str) -> Result<bool> {
        if !is_hex64(hash) {
            return Err(unexpected(
                "block_status",
                format!("block hash {hash:?} is not 64 hex digits"),
            ));
        }
        let slot = {
            let mut cache = self
                .blocks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if cache.len() > 10_000 {
                cache.retain(|_, slot| {
                    slot.try_lock().map_or(true, |s| {
                        s.is_some_and(|(_, at)| at.elapsed() < self.tip_ttl)
                    })
                });
            }
            cache.entry(hash.to_owned()).or_default().clone()
        };
        let mut entry = slot.lock().await;
        if let Some((best, at)) = *entry
            && at.elapsed() < self.tip_ttl
        {
            return Ok(best);
        }
        let status: BlockStatus = self
            .get_json("block_status", &format!("/block/{hash}/status"))
            .await?;
        *entry = Some((status.in_best_chain, Instant::now()));
        Ok(status.in_best_chain)
    }

    /// Every transaction touching `address` (validated by the caller): the mempool ones and the
    /// whole confirmed history, paging `/txs/chain/:last_seen_txid`.
    pub(crate) async fn address_txs(&self, address: &str) -> Result<Vec<EsploraTx>> {
        const OP: &str = "address_txs";
        let first: Vec<EsploraTx> = self
            .get_json(OP, &format!("/address/{address}/txs"))
            .await?;
        validate(OP, &first)?;
        let mempool = first.iter().filter(|t| !t.status.confirmed).count();
        if mempool >= MEMPOOL_CAP {
            tracing::warn!(
                backend = NAME,
                address,
                "50 or more unconfirmed transactions: esplora shows only 50"
            );
        }
        let mut chain_page = first.len() - mempool;
        let mut all = first;
        let mut pages = 1;
        while chain_page >= CHAIN_PAGE {
            if pages >= self.budget.max_chain_pages {
                return Err(unexpected(
                    OP,
                    format!(
                        "{address} has more than {} confirmed transactions",
                        pages * CHAIN_PAGE
                    ),
                ));
            }
            let last = all
                .iter()
                .rev()
                .find(|t| t.status.confirmed)
                .map(|t| t.txid.clone())
                .unwrap_or_default();
            let page: Vec<EsploraTx> = self
                .get_json(OP, &format!("/address/{address}/txs/chain/{last}"))
                .await?;
            validate(OP, &page)?;
            if page.iter().any(|t| !t.status.confirmed) {
                return Err(unexpected(
                    OP,
                    "an unconfirmed transaction in the confirmed history",
                ));
            }
            chain_page = page.len();
            let before = all.len();
            for t in page {
                if !all.iter().any(|a| a.txid == t.txid) {
                    all.push(t);
                }
            }
            if all.len() == before {
                break; // the explorer repeated a page
            }
            pages += 1;
        }
        Ok(all)
    }
}

trait MapOp {
    fn map_op(self, operation: &'static str) -> Self;
}

impl MapOp for Failure {
    fn map_op(self, operation: &'static str) -> Self {
        match self {
            Failure::Retry(e, w) => {
                Failure::Retry(e.with_backend(NAME).with_operation(operation), w)
            }
            Failure::Fatal(e) => Failure::Fatal(e.with_backend(NAME).with_operation(operation)),
        }
    }
}

fn unexpected(operation: &'static str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::Unexpected, message)
        .with_backend(NAME)
        .with_operation(operation)
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Rejects transactions whose shape would make accounting meaningless.
fn validate(operation: &'static str, txs: &[EsploraTx]) -> Result<()> {
    for t in txs {
        if !is_hex64(&t.txid) {
            return Err(unexpected(
                operation,
                format!("txid {:?} is not 64 hex digits", t.txid),
            ));
        }
        if t.status.confirmed && (t.status.block_height.is_none() || t.status.block_hash.is_none())
        {
            return Err(unexpected(
                operation,
                format!("confirmed tx {} without block height/hash", t.txid),
            ));
        }
    }
    Ok(())
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (a date in the past means no wait).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_requests_and_pauses_everyone() {
        let l = Limiter::new(Duration::from_millis(250), 4);
        let t0 = Instant::now();
        for _ in 0..4 {
            drop(l.acquire().await.unwrap());
        }
        assert_eq!(t0.elapsed(), Duration::from_millis(750));
        l.pause(Duration::from_secs(30));
        drop(l.acquire().await.unwrap());
        assert!(t0.elapsed() >= Duration::from_millis(30_750));
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("later", now), None);
    }

    #[test]
    fn tx_shape_is_validated() {
        let ok: Vec<EsploraTx> = serde_json::from_str(&format!(
            r#"[{{"txid":"{}","vout":[],"status":{{"confirmed":false}}}}]"#,
            "a".repeat(64)
        ))
        .unwrap();
        assert!(validate("t", &ok).is_ok());
        let bad: Vec<EsploraTx> = serde_json::from_str(&format!(
            r#"[{{"txid":"{}","vout":[],"status":{{"confirmed":true}}}}]"#,
            "a".repeat(64)
        ))
        .unwrap();
        assert!(validate("t", &bad).is_err());
        // A throttling notice is not a transaction list.
        assert!(serde_json::from_str::<Vec<EsploraTx>>("Too Many Requests").is_err());
    }
}
