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
    let base = std::env::var("NEMORDP_PEERS_DIR").unwrap_or_else(|_| "/var/tmp/nemordp-peers".into());
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
    let rdp = RdpFile::new("203.0.113.7", "Administrator").unwrap().render();
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
