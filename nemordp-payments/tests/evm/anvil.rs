//! A real anvil node for the EVM tests, benchmarks and example: finds the binary installed by
//! `scripts/peers.d/20-anvil.sh`, starts it on a free 127.0.0.1 port with mining on demand, and
//! drives it with unlocked dev accounts (no keys in the tests).
#![allow(dead_code, unreachable_pub)]

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// The compiled 6-decimal test token (see TestToken.sol and scripts/regen-test-token.sh).
pub const TOKEN_BIN: &str = include_str!("TestToken.bin");

/// Where the peers script puts anvil.
pub const DEFAULT_ANVIL: &str =
    "/var/tmp/nemordp-peers/node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// The anvil binary: `NEMORDP_ANVIL`, else the peers cache.
pub fn anvil_path() -> Option<PathBuf> {
    let p = std::env::var_os("NEMORDP_ANVIL")
        .map_or_else(|| PathBuf::from(DEFAULT_ANVIL), PathBuf::from);
    p.is_file().then_some(p)
}

/// `None` with a printed reason when anvil is missing; panics instead when `CI=true`.
pub async fn start_or_skip(test: &str) -> Option<Anvil> {
    let Some(path) = anvil_path() else {
        let reason = format!(
            "{test}: skipped: anvil not found (run scripts/peers.d/20-anvil.sh or set NEMORDP_ANVIL)"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{reason}; CI=true requires it"
        );
        eprintln!("{reason}");
        return None;
    };
    Some(Anvil::start(&path).await)
}

/// A running anvil, killed on drop.
#[derive(Debug)]
pub struct Anvil {
    child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    http: reqwest::Client,
    /// Unlocked dev accounts.
    pub accounts: Vec<String>,
}

impl Anvil {
    async fn start(path: &PathBuf) -> Self {
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = tokio::process::Command::new(path)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--no-mining",
                    "--silent",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("spawn anvil");
            let mut anvil = Self {
                child,
                url: format!("http://127.0.0.1:{port}"),
                http: reqwest::Client::new(),
                accounts: Vec::new(),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(accounts) = anvil.try_rpc("eth_accounts", json!([])).await {
                    anvil.accounts = serde_json::from_value(accounts).unwrap();
                    return anvil;
                }
                if let Ok(Some(status)) = anvil.child.try_wait() {
                    last_err = format!("anvil exited with {status}");
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("anvil did not start: {last_err}");
    }

    async fn try_rpc(&self, method: &str, params: Value) -> Result<Value, String> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let v: Value = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if let Some(e) = v.get("error") {
            return Err(e.to_string());
        }
        Ok(v["result"].clone())
    }

    /// A JSON-RPC call that must succeed.
    pub async fn rpc(&self, method: &str, params: Value) -> Value {
        self.try_rpc(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Mines `n` blocks.
    pub async fn mine(&self, n: u64) {
        self.rpc("anvil_mine", json!([format!("{n:#x}")])).await;
    }

    /// Current head number.
    pub async fn head(&self) -> u64 {
        let v = self.rpc("eth_blockNumber", json!([])).await;
        u64::from_str_radix(v.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
    }

    /// Sends a transaction from an unlocked account (not mined yet); returns its hash.
    pub async fn send(&self, tx: Value) -> String {
        self.rpc("eth_sendTransaction", json!([tx]))
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sends `wei` from dev account `from` to `to`.
    pub async fn send_eth(&self, from: usize, to: &str, wei: u128) -> String {
        self.send(json!({"from": self.accounts[from], "to": to, "value": format!("{wei:#x}")}))
            .await
    }

    /// Deploys a fresh test token (supply 10¹⁵ base units to account 0), mined; its address.
    pub async fn deploy_token(&self) -> String {
        let supply = format!("{:064x}", 1_000_000_000_000_000_u128);
        let data = format!("0x{}{supply}", TOKEN_BIN.trim());
        let hash = self
            .send(json!({"from": self.accounts[0], "data": data, "gas": "0x2dc6c0"}))
            .await;
        self.mine(1).await;
        let receipt = self.rpc("eth_getTransactionReceipt", json!([hash])).await;
        assert_eq!(
            receipt["status"], "0x1",
            "token deployment failed: {receipt}"
        );
        receipt["contractAddress"].as_str().unwrap().to_owned()
    }

    /// Sends `units` of `token` from account 0 to `to` (not mined yet).
    pub async fn send_token(&self, token: &str, to: &str, units: u128) -> String {
        let data = format!(
            "0xa9059cbb{:0>64}{units:064x}",
            to.trim_start_matches("0x").to_ascii_lowercase()
        );
        self.send(json!({"from": self.accounts[0], "to": token, "data": data, "gas": "0x30d40"}))
            .await
    }

    /// `evm_snapshot`.
    pub async fn snapshot(&self) -> Value {
        self.rpc("evm_snapshot", json!([])).await
    }

    /// `evm_revert`.
    pub async fn revert(&self, id: Value) {
        assert_eq!(self.rpc("evm_revert", json!([id])).await, json!(true));
    }
}
