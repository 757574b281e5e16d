#![cfg(feature = "paystack")]
//! The Paystack verifier against a stateful fake Paystack (wiremock with one responder holding
//! the state). Every request the client sends, and every verify answer the fake gives, is
//! checked against the OpenAPI spec in `shared/specs/paystack/`.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use nemordp_core::{
    Asset, Currency, ErrorKind, Money, OrderId, Timestamp, async_trait,
    payment::{
        InvoiceState, InvoiceStatus, Payment, PaymentRequest, PaymentVerifier, VerifiedEvent,
        VerifiedEventKind, WebhookRequest,
    },
    testkit::payment::{self as kit, PaymentKitDriver},
};
use nemordp_payments::paystack::{
    MismatchKind, PAYSTACK_SOURCE_IPS, PaymentMismatch, Paystack, PaystackBuilder,
    SIGNATURE_HEADER, webhook::sign,
};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

const KEY: &str = "sk_test_0123456789abcdef";

// ----- the fake -----

#[derive(Debug, Clone)]
struct FakeTx {
    id: u64,
    reference: String,
    requested: u64,
    amount: u64,
    currency: String,
    status: String,
    email: String,
    metadata: Value,
    signature: String,
}

#[derive(Debug, Clone)]
struct Scripted {
    method: &'static str,
    path_prefix: &'static str,
    status: u16,
    body: Value,
    retry_after: Option<&'static str>,
}

#[derive(Debug, Default)]
struct State {
    txs: HashMap<String, FakeTx>,
    next_id: u64,
    script: VecDeque<Scripted>,
    customers: HashMap<String, String>,
    plans: Vec<Value>,
    /// Subscription code → (body it was created with, email token, enabled).
    subs: HashMap<String, (Value, String, bool)>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<State>>);

fn error(status: u16, message: &str, code: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "status": false, "message": message,
        "meta": {"nextStep": "Try again"}, "type": "validation_error", "code": code
    }))
}

impl FakeTx {
    fn view(&self) -> Value {
        let success = self.status == "success" || self.status == "reversed";
        json!({
            "id": self.id, "domain": "test", "status": self.status, "reference": self.reference,
            "receipt_number": null, "amount": self.amount, "message": null,
            "gateway_response": if success { "Successful" } else { "Declined" },
            "paid_at": if success { json!("2026-11-26T01:00:00.000Z") } else { Value::Null },
            "created_at": "2026-11-26T00:59:00.000Z", "channel": "card", "currency": self.currency,
            "ip_address": "198.51.100.7", "metadata": self.metadata, "log": null,
            "fees": 150, "fees_split": null,
            "authorization": {
                "authorization_code": format!("AUTH_{}", self.id), "bin": "408408", "last4": "4081",
                "exp_month": "12", "exp_year": "2030", "channel": "card", "card_type": "visa",
                "bank": "TEST BANK", "country_code": "NG", "brand": "visa", "reusable": true,
                "signature": self.signature, "account_name": null,
                "receiver_bank_account_number": null, "receiver_bank": null
            },
            "customer": {"id": 77, "first_name": null, "last_name": null, "email": self.email,
                         "customer_code": "CUS_fake77", "phone": null, "metadata": null,
                         "risk_action": "default", "international_format_phone": null},
            "plan": null, "split": {}, "order_id": null, "paidAt": null, "createdAt": "2026-11-26T00:59:00.000Z",
            "requested_amount": self.requested, "pos_transaction_data": null, "source": null,
            "fees_breakdown": null, "connect": null, "transaction_date": "2026-11-26T00:59:00.000Z", "plan_object": {},
            "subaccount": {}
        })
    }
}

impl Respond for Fake {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = self.0.lock().unwrap();
        let path = req.url.path().to_owned();
        let method = req.method.as_str().to_owned();
        if let Some(i) = st
            .script
            .iter()
            .position(|s| s.method == method && path.starts_with(s.path_prefix))
        {
            let s = st.script.remove(i).unwrap();
            let mut t = ResponseTemplate::new(s.status).set_body_json(s.body);
            if let Some(r) = s.retry_after {
                t = t.insert_header("retry-after", r);
            }
            return t;
        }
        let auth = req
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {KEY}")) {
            return error(401, "Invalid key", "invalid_key");
        }
        match (method.as_str(), path.as_str()) {
            ("POST", "/transaction/initialize") => {
                let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
                    return error(400, "Invalid JSON", "validation_error");
                };
                let Some(amount) = body["amount"].as_u64().filter(|a| *a > 0) else {
                    return error(400, "Invalid Amount Sent", "validation_error");
                };
                let Some(email) = body["email"].as_str().filter(|e| e.contains('@')) else {
                    return error(400, "Invalid Email Address Passed", "validation_error");
                };
                let currency = body["currency"].as_str().unwrap_or("NGN").to_owned();
                if !["GHS", "KES", "NGN", "ZAR", "USD"].contains(&currency.as_str()) {
                    return error(
                        400,
                        "Currency not supported by merchant",
                        "unsupported_currency",
                    );
                }
                st.next_id += 1;
                let id = 4_099_000_000 + st.next_id;
                let reference = body["reference"]
                    .as_str()
                    .map_or_else(|| format!("T{id}"), str::to_owned);
                if !reference
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.=".contains(&b))
                {
                    return error(400, "Invalid reference", "validation_error");
                }
                if st.txs.contains_key(&reference) {
                    return error(
                        400,
                        "Duplicate Transaction Reference",
                        "duplicate_reference",
                    );
                }
                st.txs.insert(
                    reference.clone(),
                    FakeTx {
                        id,
                        reference: reference.clone(),
                        requested: amount,
                        amount,
                        currency,
                        status: "abandoned".into(),
                        email: email.to_owned(),
                        metadata: body.get("metadata").cloned().unwrap_or(Value::Null),
                        signature: format!("SIG_{}", email.len()),
                    },
                );
                let access = format!("acc_{id}");
                ResponseTemplate::new(200).set_body_json(json!({
                    "status": true, "message": "Authorization URL created",
                    "data": {"authorization_url": format!("https://checkout.paystack.com/{access}"),
                             "access_code": access, "reference": reference}
                }))
            }
            ("GET", p) if p.starts_with("/transaction/verify/") => {
                let reference = &p["/transaction/verify/".len()..];
                match st.txs.get(reference) {
                    Some(tx) => ResponseTemplate::new(200).set_body_json(json!({
                        "status": true, "message": "Verification successful", "data": tx.view()
                    })),
                    None => error(
                        404,
                        "Transaction reference not found",
                        "transaction_not_found",
                    ),
                }
            }
            ("POST", "/customer") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let Some(email) = body["email"].as_str() else {
                    return error(400, "Email is required", "validation_error");
                };
                st.next_id += 1;
                let n = st.next_id;
                // A known e-mail gives back the same customer.
                let code = st
                    .customers
                    .entry(email.to_owned())
                    .or_insert_with(|| format!("CUS_fake{n}"))
                    .clone();
                ResponseTemplate::new(200).set_body_json(json!({
                    "status": true, "message": "Customer created",
                    "data": {"email": email, "customer_code": code, "id": n, "integration": 1,
                             "domain": "test", "identified": false}
                }))
            }
            ("POST", "/plan") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                if !["daily", "weekly", "monthly", "biannually", "annually"]
                    .contains(&body["interval"].as_str().unwrap_or(""))
                {
                    return error(400, "Invalid interval", "validation_error");
                }
                let code = format!("PLN_fake{}", st.plans.len() + 1);
                let mut plan = body.clone();
                plan["plan_code"] = json!(code);
                st.plans.push(plan.clone());
                ResponseTemplate::new(201)
                    .set_body_json(json!({"status": true, "message": "Plan created", "data": plan}))
            }
            ("POST", "/subscription") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let known_plan = st.plans.iter().any(|p| p["plan_code"] == body["plan"]);
                let known_auth = st.txs.values().any(|t| {
                    Some(format!("AUTH_{}", t.id).as_str()) == body["authorization"].as_str()
                });
                if !known_plan || !known_auth {
                    return error(
                        400,
                        "This customer has no saved authorizations",
                        "validation_error",
                    );
                }
                let n = st.subs.len() + 1;
                let (code, token) = (format!("SUB_fake{n}"), format!("tok_secret_{n}"));
                st.subs
                    .insert(code.clone(), (body.clone(), token.clone(), true));
                ResponseTemplate::new(200).set_body_json(json!({
                    "status": true, "message": "Subscription successfully created",
                    "data": {"subscription_code": code, "email_token": token, "status": "active",
                             "customer": 1, "plan": 2, "amount": 100, "id": n}
                }))
            }
            ("POST", "/subscription/disable" | "/subscription/enable") => {
                let body: Value = serde_json::from_slice(&req.body).unwrap_or_default();
                let enable = path.ends_with("enable");
                match st.subs.get_mut(body["code"].as_str().unwrap_or("")) {
                    Some((_, token, on)) if body["token"].as_str() == Some(token.as_str()) => {
                        *on = enable;
                        ResponseTemplate::new(200).set_body_json(
                            json!({"status": true, "message": "Subscription updated"}),
                        )
                    }
                    _ => error(404, "Subscription not found", "not_found"),
                }
            }
            _ => error(404, "Route not found", "not_found"),
        }
    }
}

impl Fake {
    fn set(&self, reference: &str, status: &str, amount: u64, currency: Option<&str>) {
        let mut st = self.0.lock().unwrap();
        let tx = st.txs.get_mut(reference).expect("known reference");
        status.clone_into(&mut tx.status);
        tx.amount = amount;
        if let Some(c) = currency {
            c.clone_into(&mut tx.currency);
        }
    }

    fn tx(&self, reference: &str) -> FakeTx {
        self.0.lock().unwrap().txs[reference].clone()
    }

    fn script(
        &self,
        method: &'static str,
        path_prefix: &'static str,
        status: u16,
        body: Value,
        retry_after: Option<&'static str>,
    ) {
        self.0.lock().unwrap().script.push_back(Scripted {
            method,
            path_prefix,
            status,
            body,
            retry_after,
        });
    }

    /// A signed `charge.dispute.resolve` about `reference`, as Paystack sends it.
    fn dispute_resolved(
        &self,
        reference: &str,
        resolution: Option<&str>,
        refund_amount: u64,
    ) -> (http::HeaderMap, Vec<u8>) {
        let tx = self.tx(reference);
        signed(&json!({"event": "charge.dispute.resolve", "data": {
            "id": 7_000 + tx.id, "status": "resolved", "resolution": resolution,
            "refund_amount": refund_amount, "currency": tx.currency, "domain": "test",
            "transaction": tx.view()}}))
    }

    /// A signed `refund.processed` of `amount` (any JSON) about `reference` (a transaction
    /// the fake knows).
    fn refund(
        &self,
        reference: &str,
        refund_id: u64,
        amount: &Value,
        currency: &str,
    ) -> (http::HeaderMap, Vec<u8>) {
        let tx = self.tx(reference);
        signed(&json!({"event": "refund.processed", "data": {
            "id": refund_id, "status": "processed", "transaction_reference": tx.reference,
            "amount": amount, "currency": currency}}))
    }

    /// A correctly signed webhook body for `event` about `reference`, as Paystack sends it.
    fn webhook(&self, event: &str, reference: &str) -> (http::HeaderMap, Vec<u8>) {
        let tx = self.tx(reference);
        let data = match event {
            "refund.processed" => json!({"status": "processed", "transaction_reference": reference,
                                          "amount": tx.amount, "currency": tx.currency, "id": 9_000 + tx.id}),
            "charge.dispute.create" => {
                json!({"id": 7_000 + tx.id, "status": "awaiting-merchant-feedback",
                                              "transaction": tx.view()})
            }
            _ => tx.view(),
        };
        signed(&json!({"event": event, "data": data}))
    }
}

fn signed(body: &Value) -> (http::HeaderMap, Vec<u8>) {
    let body = serde_json::to_vec(body).unwrap();
    let mut h = http::HeaderMap::new();
    h.insert(
        SIGNATURE_HEADER,
        sign(KEY.as_bytes(), &body).parse().unwrap(),
    );
    (h, body)
}

/// The one plan the Provisioner tests sell: monthly Windows on the simulated cloud, 45,000 NGN.
fn windows_plan() -> nemordp_core::plan::PlanCatalog {
    nemordp_core::plan::PlanCatalog::from_toml_str(
        r#"
        [[plan]]
        id = "win-2c-4g"
        name = "Windows Server 2022, 2 vCPU, 4 GB"
        provider = "sim"
        os = "windows_server"
        region = "sim-1"
        size = "small"
        price = "45000.00 NGN"
        period = "monthly"
    "#,
    )
    .unwrap()
}

async fn start() -> (MockServer, Fake) {
    let server = MockServer::start().await;
    let fake = Fake::default();
    Mock::given(any())
        .respond_with(fake.clone())
        .mount(&server)
        .await;
    (server, fake)
}

fn builder(server: &MockServer) -> PaystackBuilder {
    PaystackBuilder::new()
        .with_secret_key(KEY)
        .with_base_url(server.uri())
        .with_allow_http(true)
        .with_callback_url("https://panel.example/paid")
        .with_retries(2, Duration::from_millis(1), Duration::from_millis(5))
}

fn ngn(kobo: u64) -> Money {
    Money::from_minor(Currency::Ngn, kobo)
}

fn request(amount: Money) -> PaymentRequest {
    PaymentRequest::new(
        OrderId::new(),
        amount,
        Timestamp::from_unix_secs(2_000_000_000),
    )
    .with_email("ada@example.com")
}

async fn opened(p: &Paystack, amount: Money) -> Payment {
    let req = request(amount);
    let o = p.open(&req).await.unwrap();
    kit::payment_record(p, &req, &o)
}

async fn parse(
    p: &Paystack,
    (h, body): &(http::HeaderMap, Vec<u8>),
) -> nemordp_core::Result<Vec<VerifiedEvent>> {
    p.parse_webhook(WebhookRequest { headers: h, body }).await
}

// ----- the OpenAPI check -----

fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/specs/paystack/paystack.openapi.yaml");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("the Paystack OpenAPI spec is missing at {} ({e}); these tests expect shared/ beside the workspace clone", path.display())
        });
        serde_norway::from_str(&text).expect("the Paystack OpenAPI spec is valid YAML")
    })
}

fn resolve<'a>(spec: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(
            spec,
            r.trim_start_matches("#/")
                .split('/')
                .fold(spec, |acc, part| &acc[part]),
        ),
        None => v,
    }
}

/// Checks `value` against `schema`: types, enums, required fields and (recursively) the
/// declared properties. Extra properties are allowed only where `allow_extra`.
fn conforms(spec: &Value, schema: &Value, value: &Value, at: &str, allow_extra: bool) {
    let schema = resolve(spec, schema);
    if value.is_null() {
        assert!(
            schema["nullable"] == true || schema.get("type").is_none(),
            "{at}: null where the spec says {schema}"
        );
        return;
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        assert!(
            any.iter()
                .any(|s| type_ok(resolve(spec, s)["type"].as_str().unwrap_or(""), value)),
            "{at}: {value} matches none of {any:?}"
        );
        return;
    }
    let ty = schema["type"].as_str().unwrap_or("");
    assert!(type_ok(ty, value), "{at}: {value} is not of type {ty}");
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        assert!(
            allowed.contains(value),
            "{at}: {value} is not one of {allowed:?}"
        );
    }
    if let (Some(obj), Some(props)) = (
        value.as_object(),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for (k, v) in obj {
            match props.get(k) {
                Some(p) => conforms(spec, p, v, &format!("{at}.{k}"), allow_extra),
                None => assert!(allow_extra, "{at}: field {k} is not in the spec"),
            }
        }
        for r in schema["required"].as_array().into_iter().flatten() {
            let r = r.as_str().unwrap();
            assert!(obj.contains_key(r), "{at}: required field {r} missing");
        }
    }
}

fn type_ok(ty: &str, v: &Value) -> bool {
    match ty {
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => true,
    }
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && t.ends_with('}') && !p.is_empty()) || t == p)
}

/// Checks every request the server received against the spec: the operation exists, query
/// parameters are declared, JSON bodies conform to the request schema (no undeclared fields).
async fn check_requests_against_spec(server: &MockServer) -> usize {
    let spec = spec();
    let paths = spec["paths"].as_object().unwrap();
    let requests = server.received_requests().await.unwrap();
    for req in &requests {
        let method = req.method.as_str().to_lowercase();
        let path = req.url.path();
        let (template, item) = paths
            .iter()
            .filter(|(t, item)| template_matches(t, path) && item.get(&method).is_some())
            // a literal path beats a templated one (`/transaction/verify/x` vs `/transaction/{id}`)
            .min_by_key(|(t, _)| t.matches('{').count())
            .unwrap_or_else(|| panic!("{method} {path} is not in the Paystack spec"));
        let op = &item[&method];
        let params: Vec<&Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .into_iter()
            .chain(op.get("parameters").and_then(Value::as_array))
            .flatten()
            .map(|p| resolve(spec, p))
            .collect();
        for (name, _) in req.url.query_pairs() {
            assert!(
                params
                    .iter()
                    .any(|p| p["in"] == "query" && p["name"] == *name),
                "query parameter {name} of {method} {template} is not in the spec"
            );
        }
        assert!(
            req.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("Bearer sk_")),
            "{method} {template} without bearer auth"
        );
        if req.body.is_empty() {
            continue;
        }
        let body: Value = serde_json::from_slice(&req.body).expect("request bodies are JSON");
        let schema = &op["requestBody"]["content"]["application/json"]["schema"];
        assert!(
            !schema.is_null(),
            "{method} {template} takes no JSON body in the spec"
        );
        conforms(spec, schema, &body, &format!("{method} {template}"), false);
    }
    requests.len()
}

#[test]
fn fake_verify_answers_follow_the_spec() {
    let tx = FakeTx {
        id: 1,
        reference: "r-1".into(),
        requested: 100,
        amount: 100,
        currency: "NGN".into(),
        status: "success".into(),
        email: "a@b.co".into(),
        metadata: json!({"order_id": "o"}),
        signature: "SIG_x".into(),
    };
    let answer = json!({"status": true, "message": "Verification successful", "data": tx.view()});
    let schema = &spec()["components"]["schemas"]["VerifyResponse"];
    conforms(spec(), schema, &answer, "VerifyResponse", true);
    let error_schema = &spec()["components"]["schemas"]["Error"];
    let err = json!({"status": false, "message": "Transaction reference not found",
                     "meta": {"nextStep": "x"}, "type": "validation_error"});
    conforms(spec(), error_schema, &err, "Error", true);
}

// ----- the conformance kit -----

struct Driver(Fake);

#[async_trait]
impl PaymentKitDriver for Driver {
    async fn pay(
        &self,
        payment: &Payment,
        amount: Money,
        confirmed: bool,
    ) -> nemordp_core::Result<()> {
        let units = amount.minor_u64().unwrap();
        self.0.set(
            &payment.reference,
            if confirmed { "success" } else { "processing" },
            units,
            None,
        );
        Ok(())
    }

    async fn signed_webhook(
        &self,
        payment: &Payment,
    ) -> nemordp_core::Result<(http::HeaderMap, Vec<u8>)> {
        Ok(self.0.webhook("charge.success", &payment.reference))
    }
}

#[tokio::test]
async fn conformance_kit_passes() {
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    kit::run_all(&p, &Driver(fake)).await;
    let n = check_requests_against_spec(&server).await;
    assert!(n > 10, "{n} requests");
}

// ----- open / initialize -----

#[tokio::test]
async fn initialize_sends_subunits_currency_reference_callback_and_metadata() {
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    let req = request(ngn(4_500_000));
    let o = p.open(&req).await.unwrap();
    assert_eq!(o.reference, req.payment_id.to_string());
    let tx = fake.tx(&o.reference);
    assert_eq!(
        o.checkout_url.as_deref(),
        Some(format!("https://checkout.paystack.com/acc_{}", tx.id).as_str())
    );
    assert_eq!(
        (tx.requested, tx.currency.as_str(), tx.email.as_str()),
        (4_500_000, "NGN", "ada@example.com")
    );
    assert_eq!(tx.metadata["order_id"], req.order_id.to_string());
    assert_eq!(tx.metadata["nemordp_amount"], 4_500_000);
    let sent: Value =
        serde_json::from_slice(&server.received_requests().await.unwrap()[0].body).unwrap();
    assert_eq!(sent["callback_url"], "https://panel.example/paid");
    assert_eq!(
        sent["amount"], 4_500_000,
        "integer subunits, never a decimal"
    );

    // Same id again: same answer, no second initialize.
    assert_eq!(p.open(&req).await.unwrap(), o);
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    // Another process (no memory of it): Paystack refuses the duplicate reference.
    let other = builder(&server).build().unwrap();
    assert_eq!(
        other.open(&req).await.unwrap_err().kind(),
        ErrorKind::AlreadyExists
    );
    // Bad requests never reach Paystack.
    let mut no_email = request(ngn(100));
    no_email.email = None;
    assert_eq!(
        p.open(&no_email).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(
        p.open(&request(ngn(0))).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let usd = request(Money::from_minor(Currency::Usd, 100_u64));
    assert_eq!(
        p.open(&usd).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    check_requests_against_spec(&server).await;
}

#[tokio::test]
async fn usd_verifier_initializes_in_usd() {
    let (server, fake) = start().await;
    let p = builder(&server)
        .with_currency(Currency::Usd)
        .build()
        .unwrap();
    assert_eq!(p.asset(), Asset::Fiat(Currency::Usd));
    let pay = opened(&p, Money::from_minor(Currency::Usd, 2_000_u64)).await;
    assert_eq!(fake.tx(&pay.reference).currency, "USD");
    check_requests_against_spec(&server).await;
}

// ----- verify -----

#[tokio::test]
async fn only_an_exact_success_confirms_money() {
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    let due = 1_000_000;
    for (status, seen, confirmed) in [
        ("abandoned", 0, 0),
        ("failed", 0, 0),
        ("ongoing", 0, 0),
        ("pending", 0, 0),
        ("processing", 0, 0),
        ("queued", 0, 0),
        ("reversed", 0, 0),
        ("some_future_status", 0, 0),
        ("success", due, due),
    ] {
        let pay = opened(&p, ngn(due)).await;
        fake.set(&pay.reference, status, due, None);
        let o = p.check(&pay).await.unwrap();
        assert_eq!(
            (o.seen, o.confirmed),
            (ngn(seen), ngn(confirmed)),
            "status {status}"
        );
        let settled = InvoiceState::NEW
            .apply(&pay.terms, &o.as_event())
            .unwrap()
            .status
            == InvoiceStatus::Settled;
        assert_eq!(settled, status == "success", "status {status}");
        match p.verify_payment(&pay).await {
            Ok(c) => {
                assert_eq!(status, "success");
                assert_eq!(c.amount, ngn(due));
                assert_eq!(
                    c.transaction.authorization.unwrap().signature.as_deref(),
                    Some("SIG_15")
                );
            }
            Err(e) => assert_eq!(
                (e.kind(), status != "success"),
                (ErrorKind::Rejected, true),
                "{e}"
            ),
        }
    }
    assert!(p.mismatches().is_empty());
    check_requests_against_spec(&server).await;
}

#[tokio::test]
async fn cheaper_dearer_or_other_currency_payments_are_rejected_and_recorded() {
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    let due = 1_000_000;
    for (amount, currency, seen, kind) in [
        (999_999, "NGN", 999_999, MismatchKind::Amount),
        (1_000_001, "NGN", 1_000_001, MismatchKind::Amount),
        // The same integer is wildly different money in USD: nothing counts.
        (due, "USD", 0, MismatchKind::Currency),
        (due, "XYZ", 0, MismatchKind::Currency),
    ] {
        let pay = opened(&p, ngn(due)).await;
        fake.set(&pay.reference, "success", amount, Some(currency));
        let o = p.check(&pay).await.unwrap();
        assert_eq!(
            (o.seen, o.confirmed),
            (ngn(seen), ngn(0)),
            "{amount} {currency}"
        );
        assert_ne!(
            InvoiceState::NEW
                .apply(&pay.terms, &o.as_event())
                .unwrap()
                .status,
            InvoiceStatus::Settled
        );
        let e = p.verify_payment(&pay).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected);
        let m = std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<PaymentMismatch>())
            .expect("a typed mismatch");
        assert_eq!(
            (m.kind, m.reference.as_str()),
            (kind, pay.reference.as_str())
        );
        assert_eq!(m.received, format!("{amount} {currency}"));
    }
    // check + verify_payment for each: recorded for review once per mismatch, not per look.
    assert_eq!(p.mismatches().len(), 4);
    for m in &p.mismatches()[..2] {
        assert_eq!(m.kind, MismatchKind::Amount);
    }
    check_requests_against_spec(&server).await;
}

#[tokio::test]
async fn mismatches_are_recorded_durably_in_the_review_store() {
    use nemordp_core::Store as _;
    let (server, fake) = start().await;
    let store = nemordp_core::sim::store::MemoryStore::new();
    let p = builder(&server)
        .with_review_store(Arc::new(store.clone()))
        .build()
        .unwrap();
    let due = 1_000_000;
    let cheap = opened(&p, ngn(due)).await;
    fake.set(&cheap.reference, "success", due - 1, Some("NGN"));
    let usd = opened(&p, ngn(due)).await;
    fake.set(&usd.reference, "success", due, Some("USD"));
    let exact = opened(&p, ngn(due)).await;
    fake.set(&exact.reference, "success", due, Some("NGN"));
    for pay in [&cheap, &usd, &exact] {
        p.check(pay).await.unwrap();
        // Every check re-verifies; a mismatch already on file is not filed twice.
        p.check(pay).await.unwrap();
    }
    let filed = store
        .list_records(nemordp_payments::paystack::MISMATCH_COLLECTION, "", None, 0)
        .await
        .unwrap();
    assert_eq!(filed.len(), 2, "{filed:?}");
    let of = |reference: &str| {
        filed
            .iter()
            .find(|r| r.key.starts_with(&format!("{reference}:")))
            .map(|r| r.decode::<serde_json::Value>().unwrap())
            .unwrap()
    };
    assert_eq!(of(&cheap.reference)["kind"], "amount");
    assert_eq!(of(&cheap.reference)["received"], format!("{} NGN", due - 1));
    assert_eq!(of(&usd.reference)["kind"], "currency");
    assert!(filed.iter().all(|r| !r.key.starts_with(&exact.reference)));
    // Two checks each, one entry each in the in-memory log too.
    assert_eq!(p.mismatches().len(), 2);
    assert!(p.review_is_durable());
    assert!(!builder(&server).build().unwrap().review_is_durable());
}

// ----- errors -----

#[tokio::test]
async fn error_bodies_map_onto_kinds_and_only_idempotent_calls_retry() {
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    let pay = opened(&p, ngn(5_000)).await;
    let requests = || async { server.received_requests().await.unwrap().len() };

    // verify: 5xx twice then the answer (retried); 429 with Retry-After (retried).
    fake.script(
        "GET",
        "/transaction/verify",
        502,
        json!({"status": false, "message": "Bad gateway"}),
        None,
    );
    fake.script(
        "GET",
        "/transaction/verify",
        429,
        json!({"status": false, "message": "Too many"}),
        Some("0"),
    );
    let before = requests().await;
    assert!(p.check(&pay).await.is_ok());
    assert_eq!(requests().await - before, 3);
    // verify: persistent 5xx ends as Unavailable after the retries.
    for _ in 0..3 {
        fake.script(
            "GET",
            "/transaction/verify",
            503,
            json!({"status": false, "message": "down"}),
            None,
        );
    }
    let e = p.check(&pay).await.unwrap_err();
    assert_eq!(
        (e.kind(), e.is_retryable(), e.backend()),
        (ErrorKind::Unavailable, true, "paystack")
    );

    // initialize: a 5xx is not retried (it may have been processed) and is Ambiguous.
    fake.script(
        "POST",
        "/transaction/initialize",
        500,
        json!({"status": false, "message": "oops"}),
        None,
    );
    let before = requests().await;
    assert_eq!(
        p.open(&request(ngn(100))).await.unwrap_err().kind(),
        ErrorKind::Ambiguous
    );
    assert_eq!(requests().await - before, 1);
    // initialize: a 429 proves nothing happened, so it is retried.
    fake.script(
        "POST",
        "/transaction/initialize",
        429,
        json!({"status": false, "message": "slow"}),
        Some("0"),
    );
    let before = requests().await;
    assert!(p.open(&request(ngn(100))).await.is_ok());
    assert_eq!(requests().await - before, 2);

    // `{status: false, message, code}` bodies.
    for (status, message, code, kind) in [
        (
            400,
            "Invalid Amount Sent",
            "validation_error",
            ErrorKind::InvalidInput,
        ),
        (
            400,
            "Currency not supported by merchant",
            "unsupported_currency",
            ErrorKind::Rejected,
        ),
        (401, "Invalid key", "", ErrorKind::Unauthenticated),
        (
            403,
            "Your IP is not whitelisted",
            "",
            ErrorKind::PermissionDenied,
        ),
        (
            400,
            "Duplicate Transaction Reference",
            "duplicate_reference",
            ErrorKind::AlreadyExists,
        ),
        // HTTP 200 is not success when the envelope says false.
        (
            200,
            "Transaction failed",
            "processor_error",
            ErrorKind::Rejected,
        ),
    ] {
        fake.script(
            "POST",
            "/transaction/initialize",
            status,
            json!({"status": false, "message": message, "type": "api_error", "code": code}),
            None,
        );
        let e = p.open(&request(ngn(100))).await.unwrap_err();
        assert_eq!(e.kind(), kind, "{status} {message}: {e}");
        assert!(e.to_string().contains(message), "{e}");
    }
    // A body that echoes the key is scrubbed; an unreadable success is Unexpected.
    fake.script(
        "GET",
        "/transaction/verify",
        400,
        json!({"status": false, "message": format!("bad key {KEY}")}),
        None,
    );
    let e = p.check(&pay).await.unwrap_err();
    assert!(
        !e.to_string().contains(KEY) && e.to_string().contains("[REDACTED]"),
        "{e}"
    );
    fake.script(
        "GET",
        "/transaction/verify",
        200,
        json!({"status": true, "data": {"amount": "lots"}}),
        None,
    );
    assert_eq!(
        p.check(&pay).await.unwrap_err().kind(),
        ErrorKind::Unexpected
    );
    // Wrong key: Paystack's own 401.
    let wrong = builder(&server)
        .with_secret_key("sk_test_wrong")
        .build()
        .unwrap();
    assert_eq!(
        wrong.check(&pay).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );
}

#[tokio::test]
async fn every_documented_error_string_maps_to_a_kind_without_panicking() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/specs/paystack/api-errors.json");
    let errors: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(errors.len(), 101);
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    let pay = opened(&p, ngn(5_000)).await;
    for err in &errors {
        let message = err["error"].as_str().unwrap();
        fake.script(
            "GET",
            "/transaction/verify",
            400,
            json!({"status": false, "message": message}),
            None,
        );
        let e = p.check(&pay).await.unwrap_err();
        assert!(!e.is_retryable(), "{message}");
        let expected = if message.to_lowercase().contains("not found") {
            ErrorKind::NotFound
        } else if message.contains("Authorization Bearer") || message == "Invalid key" {
            ErrorKind::Unauthenticated
        } else if message.contains("Duplicate Transaction Reference") {
            ErrorKind::AlreadyExists
        } else {
            ErrorKind::Rejected
        };
        assert_eq!(e.kind(), expected, "{message}");
    }
}

// ----- webhooks -----

fn observed(events: &[VerifiedEvent]) -> (Money, Money) {
    match events {
        [
            VerifiedEvent {
                kind: VerifiedEventKind::Observed(o),
                ..
            },
        ] => (o.seen, o.confirmed),
        other => panic!("expected one observation, got {other:?}"),
    }
}

#[tokio::test]
async fn signed_webhooks_are_confirmed_by_verify_and_tampering_is_refused() {
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    let pay = opened(&p, ngn(1_000_000)).await;
    fake.set(&pay.reference, "success", 1_000_000, None);
    let delivery = fake.webhook("charge.success", &pay.reference);
    let events = parse(&p, &delivery).await.unwrap();
    assert_eq!(observed(&events), (ngn(1_000_000), ngn(1_000_000)));
    assert_eq!(
        events[0].event_key,
        format!("charge.success:{}", fake.tx(&pay.reference).id)
    );
    // Replayed: the same key (the Provisioner's dedupe makes it a no-op).
    assert_eq!(parse(&p, &delivery).await.unwrap(), events);

    // Tampered: one byte of the amount changed.
    let (h, mut body) = delivery.clone();
    let i = String::from_utf8_lossy(&body).find("1000000").unwrap();
    body[i] = b'9';
    assert_eq!(
        parse(&p, &(h.clone(), body)).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );
    // Signed with another key, unsigned, or garbage signatures.
    let (_, body) = delivery.clone();
    let mut forged = http::HeaderMap::new();
    forged.insert(
        SIGNATURE_HEADER,
        sign(b"sk_test_attacker", &body).parse().unwrap(),
    );
    assert_eq!(
        parse(&p, &(forged, body.clone())).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );
    assert_eq!(
        parse(&p, &(http::HeaderMap::new(), body.clone()))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Unauthenticated
    );
    let mut junk = http::HeaderMap::new();
    junk.insert(SIGNATURE_HEADER, "not-hex".parse().unwrap());
    assert_eq!(
        parse(&p, &(junk, body)).await.unwrap_err().kind(),
        ErrorKind::Unauthenticated
    );

    // A signed body that lies about the amount: verify is believed, not the body.
    let cheap = opened(&p, ngn(1_000_000)).await;
    fake.set(&cheap.reference, "success", 100, None);
    let mut claim =
        serde_json::from_slice::<Value>(&fake.webhook("charge.success", &cheap.reference).1)
            .unwrap();
    claim["data"]["amount"] = json!(1_000_000);
    let events = parse(&p, &signed(&claim)).await.unwrap();
    assert_eq!(observed(&events), (ngn(100), ngn(0)));
    assert_eq!(p.mismatches().len(), 1);

    // Authenticated but malformed: InvalidInput. Unknown events: accepted, ignored.
    assert_eq!(
        parse(&p, &signed(&json!({"data": {}})))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::InvalidInput
    );
    let events = parse(
        &p,
        &signed(&json!({"event": "transfer.success", "data": {"id": 5}})),
    )
    .await
    .unwrap();
    assert_eq!(events[0].event_key, "transfer.success:5");
    assert!(
        matches!(&events[0].kind, VerifiedEventKind::Ignored { event_type } if event_type == "transfer.success")
    );
    // A signed charge.success for a reference Paystack never saw is ignored, not applied.
    let ghost = json!({"event": "charge.success", "data": {"id": 1, "reference": "ghost-ref", "amount": 5, "currency": "NGN", "status": "success"}});
    assert!(matches!(
        parse(&p, &signed(&ghost)).await.unwrap()[0].kind,
        VerifiedEventKind::Ignored { .. }
    ));
    // charge.success while verify still says pending: retry later (non-2xx to Paystack).
    let early = opened(&p, ngn(500)).await;
    fake.set(&early.reference, "ongoing", 500, None);
    let e = parse(&p, &fake.webhook("charge.success", &early.reference))
        .await
        .unwrap_err();
    assert!(e.is_retryable(), "{e}");
    check_requests_against_spec(&server).await;
}

#[tokio::test]
async fn reordered_refund_and_dispute_events_end_in_the_right_state() {
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    let pay = opened(&p, ngn(20_000)).await;
    fake.set(&pay.reference, "success", 20_000, None);
    let charge = fake.webhook("charge.success", &pay.reference);
    // Refunded before the charge.success delivery arrives.
    fake.set(&pay.reference, "reversed", 20_000, None);
    let refund = fake.webhook("refund.processed", &pay.reference);
    let events = parse(&p, &refund).await.unwrap();
    assert_eq!(
        events[0].kind,
        VerifiedEventKind::Reversed {
            reference: pay.reference.clone(),
            reason: "refund processed".into()
        }
    );
    // The late charge.success is re-verified: the money is gone, nothing settles.
    assert_eq!(
        observed(&parse(&p, &charge).await.unwrap()),
        (ngn(0), ngn(0))
    );

    let disputed = opened(&p, ngn(20_000)).await;
    fake.set(&disputed.reference, "success", 20_000, None);
    let events = parse(
        &p,
        &fake.webhook("charge.dispute.create", &disputed.reference),
    )
    .await
    .unwrap();
    assert!(
        matches!(&events[0].kind, VerifiedEventKind::Reversed { reference, .. } if *reference == disputed.reference)
    );
    assert!(events[0].event_key.starts_with("charge.dispute.create:"));
    // A signed refund for a reference Paystack does not know is ignored.
    let stray = json!({"event": "refund.processed", "data": {"transaction_reference": "nope", "status": "processed"}});
    assert!(matches!(
        parse(&p, &signed(&stray)).await.unwrap()[0].kind,
        VerifiedEventKind::Ignored { .. }
    ));
    check_requests_against_spec(&server).await;
}

#[tokio::test]
async fn partial_refunds_are_filed_for_review_and_full_ones_reverse() {
    use nemordp_core::Store as _;
    let (server, fake) = start().await;
    let store = nemordp_core::sim::store::MemoryStore::new();
    let p = builder(&server)
        .with_review_store(Arc::new(store.clone()))
        .build()
        .unwrap();
    let pay = opened(&p, ngn(20_000)).await;
    fake.set(&pay.reference, "success", 20_000, None);
    let reversed = |events: &[VerifiedEvent]| matches!(&events[0].kind, VerifiedEventKind::Reversed { reference, .. } if *reference == pay.reference);
    // Less than charged, as an integer or integer text: no reversal, one review entry each.
    for (id, amount) in [(1, json!(5_000)), (2, json!("19999"))] {
        let delivery = fake.refund(&pay.reference, id, &amount, "NGN");
        for _ in 0..2 {
            let events = parse(&p, &delivery).await.unwrap();
            assert!(
                matches!(&events[0].kind, VerifiedEventKind::Ignored { .. }),
                "{events:?}"
            );
        }
    }
    let partial = p.mismatches();
    assert_eq!(partial.len(), 2, "{partial:?}");
    assert_eq!(
        (
            partial[0].kind,
            partial[0].refund_id,
            partial[0].received.as_str()
        ),
        (MismatchKind::PartialRefund, Some(1), "5000 NGN refunded")
    );
    assert_eq!(partial[0].expected, "20000 NGN");
    let filed = store
        .list_records(nemordp_payments::paystack::MISMATCH_COLLECTION, "", None, 0)
        .await
        .unwrap();
    assert_eq!(filed.len(), 2, "{filed:?}");
    assert!(filed.iter().all(|r| r.key.contains(":partial_refund:")));
    // The whole amount, more, an unreadable amount or another currency: reversed.
    for (id, amount, currency) in [
        (3, json!(20_000), "NGN"),
        (4, json!("20000"), "NGN"),
        (5, json!(25_000), "NGN"),
        (6, json!(1.5), "NGN"),
        (7, json!(-5), "NGN"),
        (8, Value::Null, "NGN"),
        (9, json!(100), "USD"),
    ] {
        let events = parse(&p, &fake.refund(&pay.reference, id, &amount, currency))
            .await
            .unwrap();
        assert!(reversed(&events), "{amount} {currency}: {events:?}");
    }
    // Paystack already marks the transaction reversed: whatever the event says, reversed.
    fake.set(&pay.reference, "reversed", 20_000, None);
    assert!(reversed(
        &parse(&p, &fake.refund(&pay.reference, 10, &json!(1), "NGN"))
            .await
            .unwrap()
    ));
    assert_eq!(p.mismatches().len(), 2);
    check_requests_against_spec(&server).await;
}

#[tokio::test]
async fn dispute_resolutions_reinstate_only_when_the_money_stays() {
    let (server, fake) = start().await;
    let p = builder(&server).build().unwrap();
    let pay = opened(&p, ngn(20_000)).await;
    fake.set(&pay.reference, "success", 20_000, None);
    let kind = |d: &(http::HeaderMap, Vec<u8>)| {
        let p = &p;
        let d = d.clone();
        async move { parse(p, &d).await.unwrap().remove(0) }
    };
    let won = kind(&fake.dispute_resolved(&pay.reference, Some("declined"), 0)).await;
    assert_eq!(
        won.kind,
        VerifiedEventKind::Reinstated {
            reference: pay.reference.clone(),
            reason: "dispute resolved (declined): the payment stands".into()
        }
    );
    assert!(won.event_key.starts_with("charge.dispute.resolve:"));
    // Lost, or "declined" yet something was refunded: reversed for good.
    for (resolution, refund) in [("merchant-accepted", 20_000), ("declined", 500)] {
        let e = kind(&fake.dispute_resolved(&pay.reference, Some(resolution), refund)).await;
        assert!(
            matches!(&e.kind, VerifiedEventKind::Reversed { reason, .. } if reason.contains(resolution)),
            "{e:?}"
        );
    }
    // No resolution: nothing to act on.
    assert!(matches!(
        kind(&fake.dispute_resolved(&pay.reference, None, 0))
            .await
            .kind,
        VerifiedEventKind::Ignored { .. }
    ));
    // The body says declined but verify says the money went back: verify is believed.
    fake.set(&pay.reference, "reversed", 20_000, None);
    assert!(matches!(
        kind(&fake.dispute_resolved(&pay.reference, Some("declined"), 0))
            .await
            .kind,
        VerifiedEventKind::Reversed { .. }
    ));
    // About a transaction Paystack does not know: ignored.
    let ghost = json!({"event": "charge.dispute.resolve", "data": {"id": 1, "resolution": "declined",
                       "transaction": {"reference": "ghost-ref", "status": "success"}}});
    assert!(matches!(
        parse(&p, &signed(&ghost)).await.unwrap()[0].kind,
        VerifiedEventKind::Ignored { .. }
    ));
    check_requests_against_spec(&server).await;
}

#[tokio::test]
async fn source_ip_allow_list() {
    let (server, fake) = start().await;
    let p = builder(&server)
        .with_source_ip_allow_list(PAYSTACK_SOURCE_IPS, "X-Forwarded-For")
        .build()
        .unwrap();
    let pay = opened(&p, ngn(100)).await;
    fake.set(&pay.reference, "success", 100, None);
    let (h, body) = fake.webhook("charge.success", &pay.reference);
    let with_ip = |ip: &str| {
        let mut h = h.clone();
        h.insert("x-forwarded-for", ip.parse().unwrap());
        (h, body.clone())
    };
    assert!(parse(&p, &with_ip("10.0.0.1, 52.31.139.75")).await.is_ok());
    for bad in ["52.31.139.75, 10.0.0.1", "203.0.113.9", "garbage"] {
        assert_eq!(
            parse(&p, &with_ip(bad)).await.unwrap_err().kind(),
            ErrorKind::PermissionDenied,
            "{bad}"
        );
    }
    assert_eq!(
        parse(&p, &(h.clone(), body.clone()))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::PermissionDenied
    );
    assert!(p.source_ip_allowed("52.214.14.220".parse::<IpAddr>().unwrap()));
    assert!(!p.source_ip_allowed("52.214.14.221".parse::<IpAddr>().unwrap()));
}

// ----- through the Provisioner -----

mod provisioner {
    use std::sync::Arc;

    use nemordp_core::{
        order::{Customer, OrderState},
        provisioner::Provisioner,
        seal::Sealer,
        sim::{cloud::SimCloud, notify::RecordingNotifier, store::MemoryStore},
    };

    use super::*;

    pub(super) fn build(paystack: Paystack) -> Provisioner {
        build_with(paystack, None)
    }

    pub(super) fn build_with(
        paystack: Paystack,
        fraud: Option<nemordp_core::fraud::FraudEngine>,
    ) -> Provisioner {
        let cloud = SimCloud::builder().seed(7).build();
        let plans = windows_plan();
        let mut b = Provisioner::builder()
            .store(Arc::new(MemoryStore::new()))
            .provider(Arc::new(cloud.clone()))
            .probe(Arc::new(cloud.rdp_probe()))
            .payment(Arc::new(paystack))
            .notifier(Arc::new(RecordingNotifier::new()))
            .catalog(plans)
            .sealer(Sealer::ephemeral());
        if let Some(engine) = fraud {
            b = b.fraud(engine);
        }
        b.build().unwrap()
    }

    #[tokio::test]
    async fn the_card_fingerprint_from_verify_feeds_card_velocity() {
        use nemordp_core::fraud::{
            FraudEngine, FraudRule, FraudRules, FraudStage, VelocityKey, Verdict,
        };
        let (server, fake) = start().await;
        let engine = FraudEngine::new(FraudRules::default().with_velocity(
            VelocityKey::Card,
            FraudStage::PaymentArrived,
            1,
            Duration::from_secs(3600),
            Verdict::Reject,
        ));
        let paystack = builder(&server)
            .with_fraud_engine(engine.clone())
            .build()
            .unwrap();
        let prov = build_with(paystack, Some(engine));
        let mut orders = Vec::new();
        // Same e-mail length → the fake gives the same card signature.
        for (customer, email) in [("c1", "ada@example.com"), ("c2", "bob@example.com")] {
            let order = prov
                .place_order(
                    &"win-2c-4g".into(),
                    Customer::new(customer).with_email(email),
                )
                .await
                .unwrap();
            let payment = prov.open_payment(order.id, "paystack").await.unwrap();
            fake.set(&payment.reference, "success", 4_500_000, None);
            let (h, body) = fake.webhook("charge.success", &payment.reference);
            prov.handle_webhook(
                "paystack",
                WebhookRequest {
                    headers: &h,
                    body: &body,
                },
            )
            .await
            .unwrap();
            orders.push(prov.order(order.id).await.unwrap());
        }
        assert_eq!(orders[0].state, OrderState::Paid);
        assert!(orders[1].fraud_rejected(), "{:?}", orders[1]);
        assert!(matches!(orders[1].state, OrderState::NeedsAttention { .. }));
        assert_eq!(
            orders[1].fraud[0].reasons[0].rule,
            FraudRule::Velocity(VelocityKey::Card)
        );
    }

    #[tokio::test]
    async fn a_paid_webhook_settles_the_order_once_and_a_replay_is_a_no_op() {
        let (server, fake) = start().await;
        let prov = build(builder(&server).build().unwrap());
        let customer = Customer::new("c-1").with_email("ada@example.com");
        let order = prov
            .place_order(&"win-2c-4g".into(), customer)
            .await
            .unwrap();
        let payment = prov.open_payment(order.id, "paystack").await.unwrap();
        assert!(
            payment
                .checkout_url
                .as_deref()
                .unwrap()
                .starts_with("https://checkout.paystack.com/")
        );
        assert_eq!(
            fake.tx(&payment.reference).requested,
            4_500_000,
            "45000.00 NGN in kobo"
        );

        // A cheaper payment that Paystack reports as success never settles the order.
        fake.set(&payment.reference, "success", 4_499_999, None);
        let (h, body) = fake.webhook("charge.success", &payment.reference);
        let out = prov
            .handle_webhook(
                "paystack",
                WebhookRequest {
                    headers: &h,
                    body: &body,
                },
            )
            .await
            .unwrap();
        assert_eq!(out.applied, 1);
        assert_eq!(
            prov.order(order.id).await.unwrap().state,
            OrderState::AwaitingPayment
        );

        // The real payment (Paystack's transaction id is the same, so simulate a fresh one).
        fake.0
            .lock()
            .unwrap()
            .txs
            .get_mut(&payment.reference)
            .unwrap()
            .id += 1;
        fake.set(&payment.reference, "success", 4_500_000, None);
        let (h, body) = fake.webhook("charge.success", &payment.reference);
        let first = prov
            .handle_webhook(
                "paystack",
                WebhookRequest {
                    headers: &h,
                    body: &body,
                },
            )
            .await
            .unwrap();
        assert_eq!((first.applied, first.duplicates), (1, 0));
        assert_eq!(prov.order(order.id).await.unwrap().state, OrderState::Paid);
        let replay = prov
            .handle_webhook(
                "paystack",
                WebhookRequest {
                    headers: &h,
                    body: &body,
                },
            )
            .await
            .unwrap();
        assert_eq!((replay.applied, replay.duplicates), (0, 1));

        // A tampered delivery is refused before anything is applied.
        let mut forged = body.clone();
        forged[10] ^= 1;
        let e = prov
            .handle_webhook(
                "paystack",
                WebhookRequest {
                    headers: &h,
                    body: &forged,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        check_requests_against_spec(&server).await;
    }
}

// ----- subscriptions -----

mod subscriptions {
    use std::sync::Arc;

    use nemordp_core::{
        ManualClock,
        order::{Customer, OrderState},
        provisioner::Provisioner,
        seal::Sealer,
        sim::{cloud::SimCloud, notify::RecordingNotifier, store::MemoryStore},
        store::{JobKind, Store as _},
    };
    use nemordp_payments::paystack::{
        PaystackSubscriptions, SubscriptionOutcome, SubscriptionState,
    };
    use secrecy::ExposeSecret;

    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    struct World {
        server: MockServer,
        fake: Fake,
        paystack: Arc<Paystack>,
        prov: Provisioner,
        clock: Arc<ManualClock>,
        store: MemoryStore,
        subs: PaystackSubscriptions,
    }

    async fn world() -> World {
        let (server, fake) = start().await;
        let clock = Arc::new(ManualClock::new(Timestamp::from_unix_secs(1_767_225_600)));
        let cloud = SimCloud::builder()
            .seed(5)
            .boot_time(
                nemordp_core::plan::OsKind::WindowsServer,
                Duration::ZERO,
                Duration::ZERO,
            )
            .install_delay(Duration::ZERO)
            .rdp_delay(Duration::ZERO)
            .clock(clock.clone())
            .build();
        let plans = windows_plan();
        let paystack = Arc::new(builder(&server).build().unwrap());
        let store = MemoryStore::new();
        let prov = Provisioner::builder()
            .store(Arc::new(store.clone()))
            .provider(Arc::new(cloud.clone()))
            .probe(Arc::new(cloud.rdp_probe()))
            .payment(paystack.clone())
            .notifier(Arc::new(RecordingNotifier::new()))
            .catalog(plans)
            .sealer(Sealer::new("k1", [3; 32]).unwrap())
            .clock(clock.clone())
            .build()
            .unwrap();
        let subs = PaystackSubscriptions::new(
            paystack.clone(),
            prov.clone(),
            Arc::new(Sealer::new("k1", [3; 32]).unwrap()),
        )
        .with_grace(3 * DAY, 10 * DAY);
        World {
            server,
            fake,
            paystack,
            prov,
            clock,
            store,
            subs,
        }
    }

    async fn run_jobs(w: &World) {
        for _ in 0..200 {
            w.prov.run_jobs_once().await.unwrap();
            w.clock.advance(Duration::from_secs(30));
        }
    }

    fn invoice(event: &str, sub: &str, reference: Option<&str>) -> (http::HeaderMap, Vec<u8>) {
        let mut data = json!({"invoice_code": format!("INV_{event}_{}", reference.unwrap_or("x")),
                              "paid": reference.is_some(), "status": if reference.is_some() { "success" } else { "failed" },
                              "subscription": {"subscription_code": sub, "status": "active"}});
        if let Some(r) = reference {
            data["transaction"] = json!({"reference": r, "status": "success", "amount": 4_500_000, "currency": "NGN"});
        }
        signed(&json!({"event": event, "data": data}))
    }

    async fn hook(
        w: &World,
        (headers, body): &(http::HeaderMap, Vec<u8>),
    ) -> nemordp_core::provisioner::WebhookOutcome {
        w.prov
            .handle_webhook("paystack", WebhookRequest { headers, body })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn a_won_dispute_resumes_the_machine_and_a_partial_refund_never_suspends() {
        let w = world().await;
        // Registered with the Provisioner: mismatches go to its store by default.
        assert!(w.paystack.review_is_durable());
        let order = w
            .prov
            .place_order(
                &"win-2c-4g".into(),
                Customer::new("c1").with_email("ada@example.com"),
            )
            .await
            .unwrap();
        let payment = w.prov.open_payment(order.id, "paystack").await.unwrap();
        w.fake.set(&payment.reference, "success", 4_500_000, None);
        hook(&w, &w.fake.webhook("charge.success", &payment.reference)).await;
        run_jobs(&w).await;
        let state = || async { w.prov.order(order.id).await.unwrap().state };
        assert_eq!(state().await, OrderState::Active);

        // A partial refund: no suspension, filed for review in the Provisioner's store at
        // the Provisioner's clock time.
        let at = nemordp_core::Clock::now(&w.clock);
        let partial = w
            .fake
            .refund(&payment.reference, 31, &json!(1_000_000), "NGN");
        assert_eq!(hook(&w, &partial).await.ignored, 1);
        assert_eq!(hook(&w, &partial).await.ignored, 1);
        let jobs = w.store.jobs_for_order(order.id).await.unwrap();
        assert!(!jobs.iter().any(|j| j.kind == JobKind::Suspend), "{jobs:?}");
        run_jobs(&w).await;
        assert_eq!(state().await, OrderState::Active);
        let filed = w
            .store
            .list_records(nemordp_payments::paystack::MISMATCH_COLLECTION, "", None, 0)
            .await
            .unwrap();
        assert_eq!(filed.len(), 1, "{filed:?}");
        assert_eq!(filed[0].updated_at, at);
        assert_eq!(w.paystack.mismatches().len(), 1);

        // Disputed: suspended. Won: resumed through an unsuspend job; a redelivery is a no-op.
        assert_eq!(
            hook(
                &w,
                &w.fake.webhook("charge.dispute.create", &payment.reference)
            )
            .await
            .applied,
            1
        );
        run_jobs(&w).await;
        assert_eq!(state().await, OrderState::Suspended);
        let won = w
            .fake
            .dispute_resolved(&payment.reference, Some("declined"), 0);
        assert_eq!(hook(&w, &won).await.applied, 1);
        run_jobs(&w).await;
        assert_eq!(state().await, OrderState::Active);
        let jobs = w.store.jobs_for_order(order.id).await.unwrap();
        assert!(
            jobs.iter().any(|j| j.kind == JobKind::Unsuspend),
            "{jobs:?}"
        );
        let again = hook(&w, &won).await;
        assert_eq!((again.applied, again.duplicates), (0, 1));

        // Suspended by the host for another reason: a won dispute does not resume it.
        w.prov
            .request(
                order.id,
                nemordp_core::provisioner::LifecycleOp::Suspend,
                Some("abuse report"),
            )
            .await
            .unwrap();
        run_jobs(&w).await;
        let mut other: Value = serde_json::from_slice(&won.1).unwrap();
        other["data"]["id"] = json!(99_999);
        assert_eq!(hook(&w, &signed(&other)).await.ignored, 1);
        run_jobs(&w).await;
        assert_eq!(state().await, OrderState::Suspended);
        check_requests_against_spec(&w.server).await;
    }

    #[tokio::test]
    async fn subscribe_renew_lapse_suspend_terminate() {
        let w = world().await;
        let order = w
            .prov
            .place_order(
                &"win-2c-4g".into(),
                Customer::new("c1").with_email("ada@example.com"),
            )
            .await
            .unwrap();
        let payment = w.prov.open_payment(order.id, "paystack").await.unwrap();
        w.fake.set(&payment.reference, "success", 4_500_000, None);
        let (h, body) = w.fake.webhook("charge.success", &payment.reference);
        w.prov
            .handle_webhook(
                "paystack",
                WebhookRequest {
                    headers: &h,
                    body: &body,
                },
            )
            .await
            .unwrap();
        run_jobs(&w).await;
        assert_eq!(
            w.prov.order(order.id).await.unwrap().state,
            OrderState::Active
        );

        // Subscribe with the verified charge's reusable authorization.
        let payment = w.store.get_payment(payment.id).await.unwrap().unwrap();
        let charge = w.paystack.verify_payment(&payment).await.unwrap();
        let rec = w.subs.subscribe(order.id, &charge).await.unwrap();
        assert_eq!(rec.state, SubscriptionState::Active);
        let auth = format!("AUTH_{}", w.fake.tx(&payment.reference).id);
        // Sealed at rest: neither secret appears in the stored record or its Debug.
        let stored = w
            .store
            .get_record("paystack.subscription", &order.id.to_string())
            .await
            .unwrap()
            .unwrap();
        assert!(
            !stored.data.contains(&auth) && !stored.data.contains("tok_secret"),
            "{}",
            stored.data
        );
        assert!(!format!("{rec:?}").contains(&auth));
        assert_eq!(
            w.subs
                .authorization_code(order.id)
                .await
                .unwrap()
                .expose_secret(),
            auth
        );
        // The plan was created once with the catalog terms; reused afterwards.
        let plan = w.prov.catalog().get(&"win-2c-4g".into()).unwrap().clone();
        assert_eq!(w.subs.ensure_plan(&plan).await.unwrap(), rec.plan_code);
        {
            let st = w.fake.0.lock().unwrap();
            assert_eq!(st.plans.len(), 1);
            assert_eq!(
                (
                    st.plans[0]["amount"].clone(),
                    st.plans[0]["interval"].clone()
                ),
                (json!(4_500_000), json!("monthly"))
            );
            assert_eq!(
                st.subs[&rec.subscription_code].0["authorization"],
                json!(auth)
            );
        }

        // Renewal: verified, extends the period; a replay is a no-op.
        let renewal_ref = "renewal-1";
        {
            let mut tx = w.fake.tx(&payment.reference);
            tx.reference = renewal_ref.into();
            tx.id += 100;
            w.fake.0.lock().unwrap().txs.insert(renewal_ref.into(), tx);
        }
        let delivery = invoice("invoice.update", &rec.subscription_code, Some(renewal_ref));
        let out = w
            .subs
            .handle_webhook(WebhookRequest {
                headers: &delivery.0,
                body: &delivery.1,
            })
            .await
            .unwrap();
        let SubscriptionOutcome::Renewed(_, until) = out else {
            panic!("{out:?}")
        };
        // Calendar months: the first period ends early February, the renewal adds February's
        // 28 days, not 30.
        assert_eq!(until, rec.paid_until.add_months(1));
        assert_eq!(until.duration_since(rec.paid_until), 28 * DAY);
        let again = w
            .subs
            .handle_webhook(WebhookRequest {
                headers: &delivery.0,
                body: &delivery.1,
            })
            .await
            .unwrap();
        assert_eq!(again, SubscriptionOutcome::Duplicate);
        // The charge.success for the same renewal (naming customer and plan) is the same renewal.
        let mut charge_event: Value =
            serde_json::from_slice(&w.fake.webhook("charge.success", renewal_ref).1).unwrap();
        charge_event["data"]["plan"] = json!({"plan_code": rec.plan_code, "interval": "monthly"});
        charge_event["data"]["customer"]["customer_code"] = json!(rec.customer_code);
        let charge_delivery = signed(&charge_event);
        assert_eq!(
            w.subs
                .handle_webhook(WebhookRequest {
                    headers: &charge_delivery.0,
                    body: &charge_delivery.1
                })
                .await
                .unwrap(),
            SubscriptionOutcome::Duplicate
        );
        assert_eq!(
            w.subs.get(order.id).await.unwrap().unwrap().paid_until,
            until
        );
        // A second renewal arriving only as charge.success extends again.
        {
            let mut tx = w.fake.tx(renewal_ref);
            tx.reference = "renewal-2".into();
            tx.id += 1;
            w.fake.0.lock().unwrap().txs.insert("renewal-2".into(), tx);
        }
        let mut second: Value =
            serde_json::from_slice(&w.fake.webhook("charge.success", "renewal-2").1).unwrap();
        second["data"]["plan"] = json!(rec.plan_code);
        second["data"]["customer"]["customer_code"] = json!(rec.customer_code);
        let second = signed(&second);
        let out = w
            .subs
            .handle_webhook(WebhookRequest {
                headers: &second.0,
                body: &second.1,
            })
            .await
            .unwrap();
        let until2 = until.add_months(1);
        assert_eq!(out, SubscriptionOutcome::Renewed(order.id, until2));
        assert_eq!(until2.duration_since(until), 31 * DAY, "March");
        // An invoice.update that carries Paystack's next_payment_date: that date is the end.
        {
            let mut tx = w.fake.tx("renewal-2");
            tx.reference = "renewal-3".into();
            tx.id += 1;
            w.fake.0.lock().unwrap().txs.insert("renewal-3".into(), tx);
        }
        let paystack_date = until2.add_months(1).saturating_sub(DAY);
        let mut third: Value = serde_json::from_slice(
            &invoice("invoice.update", &rec.subscription_code, Some("renewal-3")).1,
        )
        .unwrap();
        third["data"]["subscription"]["next_payment_date"] = json!(paystack_date.to_string());
        let third = signed(&third);
        assert_eq!(
            w.subs
                .handle_webhook(WebhookRequest {
                    headers: &third.0,
                    body: &third.1
                })
                .await
                .unwrap(),
            SubscriptionOutcome::Renewed(order.id, paystack_date)
        );
        // A "renewal" whose charge does not verify for the plan price is refused.
        w.fake.set(renewal_ref, "success", 100, None);
        let cheap = invoice("invoice.update", &rec.subscription_code, Some(renewal_ref));
        let mut cheap_body: Value = serde_json::from_slice(&cheap.1).unwrap();
        cheap_body["data"]["invoice_code"] = json!("INV_other");
        let cheap = signed(&cheap_body);
        assert_eq!(
            w.subs
                .handle_webhook(WebhookRequest {
                    headers: &cheap.0,
                    body: &cheap.1
                })
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Rejected
        );
        // Tampered: refused.
        let mut forged = delivery.1.clone();
        forged[5] ^= 1;
        assert_eq!(
            w.subs
                .handle_webhook(WebhookRequest {
                    headers: &delivery.0,
                    body: &forged
                })
                .await
                .unwrap_err()
                .kind(),
            ErrorKind::Unauthenticated
        );

        // Renewal fails: grace, then suspension, then termination, via lifecycle jobs.
        let failed = invoice("invoice.payment_failed", &rec.subscription_code, None);
        assert_eq!(
            w.subs
                .handle_webhook(WebhookRequest {
                    headers: &failed.0,
                    body: &failed.1
                })
                .await
                .unwrap(),
            SubscriptionOutcome::Lapsing(order.id)
        );
        assert_eq!(
            w.subs.enforce().await.unwrap(),
            0,
            "within the grace period"
        );
        w.clock.advance(3 * DAY);
        assert_eq!(w.subs.enforce().await.unwrap(), 1);
        let jobs = w.store.jobs_for_order(order.id).await.unwrap();
        assert!(jobs.iter().any(|j| j.kind == JobKind::Suspend), "{jobs:?}");
        run_jobs(&w).await;
        assert_eq!(
            w.prov.order(order.id).await.unwrap().state,
            OrderState::Suspended
        );
        assert_eq!(
            w.subs.get(order.id).await.unwrap().unwrap().state,
            SubscriptionState::Suspended
        );
        assert_eq!(w.subs.enforce().await.unwrap(), 0);
        w.clock.advance(10 * DAY);
        assert_eq!(w.subs.enforce().await.unwrap(), 1);
        run_jobs(&w).await;
        assert_eq!(
            w.prov.order(order.id).await.unwrap().state,
            OrderState::Terminated
        );

        // Disable on Paystack with the unsealed e-mail token.
        w.subs.set_enabled(order.id, false).await.unwrap();
        assert!(!w.fake.0.lock().unwrap().subs[&rec.subscription_code].2);
        check_requests_against_spec(&w.server).await;
    }
}
