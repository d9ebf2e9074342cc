//! Data rates: [`Rate`], in bits per second, and the one grammar every rate a person or a
//! tool writes goes through: the language's `RESERVE rate`, the lab's `--uplink hI=RATE`
//! and `--link FROM:TO=RATE`, and the class rates `tc` prints back.
//!
//! # Grammar
//!
//! ```text
//! rate   = number [ unit ] ;                          white space around it is ignored
//! number = digits [ "." [ digits ] ] | "." digits ;   decimal: no sign, no exponent
//! unit   = [ prefix ] ( "bit" | "bps" ) ;             letters in any case
//! prefix = "k" | "m" | "g" | "t"                      10^3, 10^6, 10^9, 10^12
//!        | "ki" | "mi" | "gi" | "ti" ;                2^10, 2^20, 2^30, 2^40
//! ```
//!
//! As in `tc`: `bit` counts bits per second, `bps` *bytes* per second (`10mbps` is
//! 80 Mbit/s), and a number without a unit is bits per second. A fraction of a bit per
//! second is dropped (`1.5bit` is 1 bit/s); a number takes at most
//! [`MAX_DECIMALS`] decimals, and the rate must fit in 64 bits. Where a rate has a
//! smallest or largest sensible value (what `tc` can shape), the user of the rate checks
//! it.
//!
//! A rate displays in the largest of `gbit`, `mbit`, `kbit` and `bit` that divides it
//! exactly (`1500mbit`, `640kbit`, `0bit`), which parses back to the same rate.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Most digits a rate's number may have after its decimal point.
pub const MAX_DECIMALS: usize = 24;

/// A data rate in bits per second. Serialized as that number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rate {
    bits_per_sec: u64,
}

/// Why a text is not a rate (the grammar is in the module docs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// The text does not start with a decimal number.
    #[error("`{0}` is not a rate: it should start with a number, as in 50mbit")]
    Number(String),
    /// The number has more decimals than a rate takes.
    #[error("`{0}` is not a rate: a rate takes at most {MAX_DECIMALS} decimals")]
    Decimals(String),
    /// What follows the number is not a unit.
    #[error(
        "`{text}` is not a rate: `{unit}` is not a unit (bit, kbit, mbit, gbit, tbit, kibit, mibit, \
         gibit, tibit, or the same with bps for bytes per second)"
    )]
    Unit {
        /// The whole text.
        text: String,
        /// What stands where the unit should.
        unit: String,
    },
    /// The rate does not fit in 64 bits per second.
    #[error("rate `{0}` is too large: at most {max} bit/s", max = u64::MAX)]
    TooLarge(String),
}

/// Decimal prefixes, binary prefixes, and none: (prefix, multiplier).
const PREFIXES: [(&str, u64); 9] = [
    ("", 1),
    ("k", 1_000),
    ("m", 1_000_000),
    ("g", 1_000_000_000),
    ("t", 1_000_000_000_000),
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
    ("ti", 1 << 40),
];

/// The units a rate displays in, largest first: (unit, bits per second).
const DISPLAY_UNITS: [(&str, u64); 4] = [
    ("gbit", 1_000_000_000),
    ("mbit", 1_000_000),
    ("kbit", 1_000),
    ("bit", 1),
];

impl Rate {
    /// A rate of `bits_per_sec` bits per second.
    pub const fn from_bits_per_sec(bits_per_sec: u64) -> Rate {
        Rate { bits_per_sec }
    }

    /// Bits per second.
    pub const fn bits_per_sec(self) -> u64 {
        self.bits_per_sec
    }

    /// Megabits (10^6 bits) per second.
    pub fn mbit_per_sec(self) -> f64 {
        self.bits_per_sec as f64 / 1e6
    }
}

/// Bits per second of one unit: the multiplier of `unit` (lowercase), `None` when it is
/// not a unit. A bare number is bits per second.
fn unit_bits(unit: &str) -> Option<u128> {
    let (prefix, per_byte) = match unit.strip_suffix("bps") {
        Some(prefix) => (prefix, 8),
        None if unit.is_empty() => ("", 1),
        None => (unit.strip_suffix("bit")?, 1),
    };
    let (_, multiplier) = PREFIXES.iter().find(|(p, _)| *p == prefix)?;
    Some(u128::from(*multiplier) * per_byte)
}

/// The value of a string of ASCII digits, `None` when it exceeds `u128`.
fn digits_value(digits: &str) -> Option<u128> {
    digits.bytes().try_fold(0u128, |acc, d| {
        acc.checked_mul(10)?.checked_add(u128::from(d - b'0'))
    })
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(text: &str) -> Result<Rate, RateError> {
        let trimmed = text.trim();
        let number_len = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(number_len);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(RateError::Number(text.to_string()));
        }
        if fraction.len() > MAX_DECIMALS {
            return Err(RateError::Decimals(text.to_string()));
        }
        let per_unit = unit_bits(&unit.to_ascii_lowercase()).ok_or_else(|| RateError::Unit {
            text: text.to_string(),
            unit: unit.to_string(),
        })?;
        let too_large = || RateError::TooLarge(text.to_string());
        // Exact: whole × unit + ⌊fraction × unit / 10^decimals⌋. With at most MAX_DECIMALS
        // decimals and a unit below 2^44, the fraction's product fits in a u128.
        let whole_bits = digits_value(whole)
            .and_then(|w| w.checked_mul(per_unit))
            .ok_or_else(too_large)?;
        let scale = 10u128.pow(fraction.len() as u32);
        let fraction_bits = digits_value(fraction)
            .and_then(|f| f.checked_mul(per_unit))
            .ok_or_else(too_large)?
            / scale;
        let bits = whole_bits.checked_add(fraction_bits).ok_or_else(too_large)?;
        u64::try_from(bits)
            .map(Rate::from_bits_per_sec)
            .map_err(|_| too_large())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.bits_per_sec;
        let (unit, per_unit) = DISPLAY_UNITS
            .iter()
            .find(|(_, per_unit)| bits != 0 && bits % per_unit == 0)
            .copied()
            .unwrap_or(("bit", 1));
        write!(f, "{}{unit}", bits / per_unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bits(text: &str) -> Result<u64, RateError> {
        text.parse::<Rate>().map(Rate::bits_per_sec)
    }

    #[test]
    fn parses_what_the_language_wrote() {
        assert_eq!(bits("50MBit"), Ok(50_000_000));
        assert_eq!(bits("1200"), Ok(1200));
        assert_eq!(bits("640kbit"), Ok(640_000));
        assert_eq!(bits("1gbit"), Ok(1_000_000_000));
        assert_eq!(bits("0bit"), Ok(0));
        assert_eq!(bits("0"), Ok(0));
        assert!(matches!(bits("mbit"), Err(RateError::Number(_))));
        assert!(matches!(bits("99999999999gbit"), Err(RateError::TooLarge(_))));
    }

    #[test]
    fn parses_what_the_lab_and_tc_wrote() {
        assert_eq!(bits("50mbit"), Ok(50_000_000));
        assert_eq!(bits("1Gbit"), Ok(1_000_000_000));
        assert_eq!(bits("1.5gbit"), Ok(1_500_000_000));
        assert_eq!(bits("10mbps"), Ok(80_000_000));
        assert_eq!(bits("1kibit"), Ok(1024));
        assert_eq!(bits("800kibit"), Ok(800 * 1024));
        assert_eq!(bits("64000"), Ok(64_000));
        assert_eq!(bits("800bit"), Ok(800));
        assert_eq!(bits("10tbit"), Ok(10_000_000_000_000));
        assert_eq!(bits("2bps"), Ok(16));
        assert_eq!(bits(" 39500Kbit "), Ok(39_500_000));
        assert_eq!(bits("1."), Ok(1));
        assert_eq!(bits(".5kbit"), Ok(500));
        // A fraction of a bit per second is dropped, exactly (no float rounding).
        assert_eq!(bits("1.5bit"), Ok(1));
        assert_eq!(bits("0.3kbit"), Ok(300));
        assert_eq!(bits("0.000000001gbit"), Ok(1));
        assert_eq!(bits("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(bits("18446744073.709551615gbit"), Ok(u64::MAX));
    }

    #[test]
    fn refuses_what_is_not_a_rate() {
        for bad in ["", " ", ".", "-1mbit", "1..2mbit", "1.2.3mbit", "+5mbit", "inf"] {
            assert!(matches!(bits(bad), Err(RateError::Number(_))), "{bad}");
        }
        for bad in [
            "50mb",
            "50 furlongs",
            "1e3mbit",
            "50 mbit",
            "5kbits",
            "5b",
            "5xbit",
        ] {
            assert!(matches!(bits(bad), Err(RateError::Unit { .. })), "{bad}");
        }
        assert!(matches!(
            bits("18446744073709551616"),
            Err(RateError::TooLarge(_))
        ));
        assert!(matches!(bits("99999999tibps"), Err(RateError::TooLarge(_))));
        let long = format!("1.{}mbit", "0".repeat(MAX_DECIMALS + 1));
        assert!(matches!(bits(&long), Err(RateError::Decimals(_))));
        assert_eq!(
            bits(&format!("1.{}1mbit", "0".repeat(MAX_DECIMALS - 1))),
            Ok(1_000_000)
        );
        let digits = "9".repeat(60);
        assert!(matches!(bits(&digits), Err(RateError::TooLarge(_))));
        assert_eq!(
            bits("50mb").unwrap_err().to_string(),
            "`50mb` is not a rate: `mb` is not a unit (bit, kbit, mbit, gbit, tbit, kibit, mibit, \
             gibit, tibit, or the same with bps for bytes per second)"
        );
    }

    #[test]
    fn displays_in_the_largest_unit_that_divides() {
        let show = |b| Rate::from_bits_per_sec(b).to_string();
        assert_eq!(show(50_000_000), "50mbit");
        assert_eq!(show(1_500_000_000), "1500mbit");
        assert_eq!(show(0), "0bit");
        assert_eq!(show(1500), "1500bit");
        assert_eq!(show(1_000_000_000_000), "1000gbit");
        assert_eq!(Rate::from_bits_per_sec(60_000_000).mbit_per_sec(), 60.0);
    }

    #[test]
    fn serializes_as_bits_per_second() {
        let r = Rate::from_bits_per_sec(50_000_000);
        assert_eq!(serde_json::to_string(&r).unwrap(), "50000000");
        assert_eq!(serde_json::from_str::<Rate>("50000000").unwrap(), r);
    }

    proptest! {
        #[test]
        fn display_parses_back(b in any::<u64>()) {
            let r = Rate::from_bits_per_sec(b);
            prop_assert_eq!(r.to_string().parse::<Rate>(), Ok(r));
        }

        #[test]
        fn parsing_any_text_never_panics(text in "[0-9.kmgtibpsKMGT ]{0,40}") {
            let _ = text.parse::<Rate>();
        }
    }
}
