//! Rate sources against local fake servers answering with the real response shapes of
//! Kraken (`/0/public/Ticker`), Coinbase (`/v2/exchange-rates`), CoinGecko
//! (`/api/v3/simple/price`) and open.er-api.com (`/v6/latest/:base`).
#![cfg(feature = "rates")]

use std::{str::FromStr, sync::Arc, time::Duration};

use serde_json::json;
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

use nemordp_core::{
    Asset, Currency, Decimal, ErrorKind, ManualClock, Money, RateSource, Timestamp,
};
use nemordp_payments::rates::{
    CachedRates, CoinGecko, Coinbase, Kraken, MedianRates, OpenErApi, Pricer, SpreadRates,
};

const NOW: i64 = 1_732_579_400;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_unix_secs(NOW)))
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn kraken_body(bid: &str, ask: &str) -> serde_json::Value {
    json!({
        "error": [],
        "result": {
            "XXBTZUSD": {
                "a": [ask, "1", "1.000"],
                "b": [bid, "3", "3.000"],
                "c": [bid, "0.00100000"],
                "v": ["1234.56789012", "2345.67890123"],
                "p": ["67000.12345", "66900.23456"],
                "t": [12345, 23456],
                "l": ["66000.00000", "65900.00000"],
                "h": ["67500.00000", "67600.00000"],
                "o": "66800.00000"
            }
        }
    })
}

async fn kraken_server(bid: &str, ask: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/0/public/Ticker"))
        .and(query_param("pair", "XBTUSD"))
        .respond_with(ResponseTemplate::new(200).set_body_json(kraken_body(bid, ask)))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/0/public/Ticker"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"error": ["EQuery:Unknown asset pair"]})),
        )
        .mount(&server)
        .await;
    server
}

async fn coinbase_server(usd: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v2/exchange-rates"))
        .and(query_param("currency", "BTC"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "data": {
                "currency": "BTC",
                "rates": {"USD": usd, "EUR": "61234.5", "NGN": "104506000.123", "AED": "246700.1"}
            }
        })))
        .mount(&server)
        .await;
    server
}

/// CoinGecko answers with JSON numbers; the body is written as text so the exact digits
/// reach the client.
async fn coingecko_server(usd_number: &str, updated_at: i64) -> MockServer {
    let server = MockServer::start().await;
    let body = format!(r#"{{"bitcoin":{{"usd":{usd_number},"last_updated_at":{updated_at}}}}}"#);
    Mock::given(method("GET"))
        .and(path("/api/v3/simple/price"))
        .and(query_param("ids", "bitcoin"))
        .and(query_param("vs_currencies", "usd"))
        .and(query_param("precision", "full"))
        .and(header("x-cg-demo-api-key", "CG-demo"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "status": {"error_code": 10002, "error_message": "API Key Missing"}
        })))
        .mount(&server)
        .await;
    server
}

async fn fx_server(updated_at: i64) -> MockServer {
    let server = MockServer::start().await;
    let body = format!(
        r#"{{"result":"success","provider":"https://www.exchangerate-api.com","documentation":"https://www.exchangerate-api.com/docs/free","terms_of_use":"https://www.exchangerate-api.com/terms","time_last_update_unix":{updated_at},"time_last_update_utc":"Tue, 26 Nov 2024 00:02:31 +0000","time_next_update_unix":{},"time_next_update_utc":"Wed, 27 Nov 2024 00:02:31 +0000","time_eol_unix":0,"base_code":"USD","rates":{{"USD":1,"AED":3.6725,"GHS":15.873921,"KES":129.314488,"NGN":1687.512345,"ZAR":18.123456}}}}"#,
        updated_at + 86_400
    );
    Mock::given(method("GET"))
        .and(path("/v6/latest/USD"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(body, "application/json"))
        .mount(&server)
        .await;
    let ngn = format!(
        r#"{{"result":"success","provider":"https://www.exchangerate-api.com","time_last_update_unix":{updated_at},"time_next_update_unix":{},"time_eol_unix":0,"base_code":"NGN","rates":{{"NGN":1,"USD":0.000592589,"GHS":0.009407}}}}"#,
        updated_at + 86_400
    );
    Mock::given(method("GET"))
        .and(path("/v6/latest/NGN"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(ngn, "application/json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({
            "result": "error", "error-type": "unsupported-code"
        })))
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn kraken_ticker_bid_and_ask() {
    let server = kraken_server("67190.00000", "67190.10000").await;
    let clock = clock();
    let k = Kraken::with_base_url(&server.uri())
        .unwrap()
        .with_clock(clock.clone());
    let q = k.quote(Asset::Btc, Currency::Usd).await.unwrap();
    assert_eq!(q.bid, dec("67190"));
    assert_eq!(q.ask, Some(dec("67190.1")));
    assert_eq!(q.at, clock.now_ts());
    assert_eq!(q.source, "kraken");
    assert_eq!(
        k.quote(Asset::Btc, Currency::Ngn).await.unwrap_err().kind(),
        ErrorKind::NotSupported,
        "no NGN market on kraken"
    );
    assert_eq!(
        k.quote(Asset::Eth, Currency::Usd).await.unwrap_err().kind(),
        ErrorKind::NotSupported,
        "the fake has no ETH pair: kraken's error array"
    );
}

#[tokio::test]
async fn kraken_rejects_crossed_or_zero_books() {
    let crossed = kraken_server("67191.0", "67190.0").await;
    let k = Kraken::with_base_url(&crossed.uri()).unwrap();
    assert!(k.quote(Asset::Btc, Currency::Usd).await.is_err());
    let zero = kraken_server("0.00000", "1.0").await;
    let k = Kraken::with_base_url(&zero.uri()).unwrap();
    assert_eq!(
        k.quote(Asset::Btc, Currency::Usd).await.unwrap_err().kind(),
        ErrorKind::Unexpected
    );
}

#[tokio::test]
async fn coinbase_rates_are_strings() {
    let server = coinbase_server("67187.305").await;
    let c = Coinbase::with_base_url(&server.uri()).unwrap();
    let q = c.quote(Asset::Btc, Currency::Ngn).await.unwrap();
    assert_eq!(q.bid, dec("104506000.123"));
    assert_eq!(q.ask, None);
    assert_eq!(
        c.quote(Asset::Btc, Currency::Usd).await.unwrap().bid,
        dec("67187.305")
    );
    assert_eq!(
        c.quote(Asset::Btc, Currency::Kes).await.unwrap_err().kind(),
        ErrorKind::NotSupported
    );
}

#[tokio::test]
async fn coingecko_numbers_keep_every_digit() {
    let server = coingecko_server("67187.30244817283", NOW - 30).await;
    let cg = CoinGecko::with_base_url(&server.uri())
        .unwrap()
        .with_api_key("CG-demo");
    assert!(!format!("{cg:?}").contains("CG-demo"));
    let q = cg.quote(Asset::Btc, Currency::Usd).await.unwrap();
    assert_eq!(q.bid.to_string(), "67187.30244817283");
    assert_eq!(q.at, Timestamp::from_unix_secs(NOW - 30));
    let keyless = CoinGecko::with_base_url(&server.uri()).unwrap();
    assert_eq!(
        keyless
            .quote(Asset::Btc, Currency::Usd)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );
}

#[tokio::test]
async fn throttled_source_is_rate_limited_with_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "42")
                .set_body_json(json!({"status": {"error_code": 429, "error_message": "You've exceeded the Rate Limit."}})),
        )
        .mount(&server)
        .await;
    let e = CoinGecko::with_base_url(&server.uri())
        .unwrap()
        .quote(Asset::Btc, Currency::Usd)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::RateLimited);
    assert_eq!(e.retry_after(), Some(Duration::from_secs(42)));
}

#[tokio::test]
async fn fx_rates_for_paystack_currencies() {
    let server = fx_server(NOW - 3_600).await;
    let fx = OpenErApi::with_base_url(&server.uri()).unwrap();
    for (c, p) in [
        (Currency::Ngn, "1687.512345"),
        (Currency::Ghs, "15.873921"),
        (Currency::Zar, "18.123456"),
        (Currency::Kes, "129.314488"),
    ] {
        let q = fx.quote(Asset::Fiat(Currency::Usd), c).await.unwrap();
        assert_eq!(q.bid, dec(p), "{c}");
        assert_eq!(q.at, Timestamp::from_unix_secs(NOW - 3_600));
    }
    assert_eq!(
        fx.quote(Asset::Btc, Currency::Usd)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotSupported
    );
    assert_eq!(
        fx.quote(Asset::Fiat(Currency::Eur), Currency::Ngn)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotSupported,
        "the fake serves only USD: error-type unsupported-code"
    );
}

#[tokio::test]
async fn cache_reuses_quotes_within_the_ttl() {
    let server = coinbase_server("67187.305").await;
    let clock = clock();
    let cached = Arc::new(
        CachedRates::new(
            Coinbase::with_base_url(&server.uri()).unwrap(),
            Duration::from_secs(30),
        )
        .with_clock(clock.clone()),
    );
    let burst = (0..20).map(|_| {
        let c = cached.clone();
        async move { c.quote(Asset::Btc, Currency::Usd).await }
    });
    for q in futures::future::join_all(burst).await {
        assert_eq!(q.unwrap().bid, dec("67187.305"));
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    clock.advance(Duration::from_secs(29));
    cached.quote(Asset::Btc, Currency::Usd).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    clock.advance(Duration::from_secs(2));
    cached.quote(Asset::Btc, Currency::Usd).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    // Another pair is its own entry.
    cached.quote(Asset::Btc, Currency::Ngn).await.unwrap();
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

struct Three {
    _servers: Vec<MockServer>,
    sources: Vec<Arc<dyn RateSource>>,
    clock: Arc<ManualClock>,
}

async fn three(kraken_bid: &str, coinbase: &str, gecko: &str, gecko_at: i64) -> Three {
    let clock = clock();
    let k = kraken_server(kraken_bid, "99999999").await;
    let c = coinbase_server(coinbase).await;
    let g = coingecko_server(gecko, gecko_at).await;
    let sources: Vec<Arc<dyn RateSource>> = vec![
        Arc::new(
            Kraken::with_base_url(&k.uri())
                .unwrap()
                .with_clock(clock.clone()),
        ),
        Arc::new(
            Coinbase::with_base_url(&c.uri())
                .unwrap()
                .with_clock(clock.clone()),
        ),
        Arc::new(
            CoinGecko::with_base_url(&g.uri())
                .unwrap()
                .with_api_key("CG-demo"),
        ),
    ];
    Three {
        _servers: vec![k, c, g],
        sources,
        clock,
    }
}

#[tokio::test]
async fn median_of_three_fresh_sources() {
    let t = three("67100", "67200.5", "67300", NOW - 20).await;
    let m = MedianRates::new(t.sources.clone()).with_clock(t.clock.clone());
    let q = m.quote(Asset::Btc, Currency::Usd).await.unwrap();
    assert_eq!(q.bid, dec("67200.5"));
    assert_eq!(q.source, "median(coinbase,coingecko,kraken)");
    assert_eq!(
        q.at,
        Timestamp::from_unix_secs(NOW - 20),
        "oldest quote used"
    );
}

#[tokio::test]
async fn median_drops_stale_failed_and_outlying_sources() {
    // CoinGecko's price is 20 minutes old: dropped; median of the other two.
    let t = three("67100", "67200", "10", NOW - 1_200).await;
    let m = MedianRates::new(t.sources.clone()).with_clock(t.clock.clone());
    let q = m.quote(Asset::Btc, Currency::Usd).await.unwrap();
    assert_eq!(q.bid, dec("67150"));
    assert_eq!(q.source, "median(coinbase,kraken)");

    // An outlier (10 % off) is dropped, the rest still make 2.
    let t = three("67100", "73900", "67200", NOW).await;
    let m = MedianRates::new(t.sources.clone()).with_clock(t.clock.clone());
    let q = m.quote(Asset::Btc, Currency::Usd).await.unwrap();
    assert_eq!(q.source, "median(coingecko,kraken)");
    assert_eq!(q.bid, dec("67150"));

    // Kraken has no NGN and CoinGecko's fake has no NGN: one source left, fail closed.
    let m = MedianRates::new(t.sources.clone()).with_clock(t.clock.clone());
    let e = m.quote(Asset::Btc, Currency::Ngn).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("1 fresh quote(s), 2 required"), "{e}");
    assert!(e.message().contains("kraken"), "{e}");
    // Allowed explicitly, one source is enough.
    let q = MedianRates::new(t.sources.clone())
        .with_min_sources(1)
        .with_clock(t.clock.clone())
        .quote(Asset::Btc, Currency::Ngn)
        .await
        .unwrap();
    assert_eq!(q.bid, dec("104506000.123"));
}

#[tokio::test]
async fn all_sources_down_is_a_clear_error() {
    let down = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(503).set_body_string("<html>upstream down</html>"))
        .mount(&down)
        .await;
    let sources: Vec<Arc<dyn RateSource>> = vec![
        Arc::new(Kraken::with_base_url(&down.uri()).unwrap()),
        Arc::new(Coinbase::with_base_url(&down.uri()).unwrap()),
    ];
    let e = MedianRates::new(sources)
        .quote(Asset::Btc, Currency::Usd)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("0 fresh quote(s)"), "{e}");
    assert!(e.message().contains("http 503"), "{e}");
}

#[tokio::test]
async fn pricer_quotes_btc_with_spread_rounded_up() {
    let t = three("50000", "50000", "50000", NOW).await;
    let m = Arc::new(MedianRates::new(t.sources.clone()).with_clock(t.clock.clone()));
    let pricer = Pricer::new(m)
        .with_spread_percent(dec("2"))
        .unwrap()
        .with_clock(t.clock.clone());
    let usd = Money::parse_major(Currency::Usd, "10.00").unwrap();
    let (sats, locked) = pricer.price(usd, Asset::Btc).await.unwrap();
    // 10 / (50,000 × 0.98) = 0.000204081632… → rounded up to 0.00020409 BTC.
    assert_eq!(sats, Money::from_minor(Asset::Btc, 20_409_u64));
    assert_eq!(locked.rate.price, dec("49000"));
    assert_eq!(locked.source, "median(coinbase,coingecko,kraken)");
    assert_eq!(locked.quoted_at, Timestamp::from_unix_secs(NOW));
    assert!(
        Pricer::new(Arc::new(MedianRates::new(Vec::new())))
            .with_spread_percent(dec("-1"))
            .is_err()
    );
}

#[tokio::test]
async fn pricer_converts_usd_to_ngn_and_refuses_a_stale_feed() {
    let fresh = fx_server(NOW - 3_600).await;
    let clock = clock();
    let fx = Arc::new(OpenErApi::with_base_url(&fresh.uri()).unwrap());
    let pricer = Pricer::new(fx.clone())
        .with_max_age(Duration::from_secs(36 * 3600))
        .with_clock(clock.clone());
    let usd = Money::parse_major(Currency::Usd, "12.99").unwrap();
    let (ngn, locked) = pricer.price(usd, Asset::Fiat(Currency::Ngn)).await.unwrap();
    // 12.99 × 1687.512345 = 21920.78536155 → 21920.79 NGN (kobo, rounded up).
    assert_eq!(ngn, Money::parse_major(Currency::Ngn, "21920.79").unwrap());
    assert_eq!(locked.source, "open.er-api");
    let with_spread = pricer.clone().with_spread_percent(Decimal::ONE).unwrap();
    let (ngn_spread, _) = with_spread
        .price(usd, Asset::Fiat(Currency::Ngn))
        .await
        .unwrap();
    // × 1.01: 22139.9932151655 → 22140.00
    assert_eq!(
        ngn_spread,
        Money::parse_major(Currency::Ngn, "22140.00").unwrap()
    );

    clock.advance(Duration::from_secs(48 * 3600));
    let e = pricer
        .price(usd, Asset::Fiat(Currency::Ngn))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("refusing"), "{e}");
    assert_eq!(
        pricer
            .price(sats_money(), Asset::Btc)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
}

/// The Provisioner converts `price ÷ bid` with `quote(payment asset, price currency)`: for a
/// USD plan charged in NGN through Paystack that is `quote(NGN, USD)`.
#[tokio::test]
async fn provisioner_style_fx_stack_with_spread_and_staleness() {
    let server = fx_server(NOW - 3_600).await;
    let clock = clock();
    let stack = SpreadRates::new(
        MedianRates::new(vec![Arc::new(
            CachedRates::new(
                OpenErApi::with_base_url(&server.uri()).unwrap(),
                Duration::from_secs(3_600),
            )
            .with_clock(clock.clone()),
        )])
        .with_min_sources(1)
        .with_max_age(Duration::from_secs(36 * 3_600))
        .with_clock(clock.clone()),
        Decimal::ONE,
    )
    .unwrap();
    let q = stack
        .quote(Asset::Fiat(Currency::Ngn), Currency::Usd)
        .await
        .unwrap();
    assert_eq!(q.bid, dec("0.000592589") * dec("0.99"));
    assert_eq!(q.source, "median(open.er-api)-1%");
    let usd = Money::parse_major(Currency::Usd, "12.99").unwrap();
    let ngn = usd
        .convert(&q.rate().unwrap(), nemordp_core::Rounding::Up)
        .unwrap();
    // 12.99 / 0.00058666311 = 22142.1796… NGN, rounded up to the kobo.
    assert_eq!(ngn, Money::parse_major(Currency::Ngn, "22142.18").unwrap());
    clock.advance(Duration::from_secs(48 * 3_600));
    let e = stack
        .quote(Asset::Fiat(Currency::Ngn), Currency::Usd)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(e.message().contains("stale"), "{e}");
}

fn sats_money() -> Money {
    Money::from_minor(Asset::Btc, 1_u64)
}

trait NowTs {
    fn now_ts(&self) -> Timestamp;
}

impl NowTs for ManualClock {
    fn now_ts(&self) -> Timestamp {
        nemordp_core::Clock::now(self)
    }
}
