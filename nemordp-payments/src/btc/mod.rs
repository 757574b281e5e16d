//! Bitcoin payments through an Esplora explorer (feature `btc`).
//!
//! [`BtcVerifier`] implements [`PaymentVerifier`] for [`Asset::Btc`] (amounts in satoshi):
//!
//! - **A fresh address per payment request**, derived from the merchant's account-level
//!   extended public key (`xpub`/`zpub`, BIP84 native segwit P2WPKH) on the receive chain
//!   `0/i`. The library never sees a private key: the merchant's wallet holds the funds.
//! - **Indexes are reserved in the [`Store`]** with [`Store::reserve_index`] under the scope
//!   `btc/<network>/<key id>/0` and the payment id as claimant, so two concurrent requests
//!   (even in two processes) never share an address, and re-opening the same payment id gives
//!   the same index and address back (`open` is idempotent).
//! - **Transaction-level accounting**: every `check` lists the address's transactions
//!   (`/address/:a/txs`, paging the confirmed history), sums per txid the outputs whose
//!   script is exactly our P2WPKH script, and counts an output as confirmed when
//!   `tip − block_height + 1 ≥` the configured depth (default 1) *and* its block is still in
//!   the best chain (`/block/:hash/status`). Address balances and `funded_txo_sum` are never
//!   used. A transaction that vanishes (RBF replacement, double spend, reorg) is simply no
//!   longer counted, so the cumulative [`Observation`] drops and the invoice state machine
//!   moves the request back (processing → new / paid-partial).
//! - **A polling budget**: every request of one verifier goes through one limiter (minimum
//!   spacing between requests, default 250 ms; a cap on requests in flight; a shared pause
//!   after a 429 honouring `Retry-After`, else exponential backoff; bounded retries). The tip
//!   height is cached for a few seconds and shared by all checks, so a check costs one call
//!   (plus one `/block/:hash/status` per fresh block). With the defaults, 1,000 pending
//!   requests take about 250 s per polling round; poll less often or self-host electrs for
//!   more.
//! - **Fallback explorers** ([`BtcBuilder::with_fallback_esplora_url`],
//!   `ESPLORA_FALLBACK_URLS`): when the primary still fails after its retries, the next one
//!   answers the whole check; totals never mix two explorers' views. A failure of all of them
//!   is an error, never "nothing received".
//!
//! # Gap limit
//!
//! Indexes are handed out in order 0, 1, 2, … and never reused (an expired request may still
//! be paid late, so its address stays its own). Most requests expire unpaid, so the
//! merchant's wallet sees long runs of unused addresses; wallets stop scanning after a *gap
//! limit* of consecutive unused addresses (20 by default in BIP44 wallets) and would miss
//! later payments. The verifier records the highest index that ever received money (record
//! collection `btc.scope`) and logs a warning when a new index is more than
//! [`BtcBuilder::with_gap_limit`] (default 20) past it; [`BtcVerifier::highest_paid_index`]
//! reports it. The merchant must raise the wallet's gap limit above the expected number
//! of consecutive unpaid requests (Electrum: `wallet.change_gap_limit(200)`; Sparrow and
//! BlueWallet have a setting), or sweep with a wallet that scans the indexes recorded here
//! (each request's index is stored in collection `btc.address`).
//!
//! # Webhooks
//!
//! Esplora has no webhooks. [`PaymentVerifier::parse_webhook`] accepts an optional *nudge*
//! from the host's own tooling (a `walletnotify`/`blocknotify` script, a mempool watcher): a
//! JSON body `{"address": "<bc1…>"}` signed with HMAC-SHA256 under the configured webhook
//! secret in the header `x-nemordp-btc-signature: sha256=<hex>`. The body carries no amounts:
//! the verifier re-reads the address from Esplora and reports what the chain says, so a
//! forged or replayed nudge can at most cause one extra check.
//!
//! ```no_run
//! # async fn demo() -> nemordp_core::Result<()> {
//! use std::sync::Arc;
//! use nemordp_core::sim::store::MemoryStore;
//! use nemordp_payments::btc::BtcBuilder;
//!
//! let verifier = BtcBuilder::from_env() // ESPLORA_URL, BTC_XPUB, BTC_NETWORK, …
//!     .with_confirmations(2)
//!     .build(Arc::new(MemoryStore::new()))?;
//! # Ok(()) }
//! ```

mod builder;
mod derive;
mod esplora;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use nemordp_core::{
    Asset, Clock, Error, ErrorKind, Money, PaymentId, Result, Store,
    ids::OrderId,
    payment::{
        Observation, OpenedPayment, Payment, PaymentRequest, PaymentVerifier, VerifiedEvent,
        VerifiedEventKind, WebhookRequest,
    },
    store::{Batch, RecordWrite},
};

pub use builder::{BtcBuilder, DEFAULT_MAINNET_URL};
pub use derive::{AddressDeriver, parse_network};

use esplora::Esplora;

/// Backend name in records, errors and metrics.
pub const NAME: &str = "btc";

/// Header carrying the nudge signature.
pub const SIGNATURE_HEADER: &str = "x-nemordp-btc-signature";

/// Store collection of opened addresses, keyed by address.
const ADDRESSES: &str = "btc.address";
/// Store collection of per-scope bookkeeping (highest paid index), keyed by scope.
const SCOPES: &str = "btc.scope";

/// Blocks deeper than this are not re-checked against the best chain (no reorg that deep).
const REORG_HORIZON: u64 = 100;

/// What the store remembers about an opened address.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AddressRecord {
    payment_id: PaymentId,
    order_id: OrderId,
    index: u64,
    scope: String,
}

/// Per-scope bookkeeping for the gap-limit warning.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ScopeRecord {
    highest_paid_index: Option<u64>,
}

/// Money received by one transaction at our address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Transaction id.
    pub txid: String,
    /// Output indexes paying our address.
    pub vouts: Vec<u32>,
    /// Satoshis to our address in this transaction.
    pub sats: u64,
    /// Confirmations (0 in the mempool).
    pub confirmations: u64,
    /// Whether it counts as confirmed under the configured depth (and its block is still in
    /// the best chain).
    pub counted_confirmed: bool,
}

/// Bitcoin payment verifier over Esplora. Build with [`BtcBuilder`].
pub struct BtcVerifier {
    deriver: AddressDeriver,
    /// The primary explorer, then fallbacks.
    explorers: Vec<Esplora>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    confirmations: u64,
    gap_limit: u64,
    webhook_secret: Option<SecretString>,
}

impl fmt::Debug for BtcVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BtcVerifier")
            .field("deriver", &self.deriver)
            .field("explorers", &self.explorers)
            .field("confirmations", &self.confirmations)
            .field("gap_limit", &self.gap_limit)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

impl BtcVerifier {
    /// The confirmation depth at which a payment counts as confirmed.
    pub fn confirmations(&self) -> u64 {
        self.confirmations
    }

    /// The address deriver (network, scope).
    pub fn deriver(&self) -> &AddressDeriver {
        &self.deriver
    }

    /// The highest derivation index that ever received money (`None` if none did yet). Every
    /// index opened after it is an unused address the merchant's wallet must scan past.
    pub async fn highest_paid_index(&self) -> Result<Option<u64>> {
        Ok(self
            .scope_record(&self.deriver.scope())
            .await?
            .0
            .highest_paid_index)
    }

    async fn scope_record(&self, scope: &str) -> Result<(ScopeRecord, Option<u64>)> {
        match self.store.get_record(SCOPES, scope).await? {
            Some(r) => Ok((r.decode()?, Some(r.version))),
            None => Ok((ScopeRecord::default(), None)),
        }
    }

    async fn address_record(&self, address: &str) -> Result<Option<AddressRecord>> {
        match self.store.get_record(ADDRESSES, address).await? {
            Some(r) => Ok(Some(r.decode()?)),
            None => Ok(None),
        }
    }

    /// Notes that `index` received money, for the gap-limit warning (compare-and-set, a few
    /// tries; losing the race to a higher index is fine).
    async fn note_paid(&self, scope: &str, index: u64) -> Result<()> {
        for _ in 0..4 {
            let (mut rec, version) = self.scope_record(scope).await?;
            if rec.highest_paid_index.is_some_and(|h| h >= index) {
                return Ok(());
            }
            rec.highest_paid_index = Some(index);
            let write = match version {
                Some(v) => RecordWrite::update(SCOPES, scope, &rec, v)?,
                None => RecordWrite::insert(SCOPES, scope, &rec)?,
            };
            match self
                .store
                .commit(Batch::new().put_record(write), self.clock.now())
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Every transaction paying `address`, with per-transaction confirmation status, from the
    /// first explorer that answers (one explorer per call: views are never mixed).
    pub async fn receipts(&self, address: &str) -> Result<Vec<Receipt>> {
        let parsed = self.deriver.parse_address(address)?;
        let mut first_error = None;
        for (i, explorer) in self.explorers.iter().enumerate() {
            match self.receipts_from(explorer, &parsed).await {
                Ok(r) => return Ok(r),
                Err(e) if matches!(e.kind(), ErrorKind::InvalidInput) => return Err(e),
                Err(e) => {
                    if i + 1 < self.explorers.len() {
                        tracing::warn!(backend = NAME, explorer = i, error = %e, "esplora failed; trying the next one");
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error
            .unwrap_or_else(|| Error::invalid_config("no esplora configured").with_backend(NAME)))
    }

    async fn receipts_from(
        &self,
        esplora: &Esplora,
        parsed: &bitcoin::Address,
    ) -> Result<Vec<Receipt>> {
        let script = derive::script_hex(parsed);
        let canonical = parsed.to_string();
        let txs = esplora.address_txs(&canonical).await?;
        let tip = if txs.iter().any(|t| t.status.confirmed) {
            Some(esplora.tip_height().await?)
        } else {
            None
        };
        let mut receipts = Vec::new();
        for tx in &txs {
            let mut sats = 0_u64;
            let mut vouts = Vec::new();
            for (i, out) in tx.vout.iter().enumerate() {
                if !out.scriptpubkey.eq_ignore_ascii_case(&script) {
                    if out.scriptpubkey_address.as_deref() == Some(canonical.as_str()) {
                        return Err(Error::new(
                            ErrorKind::Unexpected,
                            format!(
                                "tx {} output {i}: address matches but script does not",
                                tx.txid
                            ),
                        )
                        .with_backend(NAME));
                    }
                    continue;
                }
                sats = sats.checked_add(out.value).ok_or_else(|| {
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("tx {}: output sum overflows", tx.txid),
                    )
                    .with_backend(NAME)
                })?;
                vouts.push(u32::try_from(i).unwrap_or(u32::MAX));
            }
            if vouts.is_empty() {
                continue; // spends from our address, or unrelated
            }
            let confirmations = match (tx.status.confirmed, tx.status.block_height, tip) {
                // A tip older than the block (cached) means at least one confirmation.
                (true, Some(h), Some(tip)) => tip.saturating_sub(h).saturating_add(1).max(1),
                _ => 0,
            };
            let mut counted_confirmed = confirmations >= self.confirmations;
            if counted_confirmed
                && confirmations <= REORG_HORIZON
                && let Some(hash) = tx.status.block_hash.as_deref()
                && !esplora.in_best_chain(hash).await?
            {
                tracing::warn!(backend = NAME, txid = %tx.txid, block = hash, "payment's block left the best chain");
                counted_confirmed = false;
            }
            if let Some(prev) = receipts.iter().position(|r: &Receipt| r.txid == tx.txid) {
                // The same tx listed twice (mempool → chain race): keep the better-confirmed.
                let prev: &mut Receipt = &mut receipts[prev];
                if confirmations > prev.confirmations {
                    prev.confirmations = confirmations;
                    prev.counted_confirmed = counted_confirmed;
                }
                continue;
            }
            receipts.push(Receipt {
                txid: tx.txid.clone(),
                vouts,
                sats,
                confirmations,
                counted_confirmed,
            });
        }
        Ok(receipts)
    }

    /// Cumulative totals for an opened address.
    async fn observe(&self, address: &str, record: &AddressRecord) -> Result<Observation> {
        let receipts = self.receipts(address).await?;
        let (mut seen, mut confirmed) = (0_u128, 0_u128);
        for r in &receipts {
            seen += u128::from(r.sats);
            if r.counted_confirmed {
                confirmed += u128::from(r.sats);
            }
        }
        if seen > 0 {
            self.note_paid(&record.scope, record.index).await?;
        }
        Ok(Observation::new(
            address,
            Money::from_minor(Asset::Btc, seen),
            Money::from_minor(Asset::Btc, confirmed),
        ))
    }

    fn verify_signature(&self, request: &WebhookRequest<'_>) -> Result<()> {
        let unauthenticated = |why: &str| {
            Error::new(ErrorKind::Unauthenticated, format!("btc nudge: {why}")).with_backend(NAME)
        };
        let Some(secret) = &self.webhook_secret else {
            return Err(unauthenticated("no webhook secret configured"));
        };
        let header = request
            .headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| unauthenticated("missing signature header"))?;
        let hex_sig = header
            .trim()
            .strip_prefix("sha256=")
            .ok_or_else(|| unauthenticated("signature is not sha256=<hex>"))?;
        let sig = hex::decode(hex_sig).map_err(|_| unauthenticated("signature is not hex"))?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .map_err(|_| unauthenticated("unusable secret"))?;
        mac.update(request.body);
        mac.verify_slice(&sig)
            .map_err(|_| unauthenticated("signature mismatch"))
    }
}

/// Signs a nudge body for [`SIGNATURE_HEADER`] (`sha256=<hex HMAC-SHA256(secret, body)>`), for
/// the host's notifier scripts and tests.
pub fn sign_nudge(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[derive(Debug, Deserialize)]
struct Nudge {
    address: String,
}

#[async_trait]
impl PaymentVerifier for BtcVerifier {
    fn name(&self) -> &'static str {
        NAME
    }

    fn asset(&self) -> Asset {
        Asset::Btc
    }

    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        if req.amount.asset() != Asset::Btc {
            return Err(Error::invalid_input(format!(
                "a btc payment cannot be for {}",
                req.amount
            ))
            .with_backend(NAME));
        }
        if req.amount.is_zero() {
            return Err(
                Error::invalid_input("a btc payment needs a positive amount").with_backend(NAME),
            );
        }
        let scope = self.deriver.scope();
        let claimant = req.payment_id.to_string();
        let now = self.clock.now();
        let index = self.store.reserve_index(&scope, &claimant, now).await?;
        let address = self.deriver.address(index)?.to_string();
        let record = AddressRecord {
            payment_id: req.payment_id,
            order_id: req.order_id,
            index,
            scope: scope.clone(),
        };
        let same = |existing: &AddressRecord| {
            if existing.payment_id == req.payment_id {
                Ok(OpenedPayment::new(address.clone()).with_pay_to(address.clone()))
            } else {
                Err(Error::conflict(format!(
                    "address {address} (index {index}) already belongs to payment {}",
                    existing.payment_id
                ))
                .with_backend(NAME))
            }
        };
        if let Some(existing) = self.address_record(&address).await? {
            return same(&existing);
        }
        let write = RecordWrite::insert(ADDRESSES, &address, &record)?;
        match self.store.commit(Batch::new().put_record(write), now).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::AlreadyExists) => {
                // A concurrent open of the same payment id won the insert.
                let existing = self.address_record(&address).await?.ok_or(e)?;
                return same(&existing);
            }
            Err(e) => return Err(e),
        }
        let highest = self.scope_record(&scope).await?.0.highest_paid_index;
        let gap = highest.map_or(index, |h| index.saturating_sub(h));
        if gap > self.gap_limit {
            tracing::warn!(
                backend = NAME,
                index,
                gap,
                gap_limit = self.gap_limit,
                "more consecutive unpaid addresses than the wallet gap limit: raise the wallet's gap limit"
            );
        }
        Ok(OpenedPayment::new(address.clone()).with_pay_to(address))
    }

    async fn check(&self, payment: &Payment) -> Result<Observation> {
        let Some(record) = self.address_record(&payment.reference).await? else {
            return Err(Error::not_found(format!(
                "no btc payment request for reference {:?}",
                payment.reference
            ))
            .with_backend(NAME));
        };
        if record.payment_id != payment.id {
            return Err(Error::invalid_input(format!(
                "address {} belongs to payment {}, not {}",
                payment.reference, record.payment_id, payment.id
            ))
            .with_backend(NAME));
        }
        if payment.terms.due.asset() != Asset::Btc {
            return Err(
                Error::invalid_input(format!("payment {} is not in BTC", payment.id))
                    .with_backend(NAME),
            );
        }
        self.observe(&payment.reference, &record).await
    }

    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        self.verify_signature(&request)?;
        let nudge: Nudge = serde_json::from_slice(request.body).map_err(|e| {
            Error::invalid_input(format!("btc nudge body is not {{\"address\": …}}: {e}"))
                .with_backend(NAME)
        })?;
        let address = self
            .deriver
            .parse_address(nudge.address.trim())?
            .to_string();
        let Some(record) = self.address_record(&address).await? else {
            return Ok(vec![VerifiedEvent::new(
                format!("btc:unknown:{address}"),
                VerifiedEventKind::Ignored {
                    event_type: "nudge for an address not opened here".to_owned(),
                },
            )]);
        };
        let o = self.observe(&address, &record).await?;
        // Same chain state → same key; new totals → a new event.
        let key = format!(
            "btc:{address}:{}:{}",
            o.seen.minor_units(),
            o.confirmed.minor_units()
        );
        Ok(vec![VerifiedEvent::new(
            key,
            VerifiedEventKind::Observed(o),
        )])
    }
}
