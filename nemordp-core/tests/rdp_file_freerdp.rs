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

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = {
        use std::os::unix::process::CommandExt;
        Command::new("xvfb-run")
            .args(["-a", "freerdp-shadow-cli"])
            .arg(format!("/port:{port}"))
            .args(["/bind-address:127.0.0.1", "/sec:nla"])
            .arg(format!("/sam-file:{}", dir.join("sam").display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("shadow.log")).unwrap())
            .process_group(0)
            .spawn()
            .expect("start freerdp-shadow-cli")
    };
    let _server = KillOnDrop(server);
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    // Generous: the server starts an X display first, and CI machines are busy.
    let deadline = Instant::now() + Duration::from_secs(90);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "shadow server never listened:\n{}",
            std::fs::read_to_string(dir.join("shadow.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

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
            .with_port(port)
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
