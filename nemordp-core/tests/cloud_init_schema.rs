//! Our `#cloud-config` validated by the real `cloud-init schema` (Debian package `cloud-init`,
//! installed by `scripts/peers.sh`). Missing tool: skip with a reason, or fail under `CI=true`.

use std::{path::Path, process::Command};

use nemordp_core::bootstrap::{BootstrapSpec, ubuntu_cloud_config};
use secrecy::SecretString;

fn cloud_init() -> Option<&'static str> {
    let path = "/usr/bin/cloud-init";
    if Path::new(path).exists() {
        return Some(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "cloud-init is missing; CI needs it (scripts/peers.sh installs it)"
    );
    eprintln!("skipping: cloud-init is not installed (run scripts/peers.sh)");
    None
}

fn schema_check(tool: &str, text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("nemordp-ci-{}", nemordp_core::OrderId::new()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("user-data");
    std::fs::write(&file, text).unwrap();
    let out = Command::new(tool)
        .args(["schema", "--config-file"])
        .arg(&file)
        .output()
        .expect("run cloud-init schema");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn generated_cloud_configs_pass_cloud_init_schema() {
    let Some(tool) = cloud_init() else { return };
    let specs = [
        BootstrapSpec::new("nemordp-a", "rdpuser")
            .with_password(SecretString::from("Abc-123_def.456+ghi")),
        BootstrapSpec::new("nemordp-b", "alice")
            .with_password(SecretString::from("Zz9=Yy8@Xx7~Ww6-Vv5"))
            .with_packages(["firefox", "vlc", "libreoffice", "g++", "python3.11"])
            .with_rdp_source("203.0.113.44".parse().unwrap()),
        BootstrapSpec::new("n", "u2")
            .with_password(SecretString::from("Pp2-Qq3_Rr4.Ss5+Tt6"))
            .with_rdp_source("2001:db8::5".parse().unwrap()),
    ];
    for spec in specs {
        let text = ubuntu_cloud_config(&spec).unwrap();
        let (ok, output) = schema_check(tool, &text);
        assert!(ok, "cloud-init rejected our config:\n{output}\n---\n{text}");
    }
}

#[test]
fn cloud_init_schema_check_can_fail() {
    let Some(tool) = cloud_init() else { return };
    // Proves the check bites: a wrong type for a known key is rejected.
    let (ok, _) = schema_check(
        tool,
        "#cloud-config\n{\"users\": 5, \"packages\": {\"a\": 1}}\n",
    );
    assert!(!ok, "cloud-init accepted an invalid config");
}
