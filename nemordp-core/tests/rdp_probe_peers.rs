//! The RDP readiness probe against real programs: an xrdp server, a Python HTTP server, a
//! listener that hangs up, a silent listener and a closed port. Real sockets, so these run
//! with a real clock and short timeouts (never under `tokio::time::pause`).
//!
//! xrdp comes from `scripts/peers.sh`. Where it is missing the xrdp test skips with a reason,
//! except with `CI=true`, where a missing peer fails.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nemordp_core::rdp::{Negotiation, ProbeOutcome, RdpProbe, TcpRdpProbe, probe::protocol};

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peer_available(name: &str, path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{name} is missing at {path}; CI needs it (scripts/peers.sh installs it)"
    );
    eprintln!("skipping: {name} is not installed at {path} (run scripts/peers.sh)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "peer never listened on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nemordp-test-{}", nemordp_core::OrderId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn probe() -> TcpRdpProbe {
    TcpRdpProbe::new().with_timeouts(Duration::from_secs(2), Duration::from_secs(2))
}

#[tokio::test]
async fn xrdp_answers_with_a_connection_confirm() {
    if !peer_available("xrdp", "/usr/sbin/xrdp") {
        return;
    }
    let port = free_port();
    let dir = tempdir();
    let ini = std::fs::read_to_string("/etc/xrdp/xrdp.ini").expect("xrdp.ini");
    // `tcp://.:PORT` binds 127.0.0.1 only; a bare number would bind every interface.
    let ini = ini
        .lines()
        .map(|l| {
            if l.starts_with("port=3389") {
                format!("port=tcp://.:{port}")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let ini_path = dir.join("xrdp.ini");
    std::fs::write(&ini_path, ini).unwrap();
    let child = Command::new("/usr/sbin/xrdp")
        .args(["--nodaemon", "-c"])
        .arg(&ini_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start xrdp");
    let _guard = KillOnDrop(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr);

    let outcome = probe().probe(addr).await;
    // xrdp has no CredSSP, so it selects TLS out of our TLS|CredSSP offer.
    assert_eq!(
        outcome,
        ProbeOutcome::Rdp(Negotiation::Selected(protocol::SSL))
    );
    assert!(outcome.is_ready());
}

#[tokio::test]
async fn http_server_is_not_rdp() {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(tempdir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 is needed for this test");
    let _guard = KillOnDrop(child);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    wait_listening(addr);
    let outcome = probe().probe(addr).await;
    assert!(matches!(outcome, ProbeOutcome::NotRdp(_)), "{outcome:?}");
}

#[tokio::test]
async fn listener_that_hangs_up_is_not_rdp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            drop(sock);
        }
    });
    let outcome = probe().probe(addr).await;
    assert!(matches!(outcome, ProbeOutcome::NotRdp(_)), "{outcome:?}");
}

#[tokio::test]
async fn silent_listener_times_out_as_not_rdp() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut socks = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            socks.push(sock);
        }
    });
    let outcome = TcpRdpProbe::new()
        .with_timeouts(Duration::from_secs(2), Duration::from_millis(300))
        .probe(addr)
        .await;
    assert_eq!(
        outcome,
        ProbeOutcome::NotRdp("no reply before the timeout".into())
    );
    held.abort();
}

#[tokio::test]
async fn closed_port_is_unreachable() {
    let port = free_port();
    let outcome = probe().probe(([127, 0, 0, 1], port).into()).await;
    assert!(
        matches!(outcome, ProbeOutcome::Unreachable(_)),
        "{outcome:?}"
    );
}
