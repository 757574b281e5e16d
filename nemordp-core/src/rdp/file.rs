//! `.rdp` connection files.
//!
//! Every field is validated so no newline, control character or separator can inject extra
//! settings. The file never contains the password (Windows would store it encrypted with a
//! per-user key anyway, and FreeRDP ignores it); credentials travel separately.
//!
//! ```
//! use nemordp_core::rdp::RdpFile;
//!
//! let text = RdpFile::new("203.0.113.7", "Administrator").unwrap().render();
//! assert!(text.contains("full address:s:203.0.113.7:3389\r\n"));
//! assert!(text.contains("enablecredsspsupport:i:1\r\n")); // NLA
//! assert!(RdpFile::new("203.0.113.7\r\nalternate shell:s:cmd", "x").is_err());
//! ```

use std::{fmt::Write as _, net::IpAddr};

use crate::error::{Error, Result};

/// The settings of one `.rdp` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdpFile {
    host: String,
    port: u16,
    username: String,
    width: Option<u16>,
    height: Option<u16>,
}

fn is_hostname(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// Windows account names: 1–104 characters, none of `" / \ [ ] : ; | = , + * ? < >`, no
/// control characters; we also refuse spaces and `@` to keep the file unambiguous.
fn is_username(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 104
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

impl RdpFile {
    /// A file for `host` (an IP address or DNS name) on port 3389 as `username`.
    pub fn new(host: impl Into<String>, username: impl Into<String>) -> Result<Self> {
        let host = host.into();
        let username = username.into();
        if host.parse::<IpAddr>().is_err() && !is_hostname(&host) {
            return Err(Error::invalid_input(format!(
                "rdp host {host:?} is not an IP address or DNS name"
            )));
        }
        if !is_username(&username) {
            return Err(Error::invalid_input(format!(
                "rdp username {username:?} must be 1-104 characters of A-Z a-z 0-9 . - _"
            )));
        }
        Ok(Self {
            host,
            port: 3389,
            username,
            width: None,
            height: None,
        })
    }

    /// Uses another port (0 is refused).
    pub fn with_port(mut self, port: u16) -> Result<Self> {
        if port == 0 {
            return Err(Error::invalid_input("rdp port 0"));
        }
        self.port = port;
        Ok(self)
    }

    /// Fixes the desktop size instead of fitting the client's screen (200–8192 pixels).
    pub fn with_size(mut self, width: u16, height: u16) -> Result<Self> {
        let ok = |v: u16| (200..=8192).contains(&v);
        if !ok(width) || !ok(height) {
            return Err(Error::invalid_input(format!(
                "rdp desktop size {width}x{height} out of range"
            )));
        }
        self.width = Some(width);
        self.height = Some(height);
        Ok(self)
    }

    /// The `full address` value: `host:port`, with IPv6 in brackets.
    pub fn full_address(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(v6)) => format!("[{v6}]:{}", self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The file's text, CRLF line endings as Windows writes them.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut line = |k: &str, v: &dyn std::fmt::Display| {
            let _ = write!(out, "{k}:{v}\r\n");
        };
        line("full address", &format_args!("s:{}", self.full_address()));
        line("username", &format_args!("s:{}", self.username));
        // NLA (CredSSP) on; warn rather than connect silently if the server is not verified.
        line("enablecredsspsupport", &"i:1");
        line("authentication level", &"i:2");
        line("negotiate security layer", &"i:1");
        line("prompt for credentials", &"i:0");
        if let (Some(w), Some(h)) = (self.width, self.height) {
            line("screen mode id", &"i:1");
            line("desktopwidth", &format_args!("i:{w}"));
            line("desktopheight", &format_args!("i:{h}"));
        } else {
            line("screen mode id", &"i:2");
            line("dynamic resolution", &"i:1");
        }
        line("smart sizing", &"i:1");
        line("session bpp", &"i:32");
        line("compression", &"i:1");
        line("autoreconnection enabled", &"i:1");
        line("redirectclipboard", &"i:1");
        line("audiomode", &"i:0");
        line("connection type", &"i:7");
        line("networkautodetect", &"i:1");
        line("bandwidthautodetect", &"i:1");
        out
    }

    /// Parses `key:type:value` lines back into pairs: what a client would read. Used by tests
    /// and fuzzing to prove nothing was injected.
    pub fn parse_settings(text: &str) -> Vec<(String, String)> {
        text.lines()
            .filter_map(|l| {
                let (key, rest) = l.split_once(':')?;
                Some((key.to_owned(), rest.to_owned()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_expected_settings() {
        let f = RdpFile::new("2001:db8::7", "rdpuser")
            .unwrap()
            .with_port(3390)
            .unwrap();
        let text = f.render();
        assert!(
            text.starts_with("full address:s:[2001:db8::7]:3390\r\n"),
            "{text}"
        );
        assert!(!text.to_lowercase().contains("password"));
        let keys: Vec<_> = RdpFile::parse_settings(&text)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys.iter().filter(|k| *k == "full address").count(), 1);
        let sized = RdpFile::new("host.example", "u")
            .unwrap()
            .with_size(1280, 800)
            .unwrap()
            .render();
        assert!(sized.contains("desktopwidth:i:1280\r\n"));
        assert!(RdpFile::new("h", "u").unwrap().with_size(10, 10).is_err());
        assert!(RdpFile::new("h", "u").unwrap().with_port(0).is_err());
    }

    #[test]
    fn refuses_injection() {
        for host in [
            "",
            "a\nb",
            "a b",
            "a:1",
            "-a.com",
            "a..b",
            "x\r",
            "évil.com",
            "a;b",
        ] {
            assert!(RdpFile::new(host, "u").is_err(), "host {host:?} accepted");
        }
        for user in ["", "a\nb", "a b", "DOMAIN\\user", "u:s:x", "a@b", "x\u{0}"] {
            assert!(RdpFile::new("h", user).is_err(), "user {user:?} accepted");
        }
    }

    proptest! {
        /// Whatever the input, an accepted file has exactly the fixed set of settings: the
        /// host and user cannot add a line or change a key.
        #[test]
        fn accepted_fields_never_add_settings(host in "\\PC{0,30}", user in "\\PC{0,30}") {
            if let Ok(f) = RdpFile::new(host.clone(), user.clone()) {
                let text = f.render();
                let settings = RdpFile::parse_settings(&text);
                let baseline = RdpFile::parse_settings(&RdpFile::new("h", "u").unwrap().render());
                prop_assert_eq!(settings.len(), baseline.len());
                for ((k, _), (bk, _)) in settings.iter().zip(&baseline) {
                    prop_assert_eq!(k, bk);
                }
                prop_assert_eq!(text.matches("\r\n").count(), baseline.len());
            }
        }
    }
}
