//! A small Ethereum JSON-RPC client over HTTP: the handful of methods the watcher needs, typed
//! errors for every failure, and a call counter (the watcher's budget is counted in calls).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use alloy_primitives::{Address, B256, U64};
use reqwest::header::RETRY_AFTER;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::{Value, json};

use nemordp_core::{Error, ErrorKind, Result};

use super::model::{RpcBlock, RpcHeader, RpcLog, RpcReceipt};

/// Backend name on errors raised by the RPC layer.
const NAME: &str = "evm";

/// A block selector: a number or one of the spec's tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockRef {
    /// A block number.
    Number(u64),
    /// `latest`.
    Latest,
    /// `safe`.
    Safe,
    /// `finalized`.
    Finalized,
}

impl BlockRef {
    fn to_param(self) -> Value {
        match self {
            Self::Number(n) => Value::String(format!("{n:#x}")),
            Self::Latest => Value::String("latest".into()),
            Self::Safe => Value::String("safe".into()),
            Self::Finalized => Value::String("finalized".into()),
        }
    }
}

/// The JSON-RPC client.
#[derive(Clone)]
pub(crate) struct RpcClient {
    http: reqwest::Client,
    url: String,
    next_id: Arc<AtomicU64>,
    calls: Arc<AtomicU64>,
}

impl std::fmt::Debug for RpcClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Hosted node URLs carry the API key in the path or query: show the host only.
        f.debug_struct("RpcClient")
            .field("node", &redacted(&self.url))
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

/// `scheme://host[:port]/…` of a node URL, without path, query or credentials.
pub(crate) fn redacted(url: &str) -> String {
    reqwest::Url::parse(url).map_or_else(
        |_| "(unparsable URL)".to_owned(),
        |u| {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!("{}://{}{port}/…", u.scheme(), u.host_str().unwrap_or(""))
        },
    )
}

impl RpcClient {
    /// A client for `url` with a per-request timeout.
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            Error::invalid_config(format!("ETH_RPC_URL is not a URL: {e}")).with_backend(NAME)
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(
                Error::invalid_config("ETH_RPC_URL must be an http:// or https:// URL")
                    .with_backend(NAME),
            );
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| {
                Error::invalid_config("cannot build the HTTP client")
                    .with_source(e)
                    .with_backend(NAME)
            })?;
        Ok(Self {
            http,
            url: url.to_owned(),
            next_id: Arc::new(AtomicU64::new(1)),
            calls: Arc::new(AtomicU64::new(0)),
        })
    }

    /// How many JSON-RPC calls this client (and its clones) has made.
    pub(crate) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls `method` with `params` and decodes the `result`.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &'static str,
        params: impl Serialize,
    ) -> Result<T> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let body = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let fail = |kind: ErrorKind, msg: String| {
            Error::new(kind, format!("{method}: {msg}")).with_backend(NAME)
        };
        let response = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| {
                fail(ErrorKind::Unavailable, "the node did not answer".into())
                    .with_source(e.without_url())
            })?;
        let status = response.status();
        if status.as_u16() == 429 {
            let retry = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(
                fail(ErrorKind::RateLimited, "rate limited (HTTP 429)".into())
                    .with_retry_after(retry),
            );
        }
        let bytes = response.bytes().await.map_err(|e| {
            fail(ErrorKind::Unavailable, "the response body broke off".into())
                .with_source(e.without_url())
        })?;
        if status.is_server_error() {
            return Err(fail(ErrorKind::Unavailable, format!("HTTP {status}")));
        }
        if matches!(status.as_u16(), 401 | 403) {
            return Err(fail(
                ErrorKind::Unauthenticated,
                format!("HTTP {status}: check the key in ETH_RPC_URL"),
            ));
        }
        if !status.is_success() {
            return Err(fail(ErrorKind::Unexpected, format!("HTTP {status}")));
        }
        let envelope: Value = serde_json::from_slice(&bytes).map_err(|e| {
            fail(ErrorKind::Unexpected, "the answer is not JSON".into()).with_source(e)
        })?;
        if envelope.get("id").and_then(Value::as_u64) != Some(id) {
            return Err(fail(
                ErrorKind::Unexpected,
                "the answer carries another request id".into(),
            ));
        }
        if let Some(err) = envelope.get("error") {
            return Err(rpc_error(method, err));
        }
        let result = envelope
            .get("result")
            .ok_or_else(|| fail(ErrorKind::Unexpected, "the answer has no result".into()))?;
        T::deserialize(result).map_err(|e| {
            fail(
                ErrorKind::Unexpected,
                "the result does not have the spec's shape".into(),
            )
            .with_source(e)
        })
    }

    /// `eth_chainId`.
    pub(crate) async fn chain_id(&self) -> Result<u64> {
        let id: U64 = self.call("eth_chainId", ()).await?;
        Ok(id.to())
    }

    /// `eth_blockNumber`.
    pub(crate) async fn block_number(&self) -> Result<u64> {
        let n: U64 = self.call("eth_blockNumber", ()).await?;
        Ok(n.to())
    }

    /// `eth_getBlockByNumber(block, true)`; `None` when the node has no such block.
    pub(crate) async fn block(&self, block: BlockRef) -> Result<Option<RpcBlock>> {
        self.call("eth_getBlockByNumber", (block.to_param(), true))
            .await
    }

    /// `eth_getBlockByNumber(block, false)`: number and hash only.
    pub(crate) async fn header(&self, block: BlockRef) -> Result<Option<RpcHeader>> {
        self.call("eth_getBlockByNumber", (block.to_param(), false))
            .await
    }

    /// `eth_getLogs({blockHash, address, topics})`.
    pub(crate) async fn logs_in_block(
        &self,
        block_hash: B256,
        contract: Address,
        topics: &[Option<Vec<B256>>],
    ) -> Result<Vec<RpcLog>> {
        let filter = json!({
            "blockHash": block_hash,
            "address": contract,
            "topics": topics,
        });
        self.call("eth_getLogs", [filter]).await
    }

    /// `eth_getBlockReceipts(blockHash)`.
    pub(crate) async fn block_receipts(&self, block_hash: B256) -> Result<Option<Vec<RpcReceipt>>> {
        self.call("eth_getBlockReceipts", [block_hash]).await
    }

    /// `eth_getTransactionReceipt(hash)`.
    pub(crate) async fn receipt(&self, tx: B256) -> Result<Option<RpcReceipt>> {
        self.call("eth_getTransactionReceipt", [tx]).await
    }
}

/// Maps a JSON-RPC error object to an error kind.
fn rpc_error(method: &'static str, err: &Value) -> Error {
    let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
    let message = err
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("(no message)");
    let lower = message.to_ascii_lowercase();
    let kind = match code {
        -32601 => ErrorKind::NotSupported,
        -32602 | -32600 => ErrorKind::InvalidInput,
        // -32005 "limit exceeded" (EIP-1474) and hosted nodes' throttling messages.
        -32005 => ErrorKind::RateLimited,
        _ if lower.contains("rate limit") || lower.contains("too many requests") => {
            ErrorKind::RateLimited
        }
        // 4444 pruned history, -39001 unknown block (pre-merge tags), internal errors.
        _ => ErrorKind::Unavailable,
    };
    Error::new(kind, format!("{method}: node error {code}: {message}")).with_backend(NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_codes_map_to_kinds() {
        let e = rpc_error("eth_getLogs", &json!({"code": -32005, "message": "limit"}));
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        let e = rpc_error(
            "eth_getBlockReceipts",
            &json!({"code": -32601, "message": "nope"}),
        );
        assert_eq!(e.kind(), ErrorKind::NotSupported);
        let e = rpc_error(
            "eth_getLogs",
            &json!({"code": 4444, "message": "pruned history"}),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        let e = rpc_error("x", &json!("garbage"));
        assert_eq!(e.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn block_refs_are_spec_params() {
        assert_eq!(BlockRef::Number(255).to_param(), json!("0xff"));
        assert_eq!(BlockRef::Finalized.to_param(), json!("finalized"));
        assert!(RpcClient::new("ftp://x", Duration::from_secs(1)).is_err());
        assert!(RpcClient::new("not a url", Duration::from_secs(1)).is_err());
        let c = RpcClient::new(
            "https://user:pw@mainnet.infura.io/v3/0123456789abcdef?key=secret",
            Duration::from_secs(1),
        )
        .unwrap();
        let shown = format!("{c:?}");
        assert!(shown.contains("https://mainnet.infura.io/…"), "{shown}");
        for secret in ["0123456789abcdef", "secret", "pw"] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
}
