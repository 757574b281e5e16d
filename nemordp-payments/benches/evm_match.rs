//! Matching one block against 100,000 watched addresses (50,000 ETH, 50,000 USDT requests).
//!
//! The block is mainnet-sized: 300 transactions (native transfers and token calls) and 400
//! USDT `Transfer` logs, with 3 native payments and 3 token payments to watched addresses.
//! Goal: under 5 ms per block.
//!
//! Run: `cargo bench -p nemordp-payments --features eth,usdt --bench evm_match`.

use std::hint::black_box;

use alloy_primitives::{Address, B256, U256};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use nemordp_payments::evm::{
    EvmAsset, MAINNET_USDT, Watchlist,
    model::{RpcBlock, RpcLog},
};

const WATCHED: u64 = 100_000;

/// A deterministic pseudo-random address.
fn addr(seed: u64) -> Address {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xDEAD_BEEF;
    let mut bytes = [0_u8; 20];
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_be_bytes()[..chunk.len()]);
    }
    Address::from(bytes)
}

fn fixture() -> (Watchlist, RpcBlock, Vec<RpcLog>) {
    let mut w = Watchlist::default();
    for i in 0..WATCHED {
        let asset = if i % 2 == 0 {
            EvmAsset::Eth
        } else {
            EvmAsset::Usdt
        };
        w.insert(addr(i), asset, 1);
    }
    let block_hash = B256::repeat_byte(0xab);
    // Native payments to watched ETH addresses 0, 2, 4; the rest to strangers.
    let txs: Vec<_> = (0..300_u64)
        .map(|i| {
            let to = if i < 3 { addr(i * 2) } else { addr(1_000_000 + i) };
            json!({"hash": B256::from(U256::from(i)), "to": to, "value": format!("{:#x}", 1_000 + i), "type": "0x2"})
        })
        .collect();
    let block: RpcBlock = serde_json::from_value(json!({
        "number": "0x100", "hash": block_hash, "parentHash": B256::repeat_byte(0xaa),
        "transactions": txs
    }))
    .unwrap();
    let logs: Vec<RpcLog> = (0..400_u64)
        .map(|i| {
            let to = if i < 3 {
                addr(i * 2 + 1)
            } else {
                addr(2_000_000 + i)
            };
            serde_json::from_value(json!({
                "address": MAINNET_USDT,
                "topics": [
                    "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef",
                    addr(3_000_000 + i).into_word(),
                    to.into_word()
                ],
                "data": B256::from(U256::from(5_000_000 + i)),
                "blockHash": block_hash,
                "blockNumber": "0x100",
                "transactionHash": B256::from(U256::from(10_000 + i)),
                "logIndex": format!("{i:#x}"),
                "removed": false
            }))
            .unwrap()
        })
        .collect();
    (w, block, logs)
}

fn bench(c: &mut Criterion) {
    let (w, block, logs) = fixture();
    let native = w.match_native(&block);
    let token = w.match_token_logs(MAINNET_USDT, &block, &logs);
    assert_eq!(
        (native.len(), token.len()),
        (3, 3),
        "the fixture's payments are found"
    );
    c.bench_function(
        "evm: match a 300-tx, 400-log block against 100,000 watched",
        |b| {
            b.iter(|| {
                let n = black_box(&w).match_native(black_box(&block));
                let t = black_box(&w).match_token_logs(
                    MAINNET_USDT,
                    black_box(&block),
                    black_box(&logs),
                );
                black_box((n, t))
            });
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
