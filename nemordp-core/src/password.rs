//! Per-machine random passwords from the operating system's CSPRNG.
//!
//! Every password has all four character classes (so it meets Windows complexity rules and
//! Contabo's secret rule), avoids look-alike characters a customer would mistype, and uses
//! only symbols that are inert in PowerShell single-quoted strings, POSIX shells, YAML and
//! `.rdp` files.

use rand::{TryRngCore, rngs::OsRng};
use secrecy::SecretString;

use crate::error::{Error, Result};

const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
const DIGITS: &[u8] = b"23456789";
/// Symbols that need no escaping anywhere we put a password.
const SYMBOLS: &[u8] = b"-_.+=@~";

/// The shortest password [`generate_password`] will make.
pub const MIN_PASSWORD_LEN: usize = 16;

/// The default length.
pub const DEFAULT_PASSWORD_LEN: usize = 20;

fn classes(p: &[u8]) -> [bool; 4] {
    [
        p.iter().any(|b| UPPER.contains(b)),
        p.iter().any(|b| LOWER.contains(b)),
        p.iter().any(|b| DIGITS.contains(b)),
        p.iter().any(|b| SYMBOLS.contains(b)),
    ]
}

/// Contabo's password-secret rule (from its API prose): upper and lower case, and either one
/// digit with two of its specials `!@#$^&*?_~`, or three digits with one special. Only `_`,
/// `@` and `~` of our symbols are on Contabo's list.
fn meets_contabo_secret_rule(p: &[u8]) -> bool {
    let digits = p.iter().filter(|b| b.is_ascii_digit()).count();
    let specials = p.iter().filter(|b| b"!@#$^&*?_~".contains(b)).count();
    (digits >= 1 && specials >= 2) || (digits >= 3 && specials >= 1)
}

/// True if `password` could have come from [`generate_password`]: long enough, only allowed
/// characters, all four classes, Contabo's digit/special mix, and not containing `username`
/// (Windows refuses those).
pub fn is_acceptable_password(password: &str, username: &str) -> bool {
    let p = password.as_bytes();
    let alphabet = |b: &u8| {
        UPPER.contains(b) || LOWER.contains(b) || DIGITS.contains(b) || SYMBOLS.contains(b)
    };
    p.len() >= MIN_PASSWORD_LEN
        && p.iter().all(alphabet)
        && classes(p).iter().all(|c| *c)
        && meets_contabo_secret_rule(p)
        && (username.len() < 3
            || !password
                .to_ascii_lowercase()
                .contains(&username.to_ascii_lowercase()))
}

/// A fresh random password of `len` characters for `username`.
///
/// Rejection sampling keeps the result uniform over acceptable passwords.
pub fn generate_password(len: usize, username: &str) -> Result<SecretString> {
    if len < MIN_PASSWORD_LEN {
        return Err(Error::invalid_input(format!(
            "passwords must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    let alphabet: Vec<u8> = [UPPER, LOWER, DIGITS, SYMBOLS].concat();
    let n = u32::try_from(alphabet.len()).unwrap_or(u32::MAX);
    // Largest multiple of n below 2^32, to draw without modulo bias.
    let zone = u32::MAX - (u32::MAX % n);
    let mut rng = OsRng;
    loop {
        let mut out = String::with_capacity(len);
        while out.len() < len {
            let v = rng
                .try_next_u32()
                .map_err(|e| Error::unavailable(format!("operating system RNG failed: {e}")))?;
            if v < zone {
                out.push(char::from(alphabet[(v % n) as usize]));
            }
        }
        if is_acceptable_password(&out, username) {
            return Ok(SecretString::from(out));
        }
    }
}

/// Generates a default-length password; see [`generate_password`].
pub fn new_password(username: &str) -> Result<SecretString> {
    generate_password(DEFAULT_PASSWORD_LEN, username)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashSet;

    #[test]
    fn passwords_are_strong_unique_and_inert() {
        let mut seen = HashSet::new();
        for _ in 0..500 {
            let p = new_password("Administrator").unwrap();
            let text = p.expose_secret();
            assert_eq!(text.len(), DEFAULT_PASSWORD_LEN);
            assert!(is_acceptable_password(text, "Administrator"), "{text}");
            assert!(!text.contains([
                '\'', '"', '`', '$', ';', '&', '|', '<', '>', '%', '!', '#', ' ', ':', '\\', ','
            ]));
            assert!(seen.insert(text.to_owned()), "duplicate password");
        }
        assert!(generate_password(12, "x").is_err());
        assert!(!is_acceptable_password(
            "Administrator-2345abcdX",
            "administrator"
        ));
        assert!(!is_acceptable_password("short-A1a", ""));
        // all four classes, but none of Contabo's specials
        assert!(!is_acceptable_password("Abcdefgh-2345.xyzWQ+", ""));
        assert!(is_acceptable_password("Abcdefgh_2345@xyzWQ+", ""));
        let p = new_password("u").unwrap();
        assert!(
            !format!("{p:?}").contains(p.expose_secret()),
            "Debug leaks the password"
        );
    }

    #[test]
    fn every_character_is_used() {
        let mut used = HashSet::new();
        for _ in 0..400 {
            used.extend(new_password("").unwrap().expose_secret().bytes());
        }
        assert_eq!(
            used.len(),
            UPPER.len() + LOWER.len() + DIGITS.len() + SYMBOLS.len()
        );
    }
}
