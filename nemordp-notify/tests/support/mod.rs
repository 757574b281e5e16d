//! Shared test helpers: a real SMTP server (aiosmtpd, prepared by scripts/peers.d/30-smtp.sh)
//! started on a free 127.0.0.1 port with a certificate made at test time.
#![allow(dead_code, unreachable_pub)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use nemordp_core::{
    NotificationId, OrderId,
    notify::{ConnectionDetails, Notification, NotificationKind},
    order::Customer,
    rdp::RdpFile,
    secrecy::SecretString,
};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

pub const SMTP_USER: &str = "mailer";
pub const SMTP_PASSWORD: &str = "sm7p-Pa55word";

/// Where the peer script installs aiosmtpd, or an interpreter that already has it.
fn aiosmtpd_python() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("NEMORDP_AIOSMTPD_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let base =
        std::env::var("NEMORDP_PEERS_DIR").unwrap_or_else(|_| "/var/tmp/nemordp-peers".into());
    let venv = Path::new(&base).join("aiosmtpd/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    let ok = std::process::Command::new("python3")
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| PathBuf::from("python3"))
}

/// A peer is missing: skip (printing why), or fail under CI=true.
pub fn skip(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true requires this peer: {reason}"
    );
    eprintln!("SKIP: {reason} (run scripts/peers.sh)");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running aiosmtpd, stopped when dropped.
pub struct SmtpSink {
    _child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub cert_pem: String,
}

/// One message the sink accepted.
pub struct Received {
    pub raw: Vec<u8>,
    pub meta: serde_json::Value,
}

impl SmtpSink {
    /// Starts a sink in `mode` ("starttls" or "implicit"), or returns `None` after `skip`.
    pub async fn start(mode: &str) -> Option<Self> {
        let Some(python) = aiosmtpd_python() else {
            skip("aiosmtpd is not installed");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("nemordp-smtp-sink-{}", NotificationId::new()));
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .unwrap();
        let cert_pem = key.cert.pem();
        std::fs::write(dir.join("cert.pem"), &cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), key.signing_key.serialize_pem()).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/smtp_sink.py");
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new(&python)
                .arg(&script)
                .arg(port.to_string())
                .arg(dir.join("mail"))
                .arg(dir.join("cert.pem"))
                .arg(dir.join("key.pem"))
                .arg(SMTP_USER)
                .arg(SMTP_PASSWORD)
                .arg(mode)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let mut lines = BufReader::new(stdout).lines();
            let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await;
            if let Ok(Ok(Some(line))) = ready
                && line.trim() == format!("READY {port}")
            {
                return Some(Self {
                    _child: child,
                    port,
                    dir: dir.join("mail"),
                    cert_pem,
                });
            }
            // The port was taken between probing and binding, or the sink failed: retry.
            let _ = child.kill().await;
        }
        panic!("aiosmtpd did not start");
    }

    /// `smtp(s)://user:password@127.0.0.1:port`.
    pub fn url(&self, scheme: &str, password: &str) -> SecretString {
        SecretString::from(format!(
            "{scheme}://{SMTP_USER}:{password}@127.0.0.1:{}",
            self.port
        ))
    }

    /// Messages received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        let mut out = Vec::new();
        for n in 1.. {
            let eml = self.dir.join(format!("{n}.eml"));
            let Ok(raw) = std::fs::read(&eml) else { break };
            let meta = std::fs::read_to_string(self.dir.join(format!("{n}.json"))).unwrap();
            out.push(Received {
                raw,
                meta: serde_json::from_str(&meta).unwrap(),
            });
        }
        out
    }

    /// Waits (briefly, for the server's file write) until `n` messages arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        for _ in 0..200 {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} messages, got {}", self.received().len());
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(parent) = self.dir.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// The machine password used in "ready" test notifications.
pub const MACHINE_PASSWORD: &str = "Rdp<&>Pw-93x!";

pub fn customer() -> Customer {
    let mut c = Customer::new("cust-42 <b>bold</b>");
    c.email = Some("buyer@example.com".into());
    c
}

pub fn ready_notification() -> Notification {
    let rdp = RdpFile::new("203.0.113.7", "Administrator")
        .unwrap()
        .render();
    Notification::new(
        NotificationId::new(),
        OrderId::new(),
        customer(),
        NotificationKind::Ready,
    )
    .with_connection(ConnectionDetails::new(
        "203.0.113.7",
        3389,
        "Administrator",
        SecretString::from(MACHINE_PASSWORD),
        rdp,
    ))
}

/// A Provisioner on MemoryStore + SimCloud + SimPayments with a manual clock, for relay tests.
pub mod world {
    use std::{sync::Arc, time::Duration};

    use nemordp_core::{
        Asset, Currency, ManualClock, Money, Notifier, OrderId, Timestamp,
        order::{Customer, OrderState},
        plan::{OsKind, Plan, PlanCatalog},
        provisioner::{Provisioner, ProvisionerConfig},
        seal::Sealer,
        secrecy::SecretString,
        sim::{cloud::SimCloud, payments::SimPayments, store::MemoryStore},
    };

    /// The sealing key used by these worlds (the secrets test looks for it in logs).
    pub const SEAL_KEY: [u8; 32] = [0x5a; 32];

    pub struct World {
        pub clock: ManualClock,
        pub cloud: SimCloud,
        pub store: MemoryStore,
        pub payments: SimPayments,
    }

    impl World {
        pub fn new() -> Self {
            let clock = ManualClock::new(Timestamp::from_unix_secs(1_767_225_600));
            let cloud = SimCloud::builder()
                .seed(7)
                // SimCloud boots on tokio time; these tests run on real time (real sockets), so a
                // millisecond boot keeps them quick while the manual clock drives the Provisioner.
                .boot_time(
                    OsKind::WindowsServer,
                    Duration::from_millis(1),
                    Duration::from_millis(2),
                )
                .install_delay(Duration::ZERO)
                .rdp_delay(Duration::ZERO)
                .clock(Arc::new(clock.clone()))
                .build();
            Self {
                clock,
                cloud,
                store: MemoryStore::new(),
                payments: SimPayments::new(
                    Asset::Fiat(Currency::Ngn),
                    SecretString::from("paysecret"),
                ),
            }
        }

        /// A fresh "process" on the shared store, cloud and clock.
        pub fn provisioner(&self, worker: &str, notifier: Arc<dyn Notifier>) -> Provisioner {
            let mut config = ProvisionerConfig::default();
            worker.clone_into(&mut config.worker_id);
            let plan = Plan::new(
                "win",
                "sim",
                OsKind::WindowsServer,
                "sim-1",
                "small",
                Money::parse_major(Currency::Ngn, "1000").unwrap(),
            );
            Provisioner::builder()
                .store(Arc::new(self.store.clone()))
                .provider(Arc::new(self.cloud.clone()))
                .probe(Arc::new(self.cloud.rdp_probe()))
                .payment(Arc::new(self.payments.clone()))
                .notifier(notifier)
                .catalog(PlanCatalog::from_plans([plan]).unwrap())
                .sealer(Sealer::new("k1", SEAL_KEY).unwrap())
                .clock(Arc::new(self.clock.clone()))
                .config(config)
                .build()
                .unwrap()
        }

        /// Places and pays an order: the payment commit queues "payment received" (and the
        /// provisioning job) in the same transaction. Nothing is relayed.
        pub async fn paid_order(&self, p: &Provisioner, customer: Customer) -> OrderId {
            let order = p.place_order(&"win".into(), customer).await.unwrap();
            let payment = p.open_payment(order.id, "sim").await.unwrap();
            self.payments.pay_in_full(&payment.reference).unwrap();
            p.refresh_payment(payment.id).await.unwrap();
            order.id
        }

        /// Runs jobs and the relay on the manual clock until the order is active and every
        /// outbox entry of it is delivered or failed.
        pub async fn run_to_active(&self, p: &Provisioner, order: OrderId) {
            for _ in 0..2_000 {
                p.run_jobs_once().await.unwrap();
                p.relay_outbox_once().await.unwrap();
                let active = p.order(order).await.unwrap().state == OrderState::Active;
                let settled = self
                    .store_outbox(order)
                    .await
                    .iter()
                    .all(|e| !e.is_pending());
                if active && settled {
                    return;
                }
                self.clock.advance(Duration::from_secs(5));
            }
            let state = p.order(order).await.unwrap().state;
            panic!(
                "order {order} did not become active with its notices sent: {state:?} {:?}",
                self.store_outbox(order).await
            );
        }

        pub async fn store_outbox(&self, order: OrderId) -> Vec<nemordp_core::store::OutboxEntry> {
            use nemordp_core::Store as _;
            self.store.outbox_for_order(order).await.unwrap()
        }
    }
}
