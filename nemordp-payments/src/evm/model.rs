//! The parts of JSON-RPC answers the watcher reads. Only the fields used are declared, so
//! transaction types this code does not know (blobs, deposits, …) still parse.

use alloy_primitives::{Address, B256, Bytes, U64, U256};
use serde::Deserialize;

/// A block from `eth_getBlockByNumber(_, true)`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
#[serde(rename_all = "camelCase")]
pub struct RpcBlock {
    /// Height.
    pub number: U64,
    /// Block hash.
    pub hash: B256,
    /// Parent's hash: links the chain the watcher has scanned.
    pub parent_hash: B256,
    /// Transactions (full objects).
    #[serde(default)]
    pub transactions: Vec<RpcTx>,
}

/// A block header from `eth_getBlockByNumber(_, false)` (transactions left out).
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
#[serde(rename_all = "camelCase")]
pub struct RpcHeader {
    /// Height.
    pub number: U64,
    /// Block hash.
    pub hash: B256,
}

/// A transaction inside a block.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
#[serde(rename_all = "camelCase")]
pub struct RpcTx {
    /// Transaction hash.
    pub hash: B256,
    /// Recipient; `None` for contract creation.
    #[serde(default)]
    pub to: Option<Address>,
    /// Wei sent.
    #[serde(default)]
    pub value: U256,
}

/// A log from `eth_getLogs`.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
#[serde(rename_all = "camelCase")]
pub struct RpcLog {
    /// Emitting contract.
    pub address: Address,
    /// Indexed topics.
    #[serde(default)]
    pub topics: Vec<B256>,
    /// Non-indexed data.
    #[serde(default)]
    pub data: Bytes,
    /// Block hash (absent for pending logs).
    #[serde(default)]
    pub block_hash: Option<B256>,
    /// Transaction hash.
    #[serde(default)]
    pub transaction_hash: Option<B256>,
    /// Position in the block.
    #[serde(default)]
    pub log_index: Option<U64>,
    /// True when a reorg removed the log.
    #[serde(default)]
    pub removed: bool,
}

/// A receipt; only the outcome matters.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
#[serde(rename_all = "camelCase")]
pub struct RpcReceipt {
    /// Transaction hash.
    pub transaction_hash: B256,
    /// `0x1` success, `0x0` failure (post-Byzantium).
    #[serde(default)]
    pub status: Option<U64>,
}

impl RpcReceipt {
    /// True when the transaction succeeded.
    pub fn succeeded(&self) -> bool {
        self.status.is_some_and(|s| s == U64::from(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spec_shapes_and_tolerates_unknown_fields() {
        let block: RpcBlock = serde_json::from_value(serde_json::json!({
            "number": "0x10", "hash": format!("0x{}", "11".repeat(32)),
            "parentHash": format!("0x{}", "22".repeat(32)), "extra": [1, 2],
            "transactions": [
                {"hash": format!("0x{}", "33".repeat(32)), "to": null, "value": "0x0", "type": "0x7e"},
                {"hash": format!("0x{}", "44".repeat(32)), "to": format!("0x{}", "55".repeat(20)), "value": "0xde0b6b3a7640000"}
            ]
        }))
        .unwrap();
        assert_eq!(block.number.to::<u64>(), 16);
        assert_eq!(block.transactions[0].to, None);
        assert_eq!(
            block.transactions[1].value,
            U256::from(10_u64).pow(U256::from(18))
        );
        let r: RpcReceipt = serde_json::from_value(serde_json::json!({
            "transactionHash": format!("0x{}", "33".repeat(32)), "status": "0x0"
        }))
        .unwrap();
        assert!(!r.succeeded());
        assert!(serde_json::from_value::<RpcBlock>(serde_json::json!({"number": "12"})).is_err());
    }
}
