//! A small checkout server: a customer orders a plan, is redirected to Paystack's checkout,
//! Paystack calls `POST /webhooks/paystack`, and the paid order is provisioned on `SimCloud`.
//!
//! ```sh
//! PAYSTACK_SECRET_KEY=sk_test_… \
//! PAYSTACK_CALLBACK_URL=https://your-tunnel.example/paid \
//!   cargo run -p nemordp-payments --features paystack --example paystack_checkout
//! ```
//!
//! Then open <http://127.0.0.1:8080/>, and point the Paystack dashboard's webhook URL at
//! `https://your-tunnel.example/webhooks/paystack` (any tunnel to port 8080). Optional:
//! `PAYSTACK_API_URL` (another API base, e.g. a local fake), `LISTEN` (default
//! `127.0.0.1:8080`). Machines are simulated and boot in about half a minute.
//!
//! Routes: `GET /` (order form), `POST /orders` (place + redirect to Paystack),
//! `GET /paid?reference=…` (callback page; verifies server-side, a visit proves nothing),
//! `POST /webhooks/paystack` (raw body + headers to the Provisioner), `GET /orders/{id}`.

use std::{fmt::Write as _, sync::Arc, time::Duration};

use axum::{
    Form, Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use nemordp_core::{
    ErrorKind, OrderId,
    order::Customer,
    payment::WebhookRequest,
    plan::{OsKind, PlanCatalog},
    provisioner::Provisioner,
    seal::Sealer,
    sim::{cloud::SimCloud, notify::RecordingNotifier, store::MemoryStore},
};
use nemordp_payments::paystack::PaystackBuilder;
use serde_json::json;

#[derive(Clone)]
struct App {
    provisioner: Provisioner,
}

#[derive(serde::Deserialize)]
struct OrderForm {
    plan: String,
    email: String,
}

#[derive(serde::Deserialize)]
struct Callback {
    reference: String,
}

fn plans() -> PlanCatalog {
    PlanCatalog::from_toml_str(
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

        [[plan]]
        id = "ubuntu-2c-4g"
        name = "Ubuntu desktop, 2 vCPU, 4 GB"
        provider = "sim"
        os = "ubuntu_desktop"
        region = "sim-1"
        size = "small"
        price = "30000.00 NGN"
        period = "monthly"
    "#,
    )
    .expect("the example catalog is valid")
}

/// Maps library errors onto HTTP statuses (Paystack retries non-2xx webhook answers).
fn status_of(e: &nemordp_core::Error) -> StatusCode {
    match e.kind() {
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

fn fail(e: &nemordp_core::Error) -> Response {
    (status_of(e), e.to_string()).into_response()
}

async fn index(State(app): State<App>) -> Html<String> {
    let mut options = String::new();
    for p in app.provisioner.catalog().iter() {
        let _ = write!(
            options,
            "<option value=\"{}\">{} — {}</option>",
            p.id, p.name, p.price
        );
    }
    Html(format!(
        "<h1>Order a machine</h1><form method=post action=/orders>\
         <select name=plan>{options}</select> <input name=email type=email required \
         placeholder=you@example.com> <button>Pay with Paystack</button></form>"
    ))
}

async fn place(State(app): State<App>, Form(form): Form<OrderForm>) -> Response {
    let customer = Customer::new(form.email.to_ascii_lowercase()).with_email(form.email);
    let order = match app
        .provisioner
        .place_order(&form.plan.as_str().into(), customer)
        .await
    {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    match app.provisioner.open_payment(order.id, "paystack").await {
        Ok(payment) => match payment.checkout_url {
            Some(url) => Redirect::to(&url).into_response(),
            None => (StatusCode::BAD_GATEWAY, "no checkout url").into_response(),
        },
        Err(e) => fail(&e),
    }
}

async fn paid(State(app): State<App>, Query(cb): Query<Callback>) -> Response {
    // The visit proves nothing: ask Paystack (verify) and apply what it says.
    let payment = match app
        .provisioner
        .store()
        .find_payment("paystack", &cb.reference)
        .await
    {
        Ok(Some(p)) => p,
        Ok(None) => return (StatusCode::NOT_FOUND, "unknown reference").into_response(),
        Err(e) => return fail(&e),
    };
    match app.provisioner.refresh_payment(payment.id).await {
        Ok(p) => Html(format!(
            "<p>Payment {}: <b>{}</b>. Order <a href=/orders/{}>{}</a>.</p>",
            p.reference, p.state.status, p.order_id, p.order_id
        ))
        .into_response(),
        Err(e) => fail(&e),
    }
}

async fn webhook(State(app): State<App>, headers: HeaderMap, body: Bytes) -> Response {
    let request = WebhookRequest {
        headers: &headers,
        body: &body,
    };
    match app.provisioner.handle_webhook("paystack", request).await {
        Ok(outcome) => {
            tracing::info!(?outcome, "paystack webhook");
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "paystack webhook refused");
            fail(&e)
        }
    }
}

async fn order(State(app): State<App>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<OrderId>() else {
        return (StatusCode::BAD_REQUEST, "bad order id").into_response();
    };
    match app.provisioner.order(id).await {
        Ok(o) => Json(json!({
            "id": o.id.to_string(),
            "plan": o.plan_id.to_string(),
            "state": format!("{:?}", o.state),
            "fraud": o.fraud,
        }))
        .into_response(),
        Err(e) => fail(&e),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().init();
    let paystack = PaystackBuilder::from_env().build()?;
    let cloud = SimCloud::builder()
        .boot_time(
            OsKind::WindowsServer,
            Duration::from_secs(20),
            Duration::from_secs(40),
        )
        .boot_time(
            OsKind::UbuntuDesktop,
            Duration::from_secs(10),
            Duration::from_secs(20),
        )
        .build();
    let provisioner = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(paystack))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(plans())
        .sealer(Sealer::from_env().unwrap_or_else(|_| Sealer::ephemeral()))
        .build()?;
    let workers = provisioner.start();
    let app = Router::new()
        .route("/", get(index))
        .route("/orders", post(place))
        .route("/orders/{id}", get(order))
        .route("/paid", get(paid))
        .route("/webhooks/paystack", post(webhook))
        .with_state(App { provisioner });
    let listen = std::env::var("LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".to_owned());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tracing::info!("listening on http://{listen}/");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    workers.shutdown().await;
    Ok(())
}
