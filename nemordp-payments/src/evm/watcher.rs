//! The block watcher: scans each new block once, credits native ETH transfers and token
//! `Transfer` logs to watched addresses, links every scanned block to its parent so a reorg is
//! noticed, and undoes the credits of blocks that left the canonical chain.
//!
//! RPC budget per new block: `eth_getBlockByNumber` (the head call doubles as the fetch of the
//! newest block), `eth_getLogs` by block hash (only when a token address is watched), and
//! `eth_getBlockReceipts` (only when a transaction pays a watched address). The token query
//! filters on recipients while they fit one topic list (geth caps a list at 1,000 entries);
//! beyond that it asks for all the contract's `Transfer` logs of the block and matches them
//! against a hash set here, so the call count never grows with the number of requests.

use std::collections::{BTreeMap, HashMap, HashSet};

use alloy_primitives::{Address, B256, U256, b256};
use serde::{Deserialize, Serialize};

use nemordp_core::{Error, ErrorKind, Result};

use super::{
    model::{RpcBlock, RpcLog},
    rpc::{BlockRef, RpcClient},
};

/// keccak-256 of `Transfer(address,address,uint256)`.
pub const TRANSFER_TOPIC: B256 =
    b256!("ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef");

/// Which asset a watched address expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvmAsset {
    /// Native ether, in wei.
    Eth,
    /// The configured ERC-20 token (USDT), in its base units.
    Usdt,
}

/// When a credit counts as confirmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmationPolicy {
    /// At least this many blocks including the inclusion block (1 = included).
    Depth(u64),
    /// Included at or below the node's `safe` block.
    Safe,
    /// Included at or below the node's `finalized` block.
    Finalized,
}

impl ConfirmationPolicy {
    /// Parses `"12"`, `"safe"` or `"finalized"`.
    pub fn parse(text: &str) -> Result<Self> {
        match text.trim() {
            "safe" => Ok(Self::Safe),
            "finalized" => Ok(Self::Finalized),
            n => match n.parse::<u64>() {
                Ok(d) if d >= 1 => Ok(Self::Depth(d)),
                _ => Err(Error::invalid_config(format!(
                    "confirmations must be a number ≥ 1, \"safe\" or \"finalized\", not {n:?}"
                ))),
            },
        }
    }
}

/// The addresses being watched, each with the first block that may pay it.
#[derive(Debug, Default, Clone)]
pub struct Watchlist {
    eth: HashMap<Address, u64>,
    token: HashMap<Address, u64>,
}

impl Watchlist {
    /// Watches `address` for `asset` from block `from_block` on.
    pub fn insert(&mut self, address: Address, asset: EvmAsset, from_block: u64) {
        match asset {
            EvmAsset::Eth => self.eth.insert(address, from_block),
            EvmAsset::Usdt => self.token.insert(address, from_block),
        };
    }

    /// Stops watching `address`.
    pub fn remove(&mut self, address: &Address) {
        self.eth.remove(address);
        self.token.remove(address);
    }

    /// The asset `address` is watched for.
    pub fn asset_of(&self, address: &Address) -> Option<EvmAsset> {
        if self.eth.contains_key(address) {
            Some(EvmAsset::Eth)
        } else if self.token.contains_key(address) {
            Some(EvmAsset::Usdt)
        } else {
            None
        }
    }

    /// Number of watched addresses.
    pub fn len(&self) -> usize {
        self.eth.len() + self.token.len()
    }

    /// True when nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.eth.is_empty() && self.token.is_empty()
    }

    fn min_from_block(&self) -> Option<u64> {
        self.eth.values().chain(self.token.values()).min().copied()
    }

    /// Native transfers in `block` to watched ETH addresses (receipt status not yet checked).
    pub fn match_native(&self, block: &Block) -> Vec<Credit> {
        let number = block.number.to::<u64>();
        block
            .transactions
            .iter()
            .filter(|tx| !tx.value.is_zero())
            .filter_map(|tx| {
                let to = tx.to?;
                let from = *self.eth.get(&to)?;
                (number >= from).then_some(Credit {
                    key: CreditKey {
                        tx: tx.hash,
                        log_index: None,
                    },
                    to,
                    asset: EvmAsset::Eth,
                    amount: tx.value,
                    block_number: number,
                    block_hash: block.hash,
                })
            })
            .collect()
    }

    /// Token `Transfer` logs of `block` from `contract` to watched token addresses. Logs of
    /// another contract, another block, malformed logs and removed logs give no credit.
    pub fn match_token_logs(&self, contract: Address, block: &Block, logs: &[Log]) -> Vec<Credit> {
        let number = block.number.to::<u64>();
        logs.iter()
            .filter(|log| !log.removed && log.address == contract)
            .filter(|log| log.block_hash == Some(block.hash))
            .filter_map(|log| {
                let (to, amount) = decode_transfer(log)?;
                let from = *self.token.get(&to)?;
                (number >= from).then_some(Credit {
                    key: CreditKey {
                        tx: log.transaction_hash?,
                        log_index: Some(log.log_index?.to::<u64>()),
                    },
                    to,
                    asset: EvmAsset::Usdt,
                    amount,
                    block_number: number,
                    block_hash: block.hash,
                })
            })
            .collect()
    }
}

/// Recipient and value of a standard `Transfer(address indexed, address indexed, uint256)`.
fn decode_transfer(log: &Log) -> Option<(Address, U256)> {
    if log.topics.len() != 3 || log.topics[0] != TRANSFER_TOPIC || log.data.len() != 32 {
        return None;
    }
    let topic = log.topics[2];
    // An address topic is the 20 bytes left-padded with zeros; anything else is not one.
    if topic[..12].iter().any(|b| *b != 0) {
        return None;
    }
    Some((
        Address::from_slice(&topic[12..]),
        U256::from_be_slice(&log.data),
    ))
}

/// A block as the watcher reads it.
pub type Block = RpcBlock;
/// A log as the watcher reads it.
pub type Log = RpcLog;

/// Identifies one payment: a transaction, and for token transfers its log index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CreditKey {
    /// Transaction hash.
    pub tx: B256,
    /// Log index for token transfers; `None` for the native value of the transaction.
    pub log_index: Option<u64>,
}

/// Money credited to a watched address by one transaction or log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credit {
    /// Payment identity.
    pub key: CreditKey,
    /// Recipient.
    pub to: Address,
    /// Asset.
    pub asset: EvmAsset,
    /// Amount in base units.
    pub amount: U256,
    /// Inclusion block.
    pub block_number: u64,
    /// Inclusion block hash.
    pub block_hash: B256,
}

/// Totals for one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Everything included in the canonical chain.
    pub seen: U256,
    /// Everything meeting the confirmation policy.
    pub confirmed: U256,
}

/// The watcher's mutable state (behind the watcher's lock).
#[derive(Debug, Default)]
pub(crate) struct ChainState {
    /// Hashes of scanned canonical blocks, newest last, bounded to the reorg window.
    recent: BTreeMap<u64, B256>,
    /// Credits by recipient.
    ledger: HashMap<Address, BTreeMap<CreditKey, Credit>>,
    /// The head seen at the last sync.
    head: Option<u64>,
    /// The `safe`/`finalized` block number at the last sync.
    tag_block: Option<u64>,
    /// A block that must be scanned again (a request opened for an earlier block).
    rescan_from: Option<u64>,
    /// Addresses whose credits changed since the caller last drained them.
    touched: HashSet<Address>,
    pub(crate) watchlist: Watchlist,
}

impl ChainState {
    /// The next block a request opened now could be paid in.
    pub(crate) fn next_block(&self) -> Option<u64> {
        self.recent.keys().next_back().map(|n| n + 1)
    }

    /// Watches `address`, scanning again from `from_block` if that block was already passed.
    pub(crate) fn watch(&mut self, address: Address, asset: EvmAsset, from_block: u64) {
        self.watchlist.insert(address, asset, from_block);
        if self.next_block().is_some_and(|next| from_block < next) {
            self.rescan_from = Some(self.rescan_from.map_or(from_block, |r| r.min(from_block)));
        }
    }

    /// Stops watching `address` and forgets its credits.
    pub(crate) fn unwatch(&mut self, address: &Address) {
        self.watchlist.remove(address);
        self.ledger.remove(address);
        self.touched.remove(address);
    }

    /// Removes every block above `n` and the credits they gave.
    fn rollback_above(&mut self, n: u64) {
        let dropped = self.recent.split_off(&(n + 1));
        if dropped.is_empty() {
            return;
        }
        for (address, credits) in &mut self.ledger {
            let before = credits.len();
            credits.retain(|_, c| c.block_number <= n);
            if credits.len() != before {
                self.touched.insert(*address);
            }
        }
        self.ledger.retain(|_, c| !c.is_empty());
    }

    fn credit(&mut self, c: Credit) {
        self.touched.insert(c.to);
        self.ledger.entry(c.to).or_default().insert(c.key, c);
    }

    fn has_unconfirmed(&self, policy: ConfirmationPolicy) -> bool {
        self.ledger
            .values()
            .flat_map(BTreeMap::values)
            .any(|c| !self.is_confirmed(c, policy))
    }

    fn is_confirmed(&self, c: &Credit, policy: ConfirmationPolicy) -> bool {
        match policy {
            ConfirmationPolicy::Depth(depth) => self
                .head
                .is_some_and(|h| h >= c.block_number && h - c.block_number + 1 >= depth),
            ConfirmationPolicy::Safe | ConfirmationPolicy::Finalized => {
                self.tag_block.is_some_and(|t| c.block_number <= t)
            }
        }
    }

    /// Totals of `asset` credited to `address`.
    pub(crate) fn totals(
        &self,
        address: &Address,
        asset: EvmAsset,
        policy: ConfirmationPolicy,
    ) -> Result<Totals> {
        let mut t = Totals::default();
        let overflow = || Error::new(ErrorKind::Unexpected, "payment totals overflow 256 bits");
        for c in self
            .ledger
            .get(address)
            .into_iter()
            .flat_map(BTreeMap::values)
        {
            if c.asset != asset {
                continue;
            }
            t.seen = t.seen.checked_add(c.amount).ok_or_else(overflow)?;
            if self.is_confirmed(c, policy) {
                t.confirmed = t.confirmed.checked_add(c.amount).ok_or_else(overflow)?;
            }
        }
        Ok(t)
    }

    /// Addresses whose totals may have changed since the last call: credits added or removed,
    /// or credits still waiting for confirmations.
    pub(crate) fn drain_changed(&mut self, policy: ConfirmationPolicy) -> Vec<Address> {
        let mut out: HashSet<Address> = self.touched.drain().collect();
        for (address, credits) in &self.ledger {
            if credits.values().any(|c| !self.is_confirmed(c, policy)) {
                out.insert(*address);
            }
        }
        out.into_iter().collect()
    }
}

/// What a sync pass ended with.
enum Pass {
    Done,
    /// The chain moved under the scan; go again.
    Again,
}

/// Scanning parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanConfig {
    pub(crate) token: Address,
    pub(crate) policy: ConfirmationPolicy,
    /// Blocks kept for reorg detection.
    pub(crate) window: u64,
    /// Most recipients put in one topic filter before matching locally instead.
    pub(crate) topic_filter_limit: usize,
}

/// Brings `st` up to the node's head. Each block is fetched and scanned once.
pub(crate) async fn sync(rpc: &RpcClient, cfg: &ScanConfig, st: &mut ChainState) -> Result<()> {
    for _ in 0..8 {
        if let Pass::Done = sync_pass(rpc, cfg, st).await? {
            return Ok(());
        }
    }
    Err(Error::unavailable(
        "the chain kept reorganising during the scan; try again",
    ))
}

async fn sync_pass(rpc: &RpcClient, cfg: &ScanConfig, st: &mut ChainState) -> Result<Pass> {
    let head = rpc
        .block(BlockRef::Latest)
        .await?
        .ok_or_else(|| Error::unavailable("the node has no latest block"))?;
    let h = head.number.to::<u64>();
    if let Some(from) = st.rescan_from.take() {
        // Everything from `from` on is scanned again; the credits are rebuilt from the chain.
        st.rollback_above(from.saturating_sub(1));
    }
    let start = match st.next_block() {
        Some(next) => next,
        None => st.watchlist.min_from_block().map_or(h, |m| m.min(h)),
    };
    // The node's head is at or below our tip: either blocks vanished, or another branch.
    if h < start {
        if st.recent.get(&h) == Some(&head.hash) {
            st.rollback_above(h);
        } else {
            let fork = find_fork(rpc, st, h.saturating_sub(1)).await?;
            st.rollback_above(fork);
            return Ok(Pass::Again);
        }
    }
    let mut n = start;
    while n <= h {
        let block = if n == h {
            head.clone()
        } else {
            rpc.block(BlockRef::Number(n))
                .await?
                .ok_or_else(|| Error::unavailable(format!("the node lost block {n}")))?
        };
        if block.number.to::<u64>() != n {
            return Err(Error::new(
                ErrorKind::Unexpected,
                format!(
                    "asked for block {n}, the node answered block {}",
                    block.number
                ),
            ));
        }
        if let Some(parent) = n.checked_sub(1).and_then(|p| st.recent.get(&p))
            && *parent != block.parent_hash
        {
            let fork = find_fork(rpc, st, n - 1).await?;
            st.rollback_above(fork);
            return Ok(Pass::Again);
        }
        scan_block(rpc, cfg, st, &block).await?;
        n += 1;
    }
    st.head = Some(h);
    // Keep the reorg window bounded.
    let keep_from = h.saturating_sub(cfg.window);
    st.recent = st.recent.split_off(&keep_from);
    if matches!(
        cfg.policy,
        ConfirmationPolicy::Safe | ConfirmationPolicy::Finalized
    ) && st.has_unconfirmed(cfg.policy)
    {
        let tag = if cfg.policy == ConfirmationPolicy::Safe {
            BlockRef::Safe
        } else {
            BlockRef::Finalized
        };
        let tagged = rpc
            .header(tag)
            .await?
            .ok_or_else(|| Error::unavailable("the node has no safe/finalized block"))?;
        let t = tagged.number.to::<u64>();
        if let Some(ours) = st.recent.get(&t)
            && *ours != tagged.hash
        {
            // The node finalised a block we do not have: our branch is dead.
            let fork = find_fork(rpc, st, t).await?;
            st.rollback_above(fork);
            return Ok(Pass::Again);
        }
        if st.tag_block != Some(t) {
            st.touched.extend(st.ledger.keys().copied());
        }
        st.tag_block = Some(t);
    }
    Ok(Pass::Done)
}

/// The highest block at or below `from` where our hash is the node's hash; below the window,
/// the block just under it (everything in the window is rescanned).
async fn find_fork(rpc: &RpcClient, st: &ChainState, from: u64) -> Result<u64> {
    let lowest = st.recent.keys().next().copied().unwrap_or(0);
    let mut m = from;
    while m >= lowest {
        let Some(ours) = st.recent.get(&m) else {
            break;
        };
        let theirs = rpc.header(BlockRef::Number(m)).await?;
        if theirs.as_ref().map(|b| b.hash) == Some(*ours) {
            return Ok(m);
        }
        if m == 0 {
            break;
        }
        m -= 1;
    }
    Ok(lowest.saturating_sub(1))
}

async fn scan_block(
    rpc: &RpcClient,
    cfg: &ScanConfig,
    st: &mut ChainState,
    block: &Block,
) -> Result<()> {
    let native = st.watchlist.match_native(block);
    if !native.is_empty() {
        let ok = successful(rpc, block, &native).await?;
        for c in native {
            if ok.contains(&c.key.tx) {
                st.credit(c);
            }
        }
    }
    if !st.watchlist.token.is_empty() {
        let recipients: Option<Vec<B256>> = (st.watchlist.token.len() <= cfg.topic_filter_limit)
            .then(|| st.watchlist.token.keys().map(Address::into_word).collect());
        let topics = [Some(vec![TRANSFER_TOPIC]), None, recipients];
        let logs = rpc.logs_in_block(block.hash, cfg.token, &topics).await?;
        for log in logs.iter().filter(|l| l.removed) {
            // A node that reports a removed log: undo it wherever it was counted.
            if let (Some(tx), Some(i)) = (log.transaction_hash, log.log_index) {
                let key = CreditKey {
                    tx,
                    log_index: Some(i.to::<u64>()),
                };
                for (address, credits) in &mut st.ledger {
                    if credits.remove(&key).is_some() {
                        st.touched.insert(*address);
                    }
                }
            }
        }
        for c in st.watchlist.match_token_logs(cfg.token, block, &logs) {
            st.credit(c);
        }
    }
    st.recent.insert(block.number.to::<u64>(), block.hash);
    Ok(())
}

/// Hashes of the `candidates` whose receipts say they succeeded.
async fn successful(
    rpc: &RpcClient,
    block: &Block,
    candidates: &[Credit],
) -> Result<HashSet<B256>> {
    match rpc.block_receipts(block.hash).await {
        Ok(Some(receipts)) => Ok(receipts
            .iter()
            .filter(|r| r.succeeded())
            .map(|r| r.transaction_hash)
            .collect()),
        Ok(None) => Err(Error::unavailable(format!(
            "the node has no receipts for block {}",
            block.hash
        ))),
        Err(e) if e.kind() == ErrorKind::NotSupported => {
            // Older nodes: one receipt per matching transaction.
            let mut ok = HashSet::new();
            for c in candidates {
                if let Some(r) = rpc.receipt(c.key.tx).await?
                    && r.succeeded()
                {
                    ok.insert(r.transaction_hash);
                }
            }
            Ok(ok)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{Bytes, U64, address};

    fn block(number: u64, hash: u8) -> Block {
        serde_json::from_value(serde_json::json!({
            "number": format!("{number:#x}"),
            "hash": B256::repeat_byte(hash),
            "parentHash": B256::repeat_byte(hash.wrapping_sub(1)),
            "transactions": []
        }))
        .unwrap()
    }

    fn transfer_log(contract: Address, to: Address, value: u64, block: &Block, index: u64) -> Log {
        Log {
            address: contract,
            topics: vec![
                TRANSFER_TOPIC,
                Address::repeat_byte(9).into_word(),
                to.into_word(),
            ],
            data: Bytes::from(U256::from(value).to_be_bytes::<32>().to_vec()),
            block_hash: Some(block.hash),
            transaction_hash: Some(B256::repeat_byte(0x77)),
            log_index: Some(U64::from(index)),
            removed: false,
        }
    }

    #[test]
    fn transfer_topic_is_the_keccak_of_the_signature() {
        assert_eq!(
            alloy_primitives::keccak256("Transfer(address,address,uint256)"),
            TRANSFER_TOPIC
        );
    }

    #[test]
    fn token_matching_pins_contract_recipient_block_and_shape() {
        let token = address!("dAC17F958D2ee523a2206206994597C13D831ec7");
        let fake = Address::repeat_byte(0x66);
        let ours = Address::repeat_byte(0x11);
        let other = Address::repeat_byte(0x22);
        let mut w = Watchlist::default();
        w.insert(ours, EvmAsset::Usdt, 10);
        let b = block(10, 5);
        let good = transfer_log(token, ours, 1_000_000, &b, 0);
        let mut removed = transfer_log(token, ours, 5, &b, 1);
        removed.removed = true;
        let mut dirty_topic = transfer_log(token, ours, 5, &b, 2);
        dirty_topic.topics[2].0[0] = 1;
        let mut short = transfer_log(token, ours, 5, &b, 3);
        short.data = Bytes::from(vec![1, 2, 3]);
        let mut other_block = transfer_log(token, ours, 5, &b, 4);
        other_block.block_hash = Some(B256::repeat_byte(1));
        let logs = [
            good,
            transfer_log(fake, ours, 7, &b, 5),
            transfer_log(token, other, 8, &b, 6),
            removed,
            dirty_topic,
            short,
            other_block,
        ];
        let credits = w.match_token_logs(token, &b, &logs);
        assert_eq!(credits.len(), 1, "{credits:?}");
        assert_eq!(credits[0].amount, U256::from(1_000_000));
        assert_eq!(credits[0].key.log_index, Some(0));
        // Before the request was opened, nothing counts.
        assert!(
            w.match_token_logs(
                token,
                &block(9, 4),
                &[transfer_log(token, ours, 1, &block(9, 4), 0)]
            )
            .is_empty()
        );
        // An ETH request's address is not credited by token transfers.
        let mut eth_only = Watchlist::default();
        eth_only.insert(ours, EvmAsset::Eth, 0);
        assert!(eth_only.match_token_logs(token, &b, &logs).is_empty());
    }

    #[test]
    fn rollback_removes_credits_of_dropped_blocks_and_totals_follow_policy() {
        let mut st = ChainState::default();
        let to = Address::repeat_byte(0x11);
        for n in 1..=5 {
            st.recent
                .insert(n, B256::repeat_byte(u8::try_from(n).unwrap()));
        }
        for (n, amount) in [(3_u64, 100_u64), (5, 50)] {
            st.credit(Credit {
                key: CreditKey {
                    tx: B256::repeat_byte(u8::try_from(n).unwrap()),
                    log_index: None,
                },
                to,
                asset: EvmAsset::Eth,
                amount: U256::from(amount),
                block_number: n,
                block_hash: B256::repeat_byte(u8::try_from(n).unwrap()),
            });
        }
        st.head = Some(5);
        let policy = ConfirmationPolicy::Depth(3);
        let t = st.totals(&to, EvmAsset::Eth, policy).unwrap();
        assert_eq!((t.seen, t.confirmed), (U256::from(150), U256::from(100)));
        assert_eq!(
            st.totals(&to, EvmAsset::Usdt, policy).unwrap(),
            Totals::default()
        );
        st.touched.clear();
        st.rollback_above(4);
        assert_eq!(
            st.totals(&to, EvmAsset::Eth, policy).unwrap().seen,
            U256::from(100)
        );
        assert_eq!(st.drain_changed(policy), vec![to]);
        assert_eq!(st.next_block(), Some(5));
    }

    proptest::proptest! {
        /// Random histories of blocks, credits, rollbacks and head moves: the totals always
        /// equal a plain recomputation over the blocks still on the chain.
        #[test]
        fn totals_match_a_model_under_random_reorgs(
            ops in proptest::collection::vec((0_u8..3, 0_u64..4, 1_u64..1_000), 1..60),
            depth in 1_u64..5,
        ) {
            let to = Address::repeat_byte(0x11);
            let policy = ConfirmationPolicy::Depth(depth);
            let mut st = ChainState::default();
            // model: (block, amount) of every live credit
            let mut model: Vec<(u64, u64)> = Vec::new();
            let mut tip = 0_u64;
            let mut serial = 0_u64;
            for (op, k, amount) in ops {
                match op {
                    0 | 1 => {
                        tip += 1;
                        st.recent.insert(tip, B256::from(U256::from(tip)));
                        for _ in 0..k {
                            serial += 1;
                            st.credit(Credit {
                                key: CreditKey { tx: B256::from(U256::from(serial)), log_index: Some(k) },
                                to,
                                asset: EvmAsset::Usdt,
                                amount: U256::from(amount),
                                block_number: tip,
                                block_hash: B256::from(U256::from(tip)),
                            });
                            model.push((tip, amount));
                        }
                    }
                    _ => {
                        let keep = tip.saturating_sub(k);
                        st.rollback_above(keep);
                        model.retain(|(b, _)| *b <= keep);
                        tip = keep;
                    }
                }
                st.head = Some(tip);
                let t = st.totals(&to, EvmAsset::Usdt, policy).unwrap();
                let seen: u64 = model.iter().map(|(_, a)| a).sum();
                let confirmed: u64 = model
                    .iter()
                    .filter(|(b, _)| tip + 1 - b >= depth)
                    .map(|(_, a)| a)
                    .sum();
                proptest::prop_assert_eq!(t.seen, U256::from(seen));
                proptest::prop_assert_eq!(t.confirmed, U256::from(confirmed));
                proptest::prop_assert!(t.confirmed <= t.seen);
            }
        }
    }

    #[test]
    fn policy_parses() {
        assert_eq!(
            ConfirmationPolicy::parse("12").unwrap(),
            ConfirmationPolicy::Depth(12)
        );
        assert_eq!(
            ConfirmationPolicy::parse("safe").unwrap(),
            ConfirmationPolicy::Safe
        );
        assert_eq!(
            ConfirmationPolicy::parse(" finalized ").unwrap(),
            ConfirmationPolicy::Finalized
        );
        assert!(ConfirmationPolicy::parse("0").is_err());
        assert!(ConfirmationPolicy::parse("latest").is_err());
    }
}
