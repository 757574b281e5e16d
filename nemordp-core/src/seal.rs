//! Credentials at rest: XChaCha20-Poly1305 from RustCrypto with random 192-bit nonces, the
//! order id and field name bound as associated data, and key ids so keys can be rotated.
//!
//! Blob layout (version 1): `0x01 ‖ key-id length (1 byte) ‖ key id ‖ nonce (24) ‖ ciphertext ‖ tag (16)`.
//! The associated data is `"nemordp/v1" ‖ 0x00 ‖ order id (16 bytes) ‖ field`, so a blob
//! copied to another order or field does not open.
//!
//! ```
//! use nemordp_core::{OrderId, seal::Sealer};
//! use secrecy::{ExposeSecret, SecretString};
//!
//! let sealer = Sealer::new("k1", [7u8; 32]).unwrap();
//! let order = OrderId::new();
//! let blob = sealer.seal(order, "password", &SecretString::from("hunter2hunter2")).unwrap();
//! assert_eq!(sealer.open(order, "password", &blob).unwrap().expose_secret(), "hunter2hunter2");
//! assert!(sealer.open(OrderId::new(), "password", &blob).is_err());
//! ```

use std::{collections::BTreeMap, fmt};

use chacha20poly1305::{
    XChaCha20Poly1305, XNonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use secrecy::{ExposeSecret, SecretBox, SecretString};

use crate::{
    error::{Error, ErrorKind, Result},
    ids::OrderId,
};

const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_PREFIX: &[u8] = b"nemordp/v1\0";

/// Environment variable read by [`Sealer::from_env`]: comma-separated `key_id:hex32` pairs,
/// the first being the key new blobs are sealed with.
pub const SEAL_KEYS_ENV: &str = "NEMORDP_SEAL_KEYS";

/// A keyring that seals with its current key and opens with any key it holds.
pub struct Sealer {
    current: String,
    keys: BTreeMap<String, SecretBox<[u8; 32]>>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("current", &self.current)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn check_key_id(id: &str) -> Result<()> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::invalid_config(format!(
            "key id {id:?} must be 1-64 characters of A-Z a-z 0-9 - _"
        )));
    }
    Ok(())
}

impl Sealer {
    /// A keyring with one key, used for sealing.
    pub fn new(key_id: impl Into<String>, key: [u8; 32]) -> Result<Self> {
        let current = key_id.into();
        check_key_id(&current)?;
        let mut keys = BTreeMap::new();
        keys.insert(current.clone(), SecretBox::new(Box::new(key)));
        Ok(Self { current, keys })
    }

    /// A keyring with a fresh random key (for demos and tests: blobs die with the process).
    pub fn ephemeral() -> Self {
        let key = XChaCha20Poly1305::generate_key(&mut OsRng);
        Self::new("ephemeral", key.into()).unwrap_or_else(|_| unreachable!("valid key id"))
    }

    /// Adds an older key that can still open blobs (rotation: seal with the new, open both).
    pub fn with_old_key(mut self, key_id: impl Into<String>, key: [u8; 32]) -> Result<Self> {
        let id = key_id.into();
        check_key_id(&id)?;
        if self.keys.contains_key(&id) {
            return Err(Error::invalid_config(format!("duplicate key id {id:?}")));
        }
        self.keys.insert(id, SecretBox::new(Box::new(key)));
        Ok(self)
    }

    /// Parses `key_id:hex,key_id:hex,…` (64 hex digits per key); the first key seals.
    pub fn from_spec(spec: &SecretString) -> Result<Self> {
        let mut sealer: Option<Self> = None;
        for part in spec
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (id, hex_key) = part.split_once(':').ok_or_else(|| {
                Error::invalid_config("seal key must look like key_id:64-hex-digits")
            })?;
            let mut key = [0u8; 32];
            hex::decode_to_slice(hex_key.trim(), &mut key).map_err(|_| {
                Error::invalid_config(format!("seal key {id:?} must be 64 hex digits"))
            })?;
            sealer = Some(match sealer {
                None => Self::new(id, key)?,
                Some(s) => s.with_old_key(id, key)?,
            });
        }
        sealer.ok_or_else(|| Error::invalid_config("no seal key given"))
    }

    /// Reads [`SEAL_KEYS_ENV`].
    pub fn from_env() -> Result<Self> {
        let spec = std::env::var(SEAL_KEYS_ENV)
            .map_err(|_| Error::invalid_config(format!("{SEAL_KEYS_ENV} is not set")))?;
        Self::from_spec(&SecretString::from(spec))
    }

    /// The id of the key new blobs are sealed with.
    pub fn current_key_id(&self) -> &str {
        &self.current
    }

    fn cipher(&self, key_id: &str) -> Result<XChaCha20Poly1305> {
        let key = self.keys.get(key_id).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("no seal key with id {key_id:?}"),
            )
        })?;
        Ok(XChaCha20Poly1305::new(key.expose_secret().into()))
    }

    fn aad(order_id: OrderId, field: &str) -> Vec<u8> {
        let mut aad = Vec::with_capacity(AAD_PREFIX.len() + 16 + field.len());
        aad.extend_from_slice(AAD_PREFIX);
        aad.extend_from_slice(order_id.as_uuid().as_bytes());
        aad.extend_from_slice(field.as_bytes());
        aad
    }

    /// Seals `plaintext` for `order_id`'s `field` with the current key.
    pub fn seal(
        &self,
        order_id: OrderId,
        field: &str,
        plaintext: &SecretString,
    ) -> Result<Vec<u8>> {
        let cipher = self.cipher(&self.current)?;
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = Self::aad(order_id, field);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.expose_secret().as_bytes(),
                    aad: &aad,
                },
            )
            .map_err(|_| Error::new(ErrorKind::Unexpected, "sealing failed"))?;
        let id = self.current.as_bytes();
        let mut blob = Vec::with_capacity(2 + id.len() + NONCE_LEN + sealed.len());
        blob.push(VERSION);
        blob.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
        blob.extend_from_slice(id);
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(blob)
    }

    /// The key id a blob was sealed with, without opening it.
    pub fn key_id_of(blob: &[u8]) -> Result<&str> {
        Ok(Self::split(blob)?.0)
    }

    fn split(blob: &[u8]) -> Result<(&str, &[u8], &[u8])> {
        let bad = |why: &str| Error::invalid_input(format!("sealed blob is malformed: {why}"));
        let (&version, rest) = blob.split_first().ok_or_else(|| bad("empty"))?;
        if version != VERSION {
            return Err(bad(&format!("unknown version {version}")));
        }
        let (&id_len, rest) = rest.split_first().ok_or_else(|| bad("truncated"))?;
        let id_len = usize::from(id_len);
        if rest.len() < id_len + NONCE_LEN + TAG_LEN {
            return Err(bad("truncated"));
        }
        let (id, rest) = rest.split_at(id_len);
        let id = std::str::from_utf8(id).map_err(|_| bad("key id is not UTF-8"))?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        Ok((id, nonce, sealed))
    }

    /// Opens a blob sealed for `order_id`'s `field`. A wrong order, field, key or any changed
    /// byte is an `InvalidInput` error; nothing about the plaintext leaks.
    pub fn open(&self, order_id: OrderId, field: &str, blob: &[u8]) -> Result<SecretString> {
        let (key_id, nonce, sealed) = Self::split(blob)?;
        let cipher = self.cipher(key_id)?;
        let aad = Self::aad(order_id, field);
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                Error::invalid_input(
                    "sealed blob does not open (wrong key, order or field, or tampered)",
                )
            })?;
        let text = String::from_utf8(plain)
            .map_err(|_| Error::invalid_input("sealed secret is not UTF-8"))?;
        Ok(SecretString::from(text))
    }

    /// Re-seals a blob under the current key (for background key rotation).
    pub fn reseal(&self, order_id: OrderId, field: &str, blob: &[u8]) -> Result<Vec<u8>> {
        let plain = self.open(order_id, field, blob)?;
        self.seal(order_id, field, &plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_binds_and_rotates() {
        let old = Sealer::new("k1", [1; 32]).unwrap();
        let order = OrderId::new();
        let secret = SecretString::from("Pa55-word_with.enough");
        let blob = old.seal(order, "password", &secret).unwrap();
        assert!(
            !blob.windows(8).any(|w| w == b"Pa55-wor"),
            "plaintext in blob"
        );
        assert_eq!(Sealer::key_id_of(&blob).unwrap(), "k1");
        // Two seals of the same secret differ (random nonces).
        assert_ne!(blob, old.seal(order, "password", &secret).unwrap());
        // Bound to order and field.
        assert!(old.open(order, "provider_password", &blob).is_err());
        assert!(old.open(OrderId::new(), "password", &blob).is_err());
        // Every single-byte change is detected.
        for i in 0..blob.len() {
            let mut t = blob.clone();
            t[i] ^= 0x01;
            assert!(
                old.open(order, "password", &t).is_err(),
                "byte {i} flip opened"
            );
        }
        // Rotation: new key seals, old key still opens old blobs.
        let rotated = Sealer::new("k2", [2; 32])
            .unwrap()
            .with_old_key("k1", [1; 32])
            .unwrap();
        assert_eq!(
            rotated
                .open(order, "password", &blob)
                .unwrap()
                .expose_secret(),
            secret.expose_secret()
        );
        let resealed = rotated.reseal(order, "password", &blob).unwrap();
        assert_eq!(Sealer::key_id_of(&resealed).unwrap(), "k2");
        assert!(
            old.open(order, "password", &resealed).is_err(),
            "old ring lacks k2"
        );
    }

    #[test]
    fn parses_key_specs_and_hides_keys() {
        let spec = SecretString::from(format!("new:{}, old:{}", "ab".repeat(32), "cd".repeat(32)));
        let s = Sealer::from_spec(&spec).unwrap();
        assert_eq!(s.current_key_id(), "new");
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("abab") && !dbg.contains("171"), "{dbg}");
        for bad in [
            "",
            "k1",
            "k1:zz",
            "k1:abcd",
            "bad id:00",
            &format!("a:{0},a:{0}", "00".repeat(32)),
        ] {
            assert!(
                Sealer::from_spec(&SecretString::from(bad.to_owned())).is_err(),
                "{bad:?} accepted"
            );
        }
        assert!(Sealer::open(&s, OrderId::new(), "p", &[]).is_err());
        assert!(Sealer::open(&s, OrderId::new(), "p", &[1, 200, 0]).is_err());
    }
}
