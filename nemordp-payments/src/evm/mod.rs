//! ETH and USDT (ERC-20) payments over Ethereum JSON-RPC (`eth` and `usdt` features).
//!
//! One [`EvmPayments`] holds the node client, the merchant's extended public key and a block
//! watcher shared by both assets; [`EvmPayments::eth`] and [`EvmPayments::usdt`] give the
//! [`PaymentVerifier`]s.
//!
//! - **Addresses**: request `i` is paid to `0/i` below the merchant's account xpub (BIP32 public
//!   derivation, keccak address). The index is reserved in the [`Store`] with
//!   [`Store::reserve_index`] keyed by the payment id, so two requests never share an address
//!   and re-opening the same payment id gives the same address. No private key is involved.
//! - **Detection**: the watcher scans each new block once (see [`watcher`]): native transfers
//!   with a successful receipt, and `Transfer` logs of the pinned token contract only. Other
//!   tokens, look-alike contracts and other recipients never count.
//! - **Confirmations**: depth from the head (`Depth(n)`, 1 = included) or the node's `safe` /
//!   `finalized` block. Every scanned block is linked to its parent; when the node's chain no
//!   longer contains a scanned block, the credits of the dropped blocks are undone and the new
//!   branch is scanned.
//! - **Webhooks**: a watcher process can tell web processes which addresses saw activity with
//!   an HMAC-SHA256-signed notice ([`EvmPayments::activity_notice`], header
//!   `x-nemordp-evm-signature`). The notice carries no amounts: [`PaymentVerifier::parse_webhook`]
//!   re-reads the chain for every address named in it.

pub mod derive;
pub mod model;
mod rpc;
pub mod watcher;

use std::{collections::HashMap, sync::Arc, time::Duration};

use alloy_primitives::{Address, U256, address};
use async_trait::async_trait;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::Mutex;

use nemordp_core::{
    Asset, Clock, Error, ErrorKind, Money, PaymentId, Result, Store, SystemClock, Timestamp,
    payment::{
        Observation, OpenedPayment, Payment, PaymentRequest, PaymentVerifier, VerifiedEvent,
        VerifiedEventKind, WebhookRequest,
    },
    store::{Batch, RecordWrite},
};

pub use derive::AddressDeriver;
pub use watcher::{ConfirmationPolicy, EvmAsset, Totals, Watchlist};

use rpc::RpcClient;
use watcher::{ChainState, ScanConfig};

/// Tether USD on Ethereum mainnet (6 decimals).
pub const MAINNET_USDT: Address = address!("dAC17F958D2ee523a2206206994597C13D831ec7");

/// Header carrying the hex HMAC-SHA256 of an activity notice's raw body.
pub const SIGNATURE_HEADER: &str = "x-nemordp-evm-signature";

/// Store collection of opened requests, keyed by payment id.
pub const REQUEST_COLLECTION: &str = "evm.request";

const NAME: &str = "evm";

/// What the store keeps per opened request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// Asset asked for.
    pub asset: EvmAsset,
    /// Derivation index (`0/index`).
    pub index: u64,
    /// Receiving address (EIP-55).
    pub address: Address,
    /// First block that may pay it.
    pub from_block: u64,
    /// The request's expiry plus the monitoring window: the watcher drops it after this.
    pub watch_until: Timestamp,
    /// False once [`EvmPayments::unwatch`] dropped it.
    pub watching: bool,
}

/// Builder for [`EvmPayments`].
#[derive(Debug)]
pub struct EvmPaymentsBuilder {
    /// Secret: hosted node URLs carry the API key.
    rpc_url: Option<SecretString>,
    xpub: Option<String>,
    token: Address,
    chain_id: Option<u64>,
    policy: ConfirmationPolicy,
    webhook_secret: Option<SecretString>,
    min_sync_interval: Duration,
    timeout: Duration,
    topic_filter_limit: usize,
    monitoring: Duration,
    clock: Arc<dyn Clock>,
}

impl Default for EvmPaymentsBuilder {
    fn default() -> Self {
        Self {
            rpc_url: None,
            xpub: None,
            token: MAINNET_USDT,
            chain_id: None,
            policy: ConfirmationPolicy::Depth(12),
            webhook_secret: None,
            min_sync_interval: Duration::from_secs(12),
            timeout: Duration::from_secs(20),
            topic_filter_limit: 1000,
            monitoring: Duration::from_secs(24 * 3600),
            clock: Arc::new(SystemClock),
        }
    }
}

impl EvmPaymentsBuilder {
    /// Reads `ETH_RPC_URL` (required), `EVM_XPUB` (required), `USDT_CONTRACT`, `EVM_CHAIN_ID`,
    /// `ETH_CONFIRMATIONS` (`12`, `safe` or `finalized`) and `EVM_WEBHOOK_SECRET`.
    pub fn from_env() -> Result<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut b = Self {
            rpc_url: var("ETH_RPC_URL").map(SecretString::from),
            xpub: var("EVM_XPUB"),
            webhook_secret: var("EVM_WEBHOOK_SECRET").map(SecretString::from),
            ..Self::default()
        };
        if let Some(t) = var("USDT_CONTRACT") {
            b.token = t.trim().parse().map_err(|_| {
                Error::invalid_config(format!("USDT_CONTRACT is not an address: {t:?}"))
            })?;
        }
        if let Some(c) = var("EVM_CHAIN_ID") {
            b.chain_id = Some(c.trim().parse().map_err(|_| {
                Error::invalid_config(format!("EVM_CHAIN_ID is not a number: {c:?}"))
            })?);
        }
        if let Some(c) = var("ETH_CONFIRMATIONS") {
            b.policy = ConfirmationPolicy::parse(&c)?;
        }
        Ok(b)
    }

    /// The node's JSON-RPC URL (`ETH_RPC_URL`).
    #[must_use]
    pub fn rpc_url(mut self, url: impl Into<String>) -> Self {
        self.rpc_url = Some(SecretString::from(url.into()));
        self
    }

    /// The merchant's account-level extended public key (`EVM_XPUB`).
    #[must_use]
    pub fn xpub(mut self, xpub: impl Into<String>) -> Self {
        self.xpub = Some(xpub.into());
        self
    }

    /// The token contract counted by the `usdt` verifier (default: mainnet USDT).
    #[must_use]
    pub fn usdt_contract(mut self, contract: Address) -> Self {
        self.token = contract;
        self
    }

    /// The chain the node must be on; checked once against `eth_chainId`.
    #[must_use]
    pub fn chain_id(mut self, chain_id: u64) -> Self {
        self.chain_id = Some(chain_id);
        self
    }

    /// When a payment counts as confirmed (default 12 blocks).
    #[must_use]
    pub fn confirmations(mut self, policy: ConfirmationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The shared secret of activity notices.
    #[must_use]
    pub fn webhook_secret(mut self, secret: SecretString) -> Self {
        self.webhook_secret = Some(secret);
        self
    }

    /// `check` syncs with the node at most this often (default 12 s, one mainnet slot, so
    /// checks between blocks cost no calls; `sync` always syncs).
    #[must_use]
    pub fn min_sync_interval(mut self, interval: Duration) -> Self {
        self.min_sync_interval = interval;
        self
    }

    /// Most recipients put in one `eth_getLogs` topic list before matching locally (default
    /// 1,000, geth's cap).
    #[must_use]
    pub fn topic_filter_limit(mut self, limit: usize) -> Self {
        self.topic_filter_limit = limit;
        self
    }

    /// How long after a request's expiry late payments are still watched for (default 24 h,
    /// BTCPay's monitoring window).
    #[must_use]
    pub fn monitoring(mut self, window: Duration) -> Self {
        self.monitoring = window;
        self
    }

    /// Time source for store writes and the monitoring window.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Connects: checks the chain id when configured and loads the requests still watched
    /// from `store` (their payments are found again by rescanning from their first block).
    pub async fn build(self, store: Arc<dyn Store>) -> Result<EvmPayments> {
        let url = self
            .rpc_url
            .ok_or_else(|| Error::invalid_config("ETH_RPC_URL is not set").with_backend(NAME))?;
        let xpub = self
            .xpub
            .ok_or_else(|| Error::invalid_config("EVM_XPUB is not set").with_backend(NAME))?;
        let deriver = AddressDeriver::from_xpub(&xpub).map_err(|e| e.with_backend(NAME))?;
        let rpc = RpcClient::new(url.expose_secret(), self.timeout)?;
        let chain_id = rpc.chain_id().await?;
        if let Some(want) = self.chain_id
            && want != chain_id
        {
            return Err(Error::invalid_config(format!(
                "the node at ETH_RPC_URL is on chain {chain_id}, EVM_CHAIN_ID says {want}"
            ))
            .with_backend(NAME));
        }
        let window = match self.policy {
            ConfirmationPolicy::Depth(d) => d.saturating_mul(2).max(128),
            // `finalized` trails the head by about two epochs (64 blocks).
            ConfirmationPolicy::Safe | ConfirmationPolicy::Finalized => 256,
        };
        let inner = Inner {
            scope: format!("evm:{}", deriver.fingerprint()),
            deriver,
            rpc,
            chain_id,
            scan: ScanConfig {
                token: self.token,
                policy: self.policy,
                window,
                topic_filter_limit: self.topic_filter_limit,
            },
            webhook_secret: self.webhook_secret,
            min_sync_interval: self.min_sync_interval,
            monitoring: self.monitoring,
            clock: self.clock,
            store,
            state: Mutex::new(Synced {
                chain: ChainState::default(),
                at: None,
                deadlines: HashMap::new(),
            }),
        };
        let payments = EvmPayments {
            inner: Arc::new(inner),
        };
        payments.load_watched().await?;
        Ok(payments)
    }
}

#[derive(Debug)]
struct Synced {
    chain: ChainState,
    /// When the last sync finished (by the injected clock).
    at: Option<Timestamp>,
    /// When each watched address stops being watched.
    deadlines: HashMap<Address, Timestamp>,
}

impl Synced {
    fn watch(&mut self, r: &RequestRecord) {
        self.chain.watch(r.address, r.asset, r.from_block);
        self.deadlines.insert(r.address, r.watch_until);
    }

    /// Stops watching requests whose monitoring window is over.
    fn prune(&mut self, now: Timestamp) {
        let over: Vec<Address> = self
            .deadlines
            .iter()
            .filter(|(_, until)| **until < now)
            .map(|(a, _)| *a)
            .collect();
        for address in over {
            self.deadlines.remove(&address);
            self.chain.unwatch(&address);
        }
    }
}

#[derive(Debug)]
struct Inner {
    deriver: AddressDeriver,
    scope: String,
    rpc: RpcClient,
    chain_id: u64,
    scan: ScanConfig,
    webhook_secret: Option<SecretString>,
    min_sync_interval: Duration,
    monitoring: Duration,
    clock: Arc<dyn Clock>,
    store: Arc<dyn Store>,
    state: Mutex<Synced>,
}

/// ETH and USDT payments on one EVM chain. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EvmPayments {
    inner: Arc<Inner>,
}

impl EvmPayments {
    /// A builder with defaults (mainnet USDT, 12 confirmations).
    pub fn builder() -> EvmPaymentsBuilder {
        EvmPaymentsBuilder::default()
    }

    /// The verifier for native ETH.
    #[cfg(feature = "eth")]
    pub fn eth(&self) -> EvmVerifier {
        EvmVerifier {
            payments: self.clone(),
            asset: EvmAsset::Eth,
        }
    }

    /// The verifier for the configured USDT contract.
    #[cfg(feature = "usdt")]
    pub fn usdt(&self) -> EvmVerifier {
        EvmVerifier {
            payments: self.clone(),
            asset: EvmAsset::Usdt,
        }
    }

    /// The node's chain id.
    pub fn chain_id(&self) -> u64 {
        self.inner.chain_id
    }

    /// The token contract the `usdt` verifier counts.
    pub fn usdt_contract(&self) -> Address {
        self.inner.scan.token
    }

    /// JSON-RPC calls made so far (all clones share the counter).
    pub fn rpc_calls(&self) -> u64 {
        self.inner.rpc.calls()
    }

    /// Number of addresses being watched.
    pub async fn watched(&self) -> usize {
        self.inner.state.lock().await.chain.watchlist.len()
    }

    async fn load_watched(&self) -> Result<()> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .store
                .list_records(REQUEST_COLLECTION, "", after.as_deref(), 500)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let now = self.inner.clock.now();
            let mut st = self.inner.state.lock().await;
            for record in &page {
                let r: RequestRecord = record.decode()?;
                if r.watching && r.watch_until >= now {
                    st.watch(&r);
                }
            }
        }
        Ok(())
    }

    /// Brings the watcher up to the node's head now, and returns the current totals of every
    /// request whose totals may have changed (new, removed or still-confirming payments).
    ///
    /// A host runs this once per block and, for each change, finds the payment with
    /// `store.find_payment(change.method, &change.observation.reference)` and calls
    /// `provisioner.refresh_payment(id)` (or applies the observation itself).
    pub async fn sync(&self) -> Result<Vec<ChainChange>> {
        let mut st = self.inner.state.lock().await;
        watcher::sync(&self.inner.rpc, &self.inner.scan, &mut st.chain).await?;
        st.at = Some(self.inner.clock.now());
        let policy = self.inner.scan.policy;
        let mut out = Vec::new();
        for address in st.chain.drain_changed(policy) {
            if let Some(asset) = st.chain.watchlist.asset_of(&address) {
                let totals = st.chain.totals(&address, asset, policy)?;
                out.push(ChainChange {
                    method: method_name(asset),
                    observation: observation(&address.to_checksum(None), asset, totals),
                });
            }
        }
        // Reported above for the last time; then dropped.
        st.prune(self.inner.clock.now());
        Ok(out)
    }

    /// Stops watching a request (say, once its invoice is final); its record stays.
    pub async fn unwatch(&self, payment_id: PaymentId) -> Result<()> {
        let key = payment_id.to_string();
        let Some(record) = self
            .inner
            .store
            .get_record(REQUEST_COLLECTION, &key)
            .await?
        else {
            return Err(Error::not_found(format!("no EVM request {key}")));
        };
        let mut r: RequestRecord = record.decode()?;
        {
            let mut st = self.inner.state.lock().await;
            st.chain.unwatch(&r.address);
            st.deadlines.remove(&r.address);
        }
        if r.watching {
            r.watching = false;
            let write = RecordWrite::update(REQUEST_COLLECTION, &key, &r, record.version)?;
            self.inner
                .store
                .commit(Batch::new().put_record(write), self.inner.clock.now())
                .await?;
        }
        Ok(())
    }

    /// A signed activity notice naming `addresses`, to POST to the web processes' webhook
    /// endpoint; `id` makes the delivery's event keys (use a block hash, or a uuid).
    pub fn activity_notice(
        &self,
        id: &str,
        addresses: &[Address],
    ) -> Result<(http::HeaderMap, Vec<u8>)> {
        let notice = Notice {
            id: id.to_owned(),
            addresses: addresses.to_vec(),
        };
        let body = serde_json::to_vec(&notice).map_err(|e| {
            Error::new(ErrorKind::Unexpected, "cannot encode notice").with_source(e)
        })?;
        let sig = hex::encode(self.mac()?.chain_update(&body).finalize().into_bytes());
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        headers.insert(
            SIGNATURE_HEADER,
            http::HeaderValue::from_str(&sig)
                .map_err(|e| Error::new(ErrorKind::Unexpected, "bad header").with_source(e))?,
        );
        Ok((headers, body))
    }

    fn mac(&self) -> Result<Hmac<Sha256>> {
        let secret = self.inner.webhook_secret.as_ref().ok_or_else(|| {
            Error::new(
                ErrorKind::Unauthenticated,
                "no EVM_WEBHOOK_SECRET configured: activity notices cannot be authenticated",
            )
            .with_backend(NAME)
        })?;
        Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
            .map_err(|_| Error::invalid_config("unusable webhook secret"))
    }

    fn authenticate(&self, request: &WebhookRequest<'_>) -> Result<()> {
        let unauth = |m: &str| Error::new(ErrorKind::Unauthenticated, m).with_backend(NAME);
        let header = request
            .headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| unauth("missing signature header"))?;
        let sig = header
            .to_str()
            .ok()
            .and_then(|h| hex::decode(h.trim()).ok())
            .ok_or_else(|| unauth("signature is not hex"))?;
        self.mac()?
            .chain_update(request.body)
            .verify_slice(&sig)
            .map_err(|_| unauth("signature does not match the body"))
    }

    /// Syncs unless a sync finished less than `min_sync_interval` ago.
    async fn fresh(&self) -> Result<tokio::sync::MutexGuard<'_, Synced>> {
        let mut st = self.inner.state.lock().await;
        let now = self.inner.clock.now();
        let stale = st
            .at
            .is_none_or(|at| at.saturating_add(self.inner.min_sync_interval) <= now);
        if stale {
            watcher::sync(&self.inner.rpc, &self.inner.scan, &mut st.chain).await?;
            st.at = Some(self.inner.clock.now());
        }
        Ok(st)
    }

    async fn open(&self, asset: EvmAsset, req: &PaymentRequest) -> Result<OpenedPayment> {
        let key = req.payment_id.to_string();
        let opened = |r: &RequestRecord| {
            let a = r.address.to_checksum(None);
            OpenedPayment::new(a.clone()).with_pay_to(a)
        };
        if req.amount.is_zero() {
            return Err(Error::invalid_input(
                "a payment request needs an amount above zero",
            ));
        }
        if let Some(existing) = self.existing(asset, &key).await? {
            return Ok(opened(&existing));
        }
        let now = self.inner.clock.now();
        let index = self
            .inner
            .store
            .reserve_index(&self.inner.scope, &key, now)
            .await?;
        let address = self.inner.deriver.address(index)?;
        let next = self.inner.state.lock().await.chain.next_block();
        let from_block = match next {
            Some(n) => n,
            None => self.inner.rpc.block_number().await?,
        };
        let record = RequestRecord {
            asset,
            index,
            address,
            from_block,
            watch_until: req.expires_at.saturating_add(self.inner.monitoring),
            watching: true,
        };
        if index > 0 && index % 20 == 0 {
            tracing::info!(
                index,
                "EVM derivation index passed a multiple of 20: wallets restoring from the seed \
                 need a gap limit above the number of unpaid requests"
            );
        }
        let write = RecordWrite::insert(REQUEST_COLLECTION, &key, &record)?;
        match self
            .inner
            .store
            .commit(Batch::new().put_record(write), now)
            .await
        {
            Ok(_) => {}
            // A concurrent open of the same id won: answer with its record.
            Err(e) if e.kind() == ErrorKind::Conflict => {
                if let Some(existing) = self.existing(asset, &key).await? {
                    return Ok(opened(&existing));
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        self.inner.state.lock().await.watch(&record);
        Ok(opened(&record))
    }

    /// The stored request for `key`, if any; another asset is `AlreadyExists`.
    async fn existing(&self, asset: EvmAsset, key: &str) -> Result<Option<RequestRecord>> {
        let Some(record) = self.inner.store.get_record(REQUEST_COLLECTION, key).await? else {
            return Ok(None);
        };
        let r: RequestRecord = record.decode()?;
        if r.asset != asset {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("payment {key} was opened for {:?}", r.asset),
            ));
        }
        Ok(Some(r))
    }

    async fn check(&self, asset: EvmAsset, payment: &Payment) -> Result<Observation> {
        let key = payment.id.to_string();
        let r = self
            .existing(asset, &key)
            .await
            .map_err(|e| {
                if e.kind() == ErrorKind::AlreadyExists {
                    Error::invalid_input(e.message().to_owned())
                } else {
                    e
                }
            })?
            .ok_or_else(|| Error::not_found(format!("no EVM request {key}")))?;
        if r.address.to_checksum(None) != payment.reference {
            return Err(Error::not_found(format!(
                "payment {key} was opened for {}, not {}",
                r.address, payment.reference
            )));
        }
        let mut st = self.fresh().await?;
        if st.chain.watchlist.asset_of(&r.address).is_none() {
            // Opened by another process, or unwatched: watch it (rescans from its first block).
            st.watch(&r);
            watcher::sync(&self.inner.rpc, &self.inner.scan, &mut st.chain).await?;
        }
        let t = st.chain.totals(&r.address, asset, self.inner.scan.policy)?;
        drop(st);
        Ok(observation(&payment.reference, asset, t))
    }
}

/// New totals for one request, from [`EvmPayments::sync`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChainChange {
    /// The verifier (payment method) name: `"eth"` or `"usdt"`.
    pub method: &'static str,
    /// The totals; `reference` is the request's address.
    pub observation: Observation,
}

fn method_name(asset: EvmAsset) -> &'static str {
    match asset {
        EvmAsset::Eth => "eth",
        EvmAsset::Usdt => "usdt",
    }
}

fn core_asset(asset: EvmAsset) -> Asset {
    match asset {
        EvmAsset::Eth => Asset::Eth,
        EvmAsset::Usdt => Asset::Usdt,
    }
}

fn observation(reference: &str, asset: EvmAsset, t: Totals) -> Observation {
    let money = |u: U256| Money::from_minor_u256(core_asset(asset), u);
    Observation::new(reference, money(t.seen), money(t.confirmed))
}

/// An activity notice's body.
#[derive(Debug, Serialize, Deserialize)]
struct Notice {
    id: String,
    addresses: Vec<Address>,
}

/// The [`PaymentVerifier`] for one asset (`"eth"` or `"usdt"`).
#[derive(Debug, Clone)]
pub struct EvmVerifier {
    payments: EvmPayments,
    asset: EvmAsset,
}

impl EvmVerifier {
    /// The shared backend.
    pub fn payments(&self) -> &EvmPayments {
        &self.payments
    }

    /// An EIP-681 payment URI for `amount` to `address` (wallets fill in the transfer).
    pub fn payment_uri(&self, address: &str, amount: &Money) -> Result<String> {
        self.check_asset(amount)?;
        let chain = self.payments.chain_id();
        let units = amount.minor_units();
        Ok(match self.asset {
            EvmAsset::Eth => format!("ethereum:{address}@{chain}?value={units}"),
            EvmAsset::Usdt => format!(
                "ethereum:{}@{chain}/transfer?address={address}&uint256={units}",
                self.payments.usdt_contract().to_checksum(None)
            ),
        })
    }

    fn check_asset(&self, amount: &Money) -> Result<()> {
        if amount.asset() == core_asset(self.asset) {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "the {} verifier takes {} amounts, not {}",
                self.name(),
                core_asset(self.asset),
                amount.asset()
            )))
        }
    }
}

#[async_trait]
impl PaymentVerifier for EvmVerifier {
    fn name(&self) -> &'static str {
        method_name(self.asset)
    }

    fn asset(&self) -> Asset {
        core_asset(self.asset)
    }

    async fn open(&self, req: &PaymentRequest) -> Result<OpenedPayment> {
        self.check_asset(&req.amount)?;
        self.payments
            .open(self.asset, req)
            .await
            .map_err(|e| e.with_backend(self.name()).with_operation("open"))
    }

    async fn check(&self, payment: &Payment) -> Result<Observation> {
        self.check_asset(&payment.terms.due)?;
        self.payments
            .check(self.asset, payment)
            .await
            .map_err(|e| e.with_backend(self.name()).with_operation("check"))
    }

    async fn parse_webhook(&self, request: WebhookRequest<'_>) -> Result<Vec<VerifiedEvent>> {
        let p = &self.payments;
        p.authenticate(&request)
            .map_err(|e| e.with_backend(self.name()).with_operation("parse_webhook"))?;
        let notice: Notice = serde_json::from_slice(request.body).map_err(|e| {
            Error::invalid_input("the activity notice is not valid JSON")
                .with_source(e)
                .with_backend(self.name())
        })?;
        let st = p.fresh().await?;
        let mut events = Vec::new();
        for address in notice.addresses {
            if st.chain.watchlist.asset_of(&address) != Some(self.asset) {
                continue;
            }
            let t = st.chain.totals(&address, self.asset, p.inner.scan.policy)?;
            let reference = address.to_checksum(None);
            events.push(VerifiedEvent::new(
                format!("{}:{}:{reference}", self.name(), notice.id),
                VerifiedEventKind::Observed(observation(&reference, self.asset, t)),
            ));
        }
        drop(st);
        Ok(events)
    }
}
