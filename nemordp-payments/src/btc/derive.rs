//! Receiving addresses from the merchant's extended public key: BIP32 public derivation on the
//! receive chain (`<xpub>/0/i`), native segwit P2WPKH (BIP84). No private key is involved.

use std::{fmt, str::FromStr};

use bitcoin::{
    Address, Network, NetworkKind, ScriptBuf, base58,
    bip32::{ChildNumber, Xpub},
    secp256k1::{Secp256k1, VerifyOnly},
};

use nemordp_core::{Error, Result};

/// BIP32 version bytes of the SLIP-132 segwit variants that wallets export for BIP84 accounts.
const ZPUB: [u8; 4] = [0x04, 0xb2, 0x47, 0x46];
const VPUB: [u8; 4] = [0x04, 0x5f, 0x1c, 0xf6];
/// Plain `xpub` / `tpub` version bytes.
const XPUB: [u8; 4] = [0x04, 0x88, 0xb2, 0x1e];
const TPUB: [u8; 4] = [0x04, 0x35, 0x87, 0xcf];

/// Largest index derived: BIP32 normal (non-hardened) children are `0 … 2³¹−1`.
pub(crate) const MAX_INDEX: u64 = (1 << 31) - 1;

/// The merchant's account key (the BIP84 account level, `m/84'/0'/0'`), deriving `0/i`.
#[derive(Clone)]
pub struct AddressDeriver {
    xpub: Xpub,
    /// `xpub/0`, derived once.
    receive: Xpub,
    network: Network,
    secp: Secp256k1<VerifyOnly>,
}

impl fmt::Debug for AddressDeriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // An xpub is not a spending secret but it reveals every address of the wallet, so
        // only its fingerprint is printed.
        f.debug_struct("AddressDeriver")
            .field("fingerprint", &self.xpub.fingerprint().to_string())
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl AddressDeriver {
    /// Parses an `xpub`/`tpub` (or the SLIP-132 `zpub`/`vpub` spelling of the same key) for
    /// `network`. A mainnet key for a test network, or the reverse, is an `InvalidConfig`
    /// error; so is a private key.
    pub fn new(extended_public_key: &str, network: Network) -> Result<Self> {
        let text = extended_public_key.trim();
        let bad = |why: String| Error::invalid_config(format!("BTC extended public key: {why}"));
        if text.starts_with("xprv")
            || text.starts_with("tprv")
            || text.starts_with("zprv")
            || text.starts_with("vprv")
        {
            return Err(bad(
                "this is a PRIVATE key; give the account's public key (xpub/zpub) instead".into(),
            ));
        }
        let mut data =
            base58::decode_check(text).map_err(|e| bad(format!("not base58check: {e}")))?;
        if data.len() != 78 {
            return Err(bad(format!("{} bytes, expected 78", data.len())));
        }
        if data.starts_with(&ZPUB) {
            data[..4].copy_from_slice(&XPUB);
        } else if data.starts_with(&VPUB) {
            data[..4].copy_from_slice(&TPUB);
        }
        let xpub = Xpub::decode(&data).map_err(|e| bad(e.to_string()))?;
        if xpub.network != NetworkKind::from(network) {
            return Err(bad(format!(
                "a {} key cannot derive {network} addresses",
                if xpub.network.is_mainnet() {
                    "mainnet"
                } else {
                    "testnet"
                }
            )));
        }
        let secp = Secp256k1::verification_only();
        let receive = xpub
            .derive_pub(&secp, &[ChildNumber::Normal { index: 0 }])
            .map_err(|e| bad(format!("cannot derive the receive chain: {e}")))?;
        Ok(Self {
            xpub,
            receive,
            network,
            secp,
        })
    }

    /// The network addresses are derived for.
    pub fn network(&self) -> Network {
        self.network
    }

    /// A stable name for this key's receive chain, used as the index-reservation scope:
    /// `btc/<network>/<key identifier hex>/0`.
    pub fn scope(&self) -> String {
        format!(
            "btc/{}/{}/0",
            self.network.to_core_arg(),
            self.xpub.identifier()
        )
    }

    /// The P2WPKH address at receive index `index` (`<xpub>/0/index`).
    pub fn address(&self, index: u64) -> Result<Address> {
        let child = u32::try_from(index)
            .ok()
            .filter(|i| u64::from(*i) <= MAX_INDEX)
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "derivation index {index} is beyond the BIP32 non-hardened range"
                ))
            })?;
        let path =
            [ChildNumber::from_normal_idx(child)
                .map_err(|e| Error::invalid_input(e.to_string()))?];
        let key = self
            .receive
            .derive_pub(&self.secp, &path)
            .map_err(|e| Error::invalid_input(format!("derivation of 0/{index} failed: {e}")))?;
        Ok(Address::p2wpkh(&key.to_pub(), self.network))
    }

    /// Parses `text` as an address of this deriver's network (checksum and network checked);
    /// anything else is `InvalidInput`. Used before an address goes into a URL path.
    pub fn parse_address(&self, text: &str) -> Result<Address> {
        Address::from_str(text)
            .map_err(|e| Error::invalid_input(format!("not a bitcoin address {text:?}: {e}")))?
            .require_network(self.network)
            .map_err(|e| Error::invalid_input(format!("address {text:?}: {e}")))
    }
}

/// The output script an address locks to, as lowercase hex (Esplora's `scriptpubkey`).
pub(crate) fn script_hex(address: &Address) -> String {
    let script: ScriptBuf = address.script_pubkey();
    hex::encode(script.as_bytes())
}

/// Parses a network name as Bitcoin Core spells it (`main`, `test`, `testnet4`, `signet`,
/// `regtest`) or as the `bitcoin` crate does (`bitcoin`, `testnet`).
pub fn parse_network(name: &str) -> Result<Network> {
    let name = name.trim().to_ascii_lowercase();
    Network::from_core_arg(&name)
        .or_else(|_| Network::from_str(&name))
        .map_err(|_| {
            Error::invalid_config(format!(
                "unknown bitcoin network {name:?} (main, test, testnet4, signet, regtest)"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    // BIP84 test vector: mnemonic "abandon abandon … about", account m/84'/0'/0'.
    const BIP84_ZPUB: &str = "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkgDKf31mGDtKsAYz2oz2AGutZYs";

    #[test]
    fn bip84_vectors() {
        let d = AddressDeriver::new(BIP84_ZPUB, Network::Bitcoin).unwrap();
        assert_eq!(
            d.address(0).unwrap().to_string(),
            "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
        );
        assert_eq!(
            d.address(1).unwrap().to_string(),
            "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
        );
        assert!(d.scope().starts_with("btc/main/"));
    }

    #[test]
    fn rejects_wrong_network_private_and_garbage() {
        assert_eq!(
            AddressDeriver::new(BIP84_ZPUB, Network::Testnet)
                .unwrap_err()
                .kind(),
            nemordp_core::ErrorKind::InvalidConfig
        );
        assert!(AddressDeriver::new("xprv9s21ZrQH143K", Network::Bitcoin).is_err());
        assert!(AddressDeriver::new("not a key", Network::Bitcoin).is_err());
        let d = AddressDeriver::new(BIP84_ZPUB, Network::Bitcoin).unwrap();
        assert!(d.address(MAX_INDEX + 1).is_err());
        assert!(
            d.parse_address("tb1qw508d6qejxtdg4y5r3zarvary0c5xw7kxpjzsx")
                .is_err()
        );
        assert!(d.parse_address("../../admin").is_err());
        assert!(
            d.parse_address("bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu")
                .is_ok()
        );
    }

    #[test]
    fn debug_hides_the_key() {
        let d = AddressDeriver::new(BIP84_ZPUB, Network::Bitcoin).unwrap();
        assert!(!format!("{d:?}").contains("zpub"));
        assert!(!format!("{d:?}").contains(&d.xpub.to_string()));
    }

    #[test]
    fn network_names() {
        assert_eq!(parse_network("main").unwrap(), Network::Bitcoin);
        assert_eq!(parse_network("bitcoin").unwrap(), Network::Bitcoin);
        assert_eq!(parse_network("signet").unwrap(), Network::Signet);
        assert_eq!(parse_network("regtest").unwrap(), Network::Regtest);
        assert!(parse_network("dogecoin").is_err());
    }
}
