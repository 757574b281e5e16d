//! Money parsing: `Money::from_str` ("<amount> <ASSET>") and `Money::parse_major` for every
//! asset. Whatever is accepted is a plain decimal (ASCII digits, at most one `.`), displays
//! canonically (the same digits, the fraction padded with zeros to the asset's decimals) and
//! parses back to an equal value, also through serde.
//!
//! Input: the raw bytes as a UTF-8 string.
#![no_main]

use std::str::FromStr;

use libfuzzer_sys::fuzz_target;
use nemordp_core::{Asset, Currency, Money};

fn assets() -> Vec<Asset> {
    let mut all: Vec<Asset> = Currency::ALL.iter().copied().map(Asset::Fiat).collect();
    all.extend([Asset::Btc, Asset::Eth, Asset::Usdt]);
    all
}

/// Checks an accepted major-unit `amount` of `money`.
fn check_amount(amount: &str, money: &Money) {
    let decimals = usize::from(money.asset().decimals());
    assert!(
        amount.bytes().all(|b| b.is_ascii_digit() || b == b'.'),
        "accepted non-digits: {amount:?}"
    );
    assert!(amount.matches('.').count() <= 1, "two points: {amount:?}");
    let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
    assert!(!int.is_empty(), "no integer digits: {amount:?}");
    assert!(
        int == "0" || !int.starts_with('0'),
        "leading zero: {amount:?}"
    );
    assert!(frac.len() <= decimals, "too many decimals: {amount:?}");
    assert!(
        !amount.ends_with('.'),
        "nothing after the point: {amount:?}"
    );

    // Canonical display: same integer digits, fraction padded with zeros.
    let shown = money.to_string();
    let code = money.asset().code();
    let expected = if decimals == 0 {
        format!("{int} {code}")
    } else {
        format!("{int}.{frac:0<decimals$} {code}")
    };
    assert_eq!(shown, expected, "display of {amount:?}");

    // Round trips.
    let back = Money::from_str(&shown).expect("display does not parse back");
    assert_eq!(back, *money, "display round trip of {amount:?}");
    let json = serde_json::to_string(money).unwrap();
    let back: Money = serde_json::from_str(&json).expect("serde round trip");
    assert_eq!(back, *money);
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let assets = assets();

    if let Ok(money) = Money::from_str(text) {
        assert_eq!(
            text.matches(' ').count(),
            1,
            "not exactly one space: {text:?}"
        );
        let (amount, code) = text.split_once(' ').unwrap();
        assert!(
            assets.iter().any(|a| a.code() == code),
            "unknown asset code {code:?} accepted"
        );
        assert_eq!(money.asset().code(), code);
        check_amount(amount, &money);
        // Equivalent to parsing the amount for that asset.
        assert_eq!(Money::parse_major(money.asset(), amount).ok(), Some(money));
    }

    for asset in assets {
        if let Ok(money) = Money::parse_major(asset, text) {
            assert_eq!(money.asset(), asset);
            check_amount(text, &money);
        }
    }
});
