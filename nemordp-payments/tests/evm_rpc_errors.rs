//! How the EVM backend reports a node that misbehaves: throttling with `Retry-After`, server
//! errors, JSON-RPC error objects, bodies that are not JSON-RPC, and the wrong chain. Served by
//! a local HTTP server answering like a JSON-RPC node.
#![cfg(feature = "eth")]

use std::{fmt::Write as _, sync::Arc, time::Duration};

use serde_json::json;
use wiremock::{
    Mock, MockServer, Request, Respond, ResponseTemplate,
    matchers::{body_partial_json, method},
};

use nemordp_core::{ErrorKind, sim::store::MemoryStore};
use nemordp_payments::evm::EvmPayments;

/// Any valid xpub (BIP32 test vector 1, m).
const XPUB: &str = "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8";

/// Answers a JSON-RPC request with `result`, echoing its id.
struct Answer(serde_json::Value);

impl Respond for Answer {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let mut out = self.0.clone();
        out["jsonrpc"] = json!("2.0");
        out["id"] = body["id"].clone();
        ResponseTemplate::new(200).set_body_json(out)
    }
}

async fn build(server: &MockServer, chain: Option<u64>) -> nemordp_core::Error {
    let mut b = EvmPayments::builder().rpc_url(server.uri()).xpub(XPUB);
    if let Some(c) = chain {
        b = b.chain_id(c);
    }
    b.build(Arc::new(MemoryStore::new())).await.unwrap_err()
}

#[tokio::test]
async fn node_failures_are_typed_errors() {
    let cases: Vec<(ResponseTemplate, ErrorKind)> = vec![
        (
            ResponseTemplate::new(429).insert_header("Retry-After", "7"),
            ErrorKind::RateLimited,
        ),
        (ResponseTemplate::new(503), ErrorKind::Unavailable),
        (ResponseTemplate::new(401), ErrorKind::Unauthenticated),
        (
            ResponseTemplate::new(200).set_body_string("<html>busy</html>"),
            ErrorKind::Unexpected,
        ),
        // A JSON-RPC answer for another request id.
        (
            ResponseTemplate::new(200)
                .set_body_json(json!({"jsonrpc": "2.0", "id": 999, "result": "0x1"})),
            ErrorKind::Unexpected,
        ),
    ];
    for (response, kind) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(response)
            .mount(&server)
            .await;
        let e = build(&server, None).await;
        assert_eq!(e.kind(), kind, "{e}");
        if kind == ErrorKind::RateLimited {
            assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        }
    }
}

#[tokio::test]
async fn json_rpc_errors_and_wrong_shapes_are_typed() {
    let cases = [
        (
            json!({"error": {"code": -32005, "message": "limit exceeded"}}),
            ErrorKind::RateLimited,
        ),
        (
            json!({"error": {"code": -32000, "message": "header not found"}}),
            ErrorKind::Unavailable,
        ),
        (
            json!({"error": {"code": -32601, "message": "method not found"}}),
            ErrorKind::NotSupported,
        ),
        (json!({"result": "mainnet"}), ErrorKind::Unexpected), // not a quantity
        (json!({"result": null}), ErrorKind::Unexpected),
        (json!({}), ErrorKind::Unexpected),
    ];
    for (answer, kind) in cases {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(Answer(answer.clone()))
            .mount(&server)
            .await;
        let e = build(&server, None).await;
        assert_eq!(e.kind(), kind, "{answer}: {e}");
    }
}

#[tokio::test]
async fn a_node_on_another_chain_is_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(body_partial_json(json!({"method": "eth_chainId"})))
        .respond_with(Answer(json!({"result": "0x1"})))
        .mount(&server)
        .await;
    let e = build(&server, Some(31337)).await;
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.message().contains("chain 1"), "{e}");
}

#[tokio::test]
async fn configuration_errors_are_invalid_config() {
    let store = Arc::new(MemoryStore::new());
    let e = EvmPayments::builder()
        .xpub(XPUB)
        .build(store.clone())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = EvmPayments::builder()
        .rpc_url("http://127.0.0.1:1")
        .build(store.clone())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
    let e = EvmPayments::builder()
        .rpc_url("file:///etc/passwd")
        .xpub(XPUB)
        .build(store)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig);
}

/// Hosted node URLs carry the API key: it must not show in errors (Display or Debug).
#[tokio::test]
async fn the_node_url_key_never_shows_in_errors() {
    let e = EvmPayments::builder()
        .rpc_url("http://127.0.0.1:1/v3/supersecretkey0042")
        .xpub(XPUB)
        .build(Arc::new(MemoryStore::new()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let mut shown = format!("{e} {e:?}");
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        write!(shown, " {s} {s:?}").unwrap();
        source = s.source();
    }
    assert!(!shown.contains("supersecretkey0042"), "{shown}");
}
