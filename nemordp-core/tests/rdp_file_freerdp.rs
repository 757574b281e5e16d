//! Our `.rdp` file, password generator and probe against real FreeRDP programs: a
//! `freerdp-shadow-cli /sec:nla` server (the only local server that really checks an NLA
//! password) with a `winpr-hash` SAM file, and the `xfreerdp` client reading our file under
//! `xvfb-run`. The right password authenticates; a wrong one is refused.
//!
//! Peers come from `scripts/peers.sh`; missing ones skip with a reason, or fail under `CI=true`.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use nemordp_core::{
    password::new_password,
    rdp::{ProbeOutcome, RdpFile, RdpProbe, TcpRdpProbe},
};
use secrecy::ExposeSecret;

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        // xvfb-run starts the server and Xvfb as grandchildren: end the whole process group.
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peers_available() -> bool {
    let needed = [
        "/usr/bin/freerdp-shadow-cli",
        "/usr/bin/winpr-hash",
        "/usr/bin/xfreerdp",
        "/usr/bin/xvfb-run",
    ];
    let missing: Vec<_> = needed.iter().filter(|p| !Path::new(p).exists()).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "missing {missing:?}; CI needs them (scripts/peers.sh installs them)"
    );
    eprintln!("skipping: {missing:?} not installed (run scripts/peers.sh)");
    false
}

fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("nemordp-nla-{}", nemordp_core::OrderId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `freerdp-shadow-cli /sec:nla` under its own X display and waits until it listens.
/// Xvfb occasionally loses a race for a display number on busy machines and the server then
/// exits at once; such a start is retried on a fresh port, up to three times.
fn start_shadow_server(dir: &Path) -> (KillOnDrop, SocketAddr) {
    use std::os::unix::process::CommandExt;
    let mut logs = String::new();
    for attempt in 1..=3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let log = dir.join(format!("shadow-{attempt}.log"));
        let child = Command::new("xvfb-run")
            .args(["-a", "freerdp-shadow-cli"])
            .arg(format!("/port:{port}"))
            .args(["/bind-address:127.0.0.1", "/sec:nla"])
            .arg(format!("/sam-file:{}", dir.join("sam").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .spawn()
            .expect("start freerdp-shadow-cli");
        let mut server = KillOnDrop(child);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        // Generous: the server starts an X display first, and CI machines are busy.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return (server, addr);
            }
            if server.0.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        logs.push_str(&std::fs::read_to_string(&log).unwrap_or_default());
    }
    panic!("shadow server never listened in 3 attempts:\n{logs}");
}

fn xfreerdp_auth(rdp_file: &Path, password: &str) -> bool {
    let status = Command::new("timeout")
        .args(["60", "xvfb-run", "-a", "xfreerdp"])
        .arg(rdp_file)
        .arg(format!("/p:{password}"))
        .args(["/auth-only", "/cert:ignore"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run xfreerdp");
    status.success()
}

#[tokio::test]
async fn freerdp_reads_our_rdp_file_and_nla_checks_the_generated_password() {
    if !peers_available() {
        return;
    }
    let dir = tempdir();
    let user = "rdpuser";
    let password = new_password(user).unwrap();

    let sam = Command::new("winpr-hash")
        .args(["-u", user, "-p", password.expose_secret(), "-f", "sam"])
        .output()
        .expect("winpr-hash");
    assert!(sam.status.success());
    std::fs::write(dir.join("sam"), &sam.stdout).unwrap();

    let (_server, addr) = start_shadow_server(&dir);
    // The probe sees an RDP server that selected CredSSP (NLA).
    let outcome = TcpRdpProbe::new()
        .with_timeouts(Duration::from_secs(3), Duration::from_secs(3))
        .probe(addr)
        .await;
    match outcome {
        ProbeOutcome::Rdp(n) => assert!(n.is_nla(), "expected NLA, got {n:?}"),
        other => panic!("shadow server not seen as RDP: {other:?}"),
    }

    let file = dir.join("machine.rdp");
    std::fs::write(
        &file,
        RdpFile::new("127.0.0.1", user)
            .unwrap()
            .with_port(addr.port())
            .unwrap()
            .render(),
    )
    .unwrap();
    assert!(
        xfreerdp_auth(&file, password.expose_secret()),
        "right password refused"
    );
    let wrong = new_password(user).unwrap();
    assert!(
        !xfreerdp_auth(&file, wrong.expose_secret()),
        "wrong password accepted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
