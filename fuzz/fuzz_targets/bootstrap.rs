//! First-boot scripts: arbitrary hostname, username, password, packages and RDP source into
//! `windows_powershell` and `ubuntu_cloud_config`.
//!
//! PowerShell: the script is tokenised the way PowerShell's tokenizer splits code from
//! single-quoted literals (the quote characters are `'` and U+2018..U+201B, a doubled quote is
//! an escaped quote; double-quoted strings, comments). For every accepted spec the code between
//! literals is byte-identical to a baseline script (same number of packages, same presence of
//! password and RDP source), there are as many literals, every literal decodes to exactly the
//! baseline's fixed text or to the corresponding field of the spec (so the password is inside
//! one correctly doubled literal and nowhere else), no literal holds a line break, and the line
//! count (CRLF) equals the baseline's.
//!
//! cloud-config: starts with `#cloud-config\n`; the rest is JSON whose tree equals the
//! baseline's with the spec's fields in place of the baseline's and only `hashed_passwd`
//! differing; the plaintext password appears nowhere except where it is password-independent
//! template text (checked by regenerating with another password); `users[1].hashed_passwd`
//! verifies the password with `sha_crypt::sha512_check`.
//!
//! Input: `control 0xFF hostname 0xFF username 0xFF password 0xFF package 0xFF package …`.
//! 0xFF never occurs in UTF-8, so the text fields can be any string. `control`: byte 0 bit 0 =
//! password present; byte 1 = 1: IPv4 RDP source in the next 4 bytes, 2: IPv6 in the next 16,
//! else none. Passwords are cut to 48 bytes to
//! keep SHA-512 crypt (5000 rounds, twice per input) at a few hundred execs/s.
#![no_main]

use std::{
    cell::RefCell,
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use libfuzzer_sys::fuzz_target;
use nemordp_core::bootstrap::{ubuntu_cloud_config, windows_powershell, BootstrapSpec};
use secrecy::SecretString;
use serde_json::Value;

const MAX_PASSWORD: usize = 48;

#[derive(Debug)]
struct Control {
    has_password: bool,
    rdp_source: Option<IpAddr>,
}

impl Control {
    fn parse(b: &[u8]) -> Self {
        let ip = |n: usize| b.get(2..2 + n);
        let rdp_source = match b.get(1) {
            Some(1) => ip(4).map(|x| IpAddr::from(<[u8; 4]>::try_from(x).unwrap())),
            Some(2) => ip(16).map(|x| IpAddr::from(<[u8; 16]>::try_from(x).unwrap())),
            _ => None,
        };
        Self {
            has_password: b.first().is_some_and(|c| c & 1 == 1),
            rdp_source,
        }
    }
}

/// PowerShell's single-quote characters (CharTraits.IsSingleQuote).
fn is_single_quote(c: char) -> bool {
    matches!(c, '\'' | '\u{2018}' | '\u{2019}' | '\u{201a}' | '\u{201b}')
}

/// PowerShell's double-quote characters (CharTraits.IsDoubleQuote).
fn is_double_quote(c: char) -> bool {
    matches!(c, '"' | '\u{201c}' | '\u{201d}' | '\u{201e}')
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Code(String),
    Literal(String),
}

/// Splits a script into code and decoded single-quoted literals.
fn tokenize(script: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut code = String::new();
    let mut chars = script.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        if is_single_quote(c) {
            out.push(Tok::Code(std::mem::take(&mut code)));
            let mut lit = String::new();
            loop {
                let Some(c) = chars.next() else {
                    panic!("unterminated single-quoted literal in:\n{script}");
                };
                if is_single_quote(c) {
                    match chars.peek() {
                        Some(&q) if is_single_quote(q) => {
                            chars.next();
                            lit.push(q);
                        }
                        _ => break,
                    }
                } else {
                    lit.push(c);
                }
            }
            out.push(Tok::Literal(lit));
            prev = Some('\'');
            continue;
        }
        code.push(c);
        if is_double_quote(c) {
            loop {
                let Some(c) = chars.next() else {
                    panic!("unterminated double-quoted string in:\n{script}");
                };
                code.push(c);
                if c == '`' {
                    if let Some(n) = chars.next() {
                        code.push(n);
                    }
                } else if is_double_quote(c) {
                    match chars.peek() {
                        Some(&q) if is_double_quote(q) => {
                            chars.next();
                            code.push(q);
                        }
                        _ => break,
                    }
                }
            }
        } else if c == '#' && prev.is_none_or(|p| p.is_whitespace()) {
            while let Some(&n) = chars.peek() {
                if n == '\r' || n == '\n' {
                    break;
                }
                code.push(n);
                chars.next();
            }
        }
        prev = Some(c);
    }
    out.push(Tok::Code(code));
    out
}

fn line_count(script: &str) -> usize {
    let crlf = script.matches("\r\n").count();
    assert_eq!(
        script.matches('\n').count(),
        crlf,
        "bare LF in script:\n{script}"
    );
    assert_eq!(
        script.matches('\r').count(),
        crlf,
        "bare CR in script:\n{script}"
    );
    crlf
}

struct Fields<'a> {
    hostname: &'a str,
    username: &'a str,
    password: Option<&'a str>,
    packages: Vec<&'a str>,
    rdp_source: Option<IpAddr>,
}

const BASE_HOST: &str = "basehost";
const BASE_USER: &str = "baseuser";
const BASE_PASSWORD: &str = "basepassword";
const BASE_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fn base_package(i: usize) -> String {
    format!("basepkg{i}")
}

fn baseline_spec(f: &Fields<'_>) -> BootstrapSpec {
    let mut spec = BootstrapSpec::new(BASE_HOST, BASE_USER)
        .with_packages((0..f.packages.len()).map(base_package));
    if f.password.is_some() {
        spec = spec.with_password(SecretString::from(BASE_PASSWORD));
    }
    if f.rdp_source.is_some() {
        spec = spec.with_rdp_source(BASE_IP);
    }
    spec
}

/// The spec's value standing where the baseline has `base`, if `base` is a baseline field.
fn mapped(f: &Fields<'_>, base: &str) -> Option<String> {
    match base {
        BASE_HOST => Some(f.hostname.to_owned()),
        BASE_USER => Some(f.username.to_owned()),
        BASE_PASSWORD => f.password.map(str::to_owned),
        "192.0.2.1" => f.rdp_source.map(|ip| ip.to_string()),
        _ => base
            .strip_prefix("basepkg")
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| f.packages.get(i))
            .map(|p| (*p).to_owned()),
    }
}

fn check_powershell(f: &Fields<'_>, script: &str) {
    let base = windows_powershell(&baseline_spec(f)).expect("baseline spec refused");
    assert_eq!(
        line_count(script),
        line_count(&base),
        "line count:\n{script}"
    );
    let toks = tokenize(script);
    let base_toks = tokenize(&base);
    assert_eq!(
        toks.len(),
        base_toks.len(),
        "token structure differs:\n{script}"
    );
    for (t, b) in toks.iter().zip(&base_toks) {
        match (t, b) {
            (Tok::Code(t), Tok::Code(b)) => assert_eq!(t, b, "code differs in:\n{script}"),
            (Tok::Literal(t), Tok::Literal(b)) => {
                assert!(
                    !t.contains(['\r', '\n']),
                    "line break in literal {t:?}:\n{script}"
                );
                let expected = mapped(f, b).unwrap_or_else(|| b.clone());
                assert_eq!(*t, expected, "literal differs in:\n{script}");
            }
            _ => panic!("token kinds differ ({t:?} vs {b:?}) in:\n{script}"),
        }
    }
}

thread_local! {
    /// Baseline cloud-configs by (package count, RDP source present): hashing is slow.
    static BASE_CONFIG: RefCell<HashMap<(usize, bool), Value>> = RefCell::new(HashMap::new());
}

/// Compares a cloud-config tree with the baseline's, leaf by leaf.
fn same_tree(f: &Fields<'_>, path: &str, v: &Value, b: &Value) {
    match (v, b) {
        (Value::Object(v), Value::Object(b)) => {
            assert_eq!(
                v.keys().collect::<Vec<_>>(),
                b.keys().collect::<Vec<_>>(),
                "keys at {path}"
            );
            for (k, vv) in v {
                if k == "hashed_passwd" {
                    continue;
                }
                same_tree(f, &format!("{path}.{k}"), vv, &b[k]);
            }
        }
        (Value::Array(v), Value::Array(b)) => {
            assert_eq!(v.len(), b.len(), "length at {path}");
            for (i, (vv, bb)) in v.iter().zip(b).enumerate() {
                same_tree(f, &format!("{path}[{i}]"), vv, bb);
            }
        }
        (Value::String(v), Value::String(b)) => {
            let expected = mapped(f, b).unwrap_or_else(|| b.clone());
            assert_eq!(*v, expected, "string at {path}");
        }
        _ => assert_eq!(v, b, "value at {path}"),
    }
}

fn masked(config: &str, hash: &str) -> String {
    config.replace(hash, "<HASH>")
}

fn hash_of(body: &Value) -> &str {
    body["users"][1]["hashed_passwd"]
        .as_str()
        .expect("users[1].hashed_passwd is not a string")
}

fn check_cloud_config(f: &Fields<'_>, spec: &BootstrapSpec, config: &str) {
    let password = f.password.expect("cloud-config without a password");
    let body = config
        .strip_prefix("#cloud-config\n")
        .expect("no #cloud-config header");
    let body: Value = serde_json::from_str(body).expect("cloud-config body is not JSON");
    let key = (f.packages.len(), f.rdp_source.is_some());
    BASE_CONFIG.with(|cache| {
        let mut cache = cache.borrow_mut();
        let base = cache.entry(key).or_insert_with(|| {
            let text = ubuntu_cloud_config(&baseline_spec(f)).expect("baseline refused");
            serde_json::from_str(text.strip_prefix("#cloud-config\n").unwrap()).unwrap()
        });
        same_tree(f, "$", &body, base);
    });

    let hash = hash_of(&body);
    assert!(
        hash.starts_with("$6$"),
        "not a SHA-512 crypt hash: {hash:?}"
    );
    assert!(
        sha_crypt::sha512_check(password, hash).is_ok(),
        "hash does not verify the password"
    );
    if password.len() >= 6 {
        assert!(!hash.contains(password), "password inside its hash");
    }
    let text = masked(config, hash);
    if text.contains(password) {
        // Allowed only where it is template text (or another field) independent of the
        // password: the same spec with another password must give the same text.
        let mut other = spec.clone();
        other.password = Some(SecretString::from("Zq9-other-sentinel"));
        let other = ubuntu_cloud_config(&other).expect("other password refused");
        let other_body: Value =
            serde_json::from_str(other.strip_prefix("#cloud-config\n").unwrap()).unwrap();
        assert_eq!(
            masked(&other, hash_of(&other_body)),
            text,
            "cloud-config text depends on the password"
        );
    }
}

fn clip(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xff);
    let control = Control::parse(parts.next().unwrap_or(&[]));
    let mut texts = Vec::new();
    for p in parts {
        let Ok(t) = std::str::from_utf8(p) else {
            return;
        };
        texts.push(t);
    }
    if texts.len() < 3 {
        return;
    }
    let fields = Fields {
        hostname: texts[0],
        username: texts[1],
        password: control.has_password.then(|| clip(texts[2], MAX_PASSWORD)),
        packages: texts[3..].to_vec(),
        rdp_source: control.rdp_source,
    };
    let mut spec = BootstrapSpec::new(fields.hostname, fields.username)
        .with_packages(fields.packages.iter().copied());
    if let Some(pw) = fields.password {
        spec = spec.with_password(SecretString::from(pw));
    }
    if let Some(ip) = fields.rdp_source {
        spec = spec.with_rdp_source(ip);
    }

    let windows = windows_powershell(&spec);
    if let Ok(script) = &windows {
        check_powershell(&fields, script);
    }
    // Ubuntu needs what Windows needs plus a password.
    if windows.is_err() || fields.password.is_none() {
        assert!(ubuntu_cloud_config(&spec).is_err());
        return;
    }
    let config = ubuntu_cloud_config(&spec).expect("accepted for Windows, refused for Ubuntu");
    check_cloud_config(&fields, &spec, &config);
});
