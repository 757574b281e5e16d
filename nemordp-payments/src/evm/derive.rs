//! Receiving addresses from the merchant's extended public key: BIP32 public derivation
//! (the `bitcoin` crate) of `0/index` under the account key, then the Ethereum address
//! (keccak-256 of the uncompressed key, last 20 bytes; `alloy-primitives`). No private key is
//! ever needed or accepted.

use std::{fmt, str::FromStr};

use alloy_primitives::Address;
use bitcoin::{
    bip32::{ChildNumber, Xpub},
    secp256k1::{Secp256k1, VerifyOnly},
};

use nemordp_core::{Error, Result};

/// The highest non-hardened child index (BIP32: indexes ≥ 2³¹ are hardened).
pub const MAX_INDEX: u64 = (1 << 31) - 1;

/// The merchant's account-level extended public key (for the usual wallets, the key at
/// `m/44'/60'/0'`); request `i` is paid to the address at `0/i` below it, the same address a
/// wallet restored from the seed shows as account `i` of `m/44'/60'/0'/0/i`.
#[derive(Clone)]
pub struct AddressDeriver {
    xpub: Xpub,
    secp: Secp256k1<VerifyOnly>,
}

impl fmt::Debug for AddressDeriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressDeriver")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl AddressDeriver {
    /// Parses an `xpub…`/`tpub…` string. Private keys (`xprv…`, `tprv…`) are refused.
    pub fn from_xpub(text: &str) -> Result<Self> {
        let text = text.trim();
        if text.starts_with("xprv") || text.starts_with("tprv") {
            return Err(Error::invalid_config(
                "EVM_XPUB holds an extended PRIVATE key; give the extended public key \
                 (xpub…) instead and keep the private key offline",
            ));
        }
        let xpub = Xpub::from_str(text).map_err(|e| {
            Error::invalid_config(format!("EVM_XPUB is not an extended public key: {e}"))
        })?;
        Ok(Self {
            xpub,
            secp: Secp256k1::verification_only(),
        })
    }

    /// The key's fingerprint, hex: names the derivation scope in the store.
    pub fn fingerprint(&self) -> String {
        self.xpub.fingerprint().to_string()
    }

    /// The address of request `index` (`0/index` below the account key).
    pub fn address(&self, index: u64) -> Result<Address> {
        let child = u32::try_from(index)
            .ok()
            .filter(|i| u64::from(*i) <= MAX_INDEX)
            .and_then(|i| ChildNumber::from_normal_idx(i).ok())
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "derivation index {index} is beyond the non-hardened range"
                ))
            })?;
        let path = [ChildNumber::Normal { index: 0 }, child];
        let key = self
            .xpub
            .derive_pub(&self.secp, &path)
            .map_err(|e| Error::invalid_input(format!("cannot derive index {index}: {e}")))?;
        let uncompressed = key.public_key.serialize_uncompressed();
        Ok(Address::from_raw_public_key(&uncompressed[1..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::{NetworkKind, bip32::Xpriv, secp256k1::Secp256k1};

    /// BIP39 seed of anvil's default mnemonic "test test … junk" (PBKDF2-HMAC-SHA512, 2048
    /// rounds, salt "mnemonic").
    const ANVIL_SEED: &str = "9dfc3c64c2f8bede1533b6a79f8570e5943e0b8fd1cf77107adf7b72cef42185d564a3aee24cab43f80e3c4538087d70fc824eabbad596a23c97b6ee8322ccc0";

    /// The account xpub at m/44'/60'/0' of anvil's mnemonic, computed by the `bitcoin`
    /// crate's private derivation (test only).
    fn anvil_account_xpub() -> String {
        let secp = Secp256k1::new();
        let seed = hex::decode(ANVIL_SEED).unwrap();
        let master = Xpriv::new_master(NetworkKind::Main, &seed).unwrap();
        let path = [
            ChildNumber::from_hardened_idx(44).unwrap(),
            ChildNumber::from_hardened_idx(60).unwrap(),
            ChildNumber::from_hardened_idx(0).unwrap(),
        ];
        let account = master.derive_priv(&secp, &path).unwrap();
        Xpub::from_priv(&secp, &account).to_string()
    }

    #[test]
    fn public_derivation_gives_anvils_well_known_accounts() {
        let xpub = anvil_account_xpub();
        assert!(xpub.starts_with("xpub"));
        let d = AddressDeriver::from_xpub(&xpub).unwrap();
        let expected = [
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
            "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
            "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
        ];
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(d.address(i as u64).unwrap().to_checksum(None), *want);
        }
    }

    #[test]
    fn refuses_private_keys_garbage_and_hardened_indexes() {
        let secp = Secp256k1::new();
        let seed = hex::decode(ANVIL_SEED).unwrap();
        let xprv = Xpriv::new_master(NetworkKind::Main, &seed)
            .unwrap()
            .to_string();
        let e = AddressDeriver::from_xpub(&xprv).unwrap_err();
        assert!(e.message().contains("PRIVATE"), "{e}");
        assert!(AddressDeriver::from_xpub("xpub123").is_err());
        let d = AddressDeriver::from_xpub(&anvil_account_xpub()).unwrap();
        assert!(d.address(MAX_INDEX).is_ok());
        assert!(d.address(MAX_INDEX + 1).is_err());
        drop(secp);
    }
}
