//! Exact money: fiat in integer minor units (kobo, cents, …), crypto in base units (satoshi, wei,
//! USDT's 6-decimal unit), all as 256-bit unsigned integers so wei never overflows.
//!
//! There are no floats anywhere. Parsing is strict (`"5000.00"`, never `"5e3"` or `"5,000"`),
//! amounts of different assets cannot be added or compared, and conversions through a [`Rate`]
//! use [`rust_decimal`] with rounding that is never in the customer's disfavour by more than one
//! minor unit.

use std::{cmp::Ordering, fmt, str::FromStr};

use ruint::aliases::U256;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

macro_rules! currencies {
    ($($variant:ident $code:literal $exp:literal $name:literal;)*) => {
        /// A fiat currency from ISO 4217 with its minor-unit exponent.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum Currency {
            $(#[doc = $name] $variant,)*
        }

        impl Currency {
            /// Every supported currency.
            pub const ALL: &'static [Currency] = &[$(Currency::$variant,)*];

            /// The three-letter ISO 4217 code.
            pub const fn code(self) -> &'static str {
                match self { $(Currency::$variant => $code,)* }
            }

            /// Digits after the decimal point in the minor unit (2 for NGN kobo, 0 for JPY).
            pub const fn exponent(self) -> u8 {
                match self { $(Currency::$variant => $exp,)* }
            }

            fn from_code(code: &str) -> Option<Self> {
                match code { $($code => Some(Currency::$variant),)* _ => None }
            }
        }
    };
}

currencies! {
    Ngn "NGN" 2 "Nigerian naira (kobo)";
    Ghs "GHS" 2 "Ghanaian cedi (pesewa)";
    Zar "ZAR" 2 "South African rand (cent)";
    Kes "KES" 2 "Kenyan shilling (cent)";
    Egp "EGP" 2 "Egyptian pound (piastre)";
    Xof "XOF" 0 "West African CFA franc (no minor unit)";
    Usd "USD" 2 "US dollar (cent)";
    Eur "EUR" 2 "Euro (cent)";
    Gbp "GBP" 2 "Pound sterling (penny)";
    Cad "CAD" 2 "Canadian dollar (cent)";
    Jpy "JPY" 0 "Japanese yen (no minor unit)";
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Currency {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_code(s)
            .ok_or_else(|| Error::invalid_input(format!("unknown or unsupported currency {s:?}")))
    }
}

/// What an amount is denominated in: a fiat currency or a crypto asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Asset {
    /// A fiat currency.
    Fiat(Currency),
    /// Bitcoin; base unit satoshi (8 decimals).
    Btc,
    /// Ether; base unit wei (18 decimals).
    Eth,
    /// Tether USD on any chain (ERC-20 or TRC-20); 6 decimals on both.
    Usdt,
}

impl Asset {
    /// Decimal places between the display unit and the base unit.
    pub const fn decimals(self) -> u8 {
        match self {
            Self::Fiat(c) => c.exponent(),
            Self::Btc => 8,
            Self::Eth => 18,
            Self::Usdt => 6,
        }
    }

    /// The ticker or ISO code.
    pub const fn code(self) -> &'static str {
        match self {
            Self::Fiat(c) => c.code(),
            Self::Btc => "BTC",
            Self::Eth => "ETH",
            Self::Usdt => "USDT",
        }
    }

    /// The fiat currency, if this is one.
    pub const fn fiat(self) -> Option<Currency> {
        match self {
            Self::Fiat(c) => Some(c),
            _ => None,
        }
    }

    /// True for BTC, ETH and USDT.
    pub const fn is_crypto(self) -> bool {
        !matches!(self, Self::Fiat(_))
    }
}

impl From<Currency> for Asset {
    fn from(c: Currency) -> Self {
        Self::Fiat(c)
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Asset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "BTC" => Ok(Self::Btc),
            "ETH" => Ok(Self::Eth),
            "USDT" => Ok(Self::Usdt),
            other => Currency::from_str(other)
                .map(Self::Fiat)
                .map_err(|_| Error::invalid_input(format!("unknown asset {s:?}"))),
        }
    }
}

impl Serialize for Asset {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Asset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An exact, non-negative amount of one [`Asset`] in its smallest unit.
///
/// Serialises as the display string, e.g. `"5000.00 NGN"` or `"0.00033334 BTC"`, which is
/// lossless and strictly parsed back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    asset: Asset,
    units: U256,
}

impl Money {
    /// Zero of `asset`.
    pub const fn zero(asset: Asset) -> Self {
        Self {
            asset,
            units: U256::ZERO,
        }
    }

    /// An amount given in minor/base units (kobo, satoshi, wei…).
    pub fn from_minor(asset: impl Into<Asset>, units: impl Into<u128>) -> Self {
        Self {
            asset: asset.into(),
            units: U256::from(units.into()),
        }
    }

    /// An amount given in base units as a 256-bit integer (on-chain token values).
    pub fn from_minor_u256(asset: impl Into<Asset>, units: U256) -> Self {
        Self {
            asset: asset.into(),
            units,
        }
    }

    /// Parses a major-unit decimal string such as `"5000.00"` or `"0.5"` strictly: ASCII digits,
    /// at most one `.`, no sign, exponent, separator or whitespace, no leading zeros, and no more
    /// fractional digits than the asset has.
    pub fn parse_major(asset: impl Into<Asset>, text: &str) -> Result<Self> {
        let asset = asset.into();
        let decimals = usize::from(asset.decimals());
        let bad =
            |why: &str| Error::invalid_input(format!("invalid {asset} amount {text:?}: {why}"));
        let (int, frac) = match text.split_once('.') {
            Some((i, f)) => (i, Some(f)),
            None => (text, None),
        };
        if int.is_empty() || !int.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("expected digits before any decimal point"));
        }
        if int.len() > 1 && int.starts_with('0') {
            return Err(bad("leading zeros"));
        }
        let frac = match frac {
            None => "",
            Some("") => return Err(bad("nothing after the decimal point")),
            Some(f) if !f.bytes().all(|b| b.is_ascii_digit()) => {
                return Err(bad("expected digits after the decimal point"));
            }
            Some(f) if f.len() > decimals => {
                return Err(bad(&format!(
                    "{asset} has at most {decimals} decimal places"
                )));
            }
            Some(f) => f,
        };
        let mut digits = String::with_capacity(int.len() + decimals);
        digits.push_str(int);
        digits.push_str(frac);
        digits.extend(std::iter::repeat_n('0', decimals - frac.len()));
        let units = U256::from_str_radix(&digits, 10).map_err(|_| bad("too large"))?;
        Ok(Self { asset, units })
    }

    /// The asset.
    pub const fn asset(&self) -> Asset {
        self.asset
    }

    /// The amount in minor/base units.
    pub const fn minor_units(&self) -> U256 {
        self.units
    }

    /// The amount in minor units if it fits in a `u64` (fiat APIs such as Paystack take these).
    pub fn minor_u64(&self) -> Option<u64> {
        u64::try_from(self.units).ok()
    }

    /// True when the amount is zero.
    pub fn is_zero(&self) -> bool {
        self.units.is_zero()
    }

    fn same_asset(&self, other: &Self, op: &str) -> Result<()> {
        if self.asset == other.asset {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "cannot {op} {} and {}: different assets",
                self.asset, other.asset
            )))
        }
    }

    /// `self + other`; an error if the assets differ or the sum overflows.
    pub fn checked_add(&self, other: &Self) -> Result<Self> {
        self.same_asset(other, "add")?;
        let units = self
            .units
            .checked_add(other.units)
            .ok_or_else(|| Error::invalid_input("amount overflow"))?;
        Ok(Self { units, ..*self })
    }

    /// `self - other`; an error if the assets differ or the result would be negative.
    pub fn checked_sub(&self, other: &Self) -> Result<Self> {
        self.same_asset(other, "subtract")?;
        let units = self
            .units
            .checked_sub(other.units)
            .ok_or_else(|| Error::invalid_input(format!("{other} is more than {self}")))?;
        Ok(Self { units, ..*self })
    }

    /// `max(self - other, 0)`; an error only if the assets differ.
    pub fn saturating_sub(&self, other: &Self) -> Result<Self> {
        self.same_asset(other, "subtract")?;
        Ok(Self {
            units: self.units.saturating_sub(other.units),
            ..*self
        })
    }

    /// Compares two amounts of the same asset; an error if the assets differ.
    ///
    /// `Money` deliberately has no `PartialOrd`: `a < b` across assets would be silently false.
    pub fn try_cmp(&self, other: &Self) -> Result<Ordering> {
        self.same_asset(other, "compare")?;
        Ok(self.units.cmp(&other.units))
    }

    /// `self × (100 − percent) / 100`, rounded down: the least a payment may be under a
    /// tolerance such as "accept 0.5 % short for exchange withdrawal fees".
    pub fn less_percent(&self, percent: Decimal) -> Result<Self> {
        if percent.is_sign_negative() || percent > Decimal::ONE_HUNDRED {
            return Err(Error::invalid_input(format!(
                "tolerance {percent}% is outside 0..=100"
            )));
        }
        if percent.is_zero() {
            return Ok(*self);
        }
        // Basis points with 1e-6 resolution keep this in integers.
        let scaled = (percent * Decimal::from(1_000_000))
            .round_dp_with_strategy(0, RoundingStrategy::ToZero)
            .mantissa();
        let keep = U256::from(100_000_000_u128 - u128::try_from(scaled).unwrap_or(0));
        let units = self
            .units
            .checked_mul(keep)
            .ok_or_else(|| Error::invalid_input("amount overflow"))?
            / U256::from(100_000_000_u64);
        Ok(Self { units, ..*self })
    }

    /// The amount in major units as a [`Decimal`] (e.g. `5000.00` NGN). Fails for amounts beyond
    /// `Decimal`'s 96-bit range.
    pub fn to_decimal(&self) -> Result<Decimal> {
        let too_large = || Error::invalid_input(format!("{self} is too large for a decimal"));
        let mantissa = i128::try_from(self.units).map_err(|_| too_large())?;
        Decimal::try_from_i128_with_scale(mantissa, u32::from(self.asset.decimals()))
            .map_err(|_| too_large())
    }

    /// Builds an amount from a major-unit decimal, rounding to the asset's precision with
    /// `rounding`. Negative values are an error.
    pub fn from_decimal(
        asset: impl Into<Asset>,
        value: Decimal,
        rounding: Rounding,
    ) -> Result<Self> {
        let asset = asset.into();
        if value.is_sign_negative() && !value.is_zero() {
            return Err(Error::invalid_input(format!(
                "negative {asset} amount {value}"
            )));
        }
        let decimals = u32::from(asset.decimals());
        let rounded = value.round_dp_with_strategy(decimals, rounding.strategy());
        let mantissa = u128::try_from(rounded.mantissa())
            .map_err(|_| Error::invalid_input("negative amount"))?;
        let scale = rounded.scale();
        let units = U256::from(mantissa)
            .checked_mul(U256::from(10_u8).pow(U256::from(decimals.saturating_sub(scale))))
            .ok_or_else(|| Error::invalid_input("amount overflow"))?;
        Ok(Self { asset, units })
    }

    /// Converts through `rate` into `rate.quote` (if `self` is in `rate.base`) or `rate.base`
    /// (if `self` is in `rate.quote`), rounding with `rounding` at the target's precision.
    ///
    /// The arithmetic is exact (256-bit integers over the rate's decimal mantissa), so the
    /// only inexactness is the final rounding. To price an order in crypto use
    /// [`Rounding::Up`] (the customer pays at most one base unit more); to value a received
    /// payment in fiat use [`Rounding::Down`].
    pub fn convert(&self, rate: &Rate, rounding: Rounding) -> Result<Self> {
        let overflow = || Error::invalid_input("conversion overflow");
        let pow10 = |e: u32| U256::from(10_u8).pow(U256::from(e));
        let mantissa = U256::from(
            u128::try_from(rate.price.mantissa())
                .map_err(|_| Error::invalid_input("negative rate"))?,
        );
        let price_scale = pow10(rate.price.scale());
        let (target, num_factor, den_factor) = if self.asset == rate.base {
            // target = units × (mantissa / 10^scale)
            (rate.quote, mantissa, price_scale)
        } else if self.asset == rate.quote {
            // target = units / (mantissa / 10^scale)
            (rate.base, price_scale, mantissa)
        } else {
            return Err(Error::invalid_input(format!(
                "rate {}/{} cannot convert {}",
                rate.base, rate.quote, self.asset
            )));
        };
        let numerator = self
            .units
            .checked_mul(num_factor)
            .and_then(|n| n.checked_mul(pow10(u32::from(target.decimals()))))
            .ok_or_else(overflow)?;
        let denominator = den_factor
            .checked_mul(pow10(u32::from(self.asset.decimals())))
            .ok_or_else(overflow)?;
        if denominator.is_zero() {
            return Err(Error::invalid_input("zero rate"));
        }
        let (quotient, remainder) = numerator.div_rem(denominator);
        let units = match rounding {
            Rounding::Up if !remainder.is_zero() => quotient + U256::from(1_u8),
            _ => quotient,
        };
        Ok(Self {
            asset: target,
            units,
        })
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.units.to_string();
        let decimals = usize::from(self.asset.decimals());
        if decimals == 0 {
            return write!(f, "{digits} {}", self.asset);
        }
        let padded = if digits.len() <= decimals {
            format!("{}{digits}", "0".repeat(decimals + 1 - digits.len()))
        } else {
            digits
        };
        let (int, frac) = padded.split_at(padded.len() - decimals);
        write!(f, "{int}.{frac} {}", self.asset)
    }
}

impl FromStr for Money {
    type Err = Error;
    /// Parses `"<amount> <ASSET>"`, e.g. `"5000.00 NGN"`, with exactly one space.
    fn from_str(s: &str) -> Result<Self> {
        let (amount, code) = s.split_once(' ').ok_or_else(|| {
            Error::invalid_input(format!("expected \"<amount> <asset>\", got {s:?}"))
        })?;
        Self::parse_major(code.parse::<Asset>()?, amount)
    }
}

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// How to round when a conversion lands between two minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Towards zero.
    Down,
    /// Away from zero.
    Up,
}

impl Rounding {
    fn strategy(self) -> RoundingStrategy {
        match self {
            Self::Down => RoundingStrategy::ToZero,
            Self::Up => RoundingStrategy::AwayFromZero,
        }
    }
}

/// An exchange rate: one major unit of `base` is worth `price` major units of `quote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// The asset being priced (e.g. BTC).
    pub base: Asset,
    /// The asset the price is in (e.g. NGN).
    pub quote: Asset,
    /// Units of `quote` per unit of `base`; must be positive.
    pub price: Decimal,
}

impl Rate {
    /// A validated rate.
    pub fn new(base: impl Into<Asset>, quote: impl Into<Asset>, price: Decimal) -> Result<Self> {
        let (base, quote) = (base.into(), quote.into());
        if price <= Decimal::ZERO {
            return Err(Error::invalid_input(format!(
                "rate {base}/{quote} must be positive, got {price}"
            )));
        }
        if base == quote {
            return Err(Error::invalid_input(format!("rate from {base} to itself")));
        }
        Ok(Self { base, quote, price })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ngn(s: &str) -> Money {
        Money::parse_major(Currency::Ngn, s).unwrap()
    }

    #[test]
    fn parses_strictly() {
        assert_eq!(ngn("5000").minor_u64(), Some(500_000));
        assert_eq!(ngn("5000.5").minor_u64(), Some(500_050));
        assert_eq!(ngn("0.01").minor_u64(), Some(1));
        for bad in [
            "", ".5", "5.", "05", "-1", "+1", "1e3", "1,000", " 1", "1 ", "1.001", "0x10", "1.2.3",
            "NaN",
        ] {
            assert!(
                Money::parse_major(Currency::Ngn, bad).is_err(),
                "{bad:?} parsed"
            );
        }
        let wei = Money::parse_major(Asset::Eth, "1.000000000000000001").unwrap();
        assert_eq!(
            wei.minor_units(),
            U256::from(1_000_000_000_000_000_001_u128)
        );
        assert!(
            Money::parse_major(Asset::Usdt, "1.0000001").is_err(),
            "USDT has 6 decimals"
        );
        let huge = "9".repeat(80);
        assert!(Money::parse_major(Asset::Eth, &huge).is_err());
    }

    #[test]
    fn displays_and_round_trips() {
        assert_eq!(ngn("5000").to_string(), "5000.00 NGN");
        assert_eq!(
            Money::from_minor(Asset::Btc, 1_u64).to_string(),
            "0.00000001 BTC"
        );
        assert_eq!(
            Money::from_minor(Currency::Jpy, 1500_u64).to_string(),
            "1500 JPY"
        );
        let m: Money = "12.345678 USDT".parse().unwrap();
        assert_eq!(m.minor_units(), U256::from(12_345_678_u64));
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, "\"12.345678 USDT\"");
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
        assert!(serde_json::from_str::<Money>("\"12.3 usdt\"").is_err());
        assert!(
            serde_json::from_str::<Money>("12.3").is_err(),
            "numbers are refused"
        );
    }

    #[test]
    fn refuses_cross_asset_arithmetic() {
        let usd = Money::parse_major(Currency::Usd, "1").unwrap();
        let err = ngn("1").checked_add(&usd).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(ngn("1").try_cmp(&usd).is_err());
        assert!(ngn("1").checked_sub(&ngn("2")).is_err());
        assert_eq!(
            ngn("1").saturating_sub(&ngn("2")).unwrap(),
            Money::zero(Currency::Ngn.into())
        );
    }

    #[test]
    fn converts_price_to_crypto_rounding_up() {
        // 50,000 NGN at 150,000,000 NGN/BTC = 0.000333333… BTC → 33,334 sat (never 33,333).
        let rate = Rate::new(Asset::Btc, Currency::Ngn, Decimal::from(150_000_000)).unwrap();
        let due = ngn("50000").convert(&rate, Rounding::Up).unwrap();
        assert_eq!(due.asset(), Asset::Btc);
        assert_eq!(due.minor_units(), U256::from(33_334_u64));
        // And back, valued down: 33,334 sat = 50,001.00 NGN.
        let back = due.convert(&rate, Rounding::Down).unwrap();
        assert_eq!(back, ngn("50001"));
        let eth = Rate::new(Asset::Eth, Currency::Usd, Decimal::new(300_000, 2)).unwrap();
        let wei = Money::parse_major(Currency::Usd, "20")
            .unwrap()
            .convert(&eth, Rounding::Up)
            .unwrap();
        assert_eq!(wei.to_string(), "0.006666666666666667 ETH");
        assert!(
            Money::zero(Asset::Usdt)
                .convert(&rate, Rounding::Up)
                .is_err(),
            "wrong pair"
        );
        assert!(Rate::new(Asset::Btc, Currency::Ngn, Decimal::ZERO).is_err());
    }

    #[test]
    fn tolerance_rounds_down() {
        assert_eq!(
            ngn("100").less_percent(Decimal::new(5, 1)).unwrap(),
            ngn("99.5")
        );
        assert_eq!(
            ngn("0.03")
                .less_percent(Decimal::from(50))
                .unwrap()
                .minor_u64(),
            Some(1)
        );
        assert!(ngn("1").less_percent(Decimal::from(101)).is_err());
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(units in any::<u128>(), which in 0usize..5) {
            let asset = [Asset::Btc, Asset::Eth, Asset::Usdt, Asset::Fiat(Currency::Ngn), Asset::Fiat(Currency::Jpy)][which];
            let m = Money::from_minor(asset, units);
            prop_assert_eq!(m.to_string().parse::<Money>().unwrap(), m);
        }

        #[test]
        fn parse_never_panics_and_accepts_only_digits(s in "\\PC{0,40}") {
            if let Ok(m) = Money::parse_major(Currency::Usd, &s) {
                prop_assert!(s.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
                prop_assert_eq!(m.to_string(), format!("{} USD", if s.contains('.') { s.clone() + &"0".repeat(2 - s.split_once('.').unwrap().1.len()) } else { s.clone() + ".00" }));
            }
        }

        #[test]
        fn add_then_sub_is_identity(a in any::<u64>(), b in any::<u64>()) {
            let x = Money::from_minor(Currency::Kes, a);
            let y = Money::from_minor(Currency::Kes, b);
            prop_assert_eq!(x.checked_add(&y).unwrap().checked_sub(&y).unwrap(), x);
        }

        #[test]
        fn crypto_price_is_never_short_and_at_most_one_unit_over(
            kobo in 1u64..10_000_000_000_000,
            rate_cents in 1u64..100_000_000_000_000,
            which in 0usize..3,
        ) {
            let asset = [Asset::Btc, Asset::Eth, Asset::Usdt][which];
            let rate = Rate::new(asset, Currency::Ngn, Decimal::new(i64::try_from(rate_cents).unwrap(), 2)).unwrap();
            let price = Money::from_minor(Currency::Ngn, kobo);
            let due = price.convert(&rate, Rounding::Up).unwrap();
            // Exact check in integers: due_units/10^d × rate_cents/100 ≥ kobo/100
            //   ⇔ due_units × rate_cents ≥ kobo × 10^d.
            let scale = U256::from(10u8).pow(U256::from(asset.decimals()));
            let need = U256::from(kobo) * scale;
            prop_assert!(due.minor_units() * U256::from(rate_cents) >= need);
            if !due.is_zero() {
                prop_assert!((due.minor_units() - U256::from(1u8)) * U256::from(rate_cents) < need);
            }
            let back = due.convert(&rate, Rounding::Down).unwrap();
            prop_assert!(back.try_cmp(&price).unwrap() != Ordering::Less);
        }
    }
}
