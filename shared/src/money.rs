//! Money in integer micro-units: 1 credit = 1 USD = 1,000,000 µ. Never floating point.

use serde::{Deserialize, Serialize};
use std::fmt;

pub const MICROS_PER_UNIT: i64 = 1_000_000;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Micros(pub i64);

impl Micros {
    pub const ZERO: Micros = Micros(0);

    /// Parses a non-negative decimal string such as `"3.95"` exactly; more than six decimals is
    /// an error rather than a silent rounding.
    pub fn parse_decimal(s: &str) -> Result<Micros, String> {
        let s = s.trim();
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && frac.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("`{s}` is not a decimal amount"));
        }
        let frac = frac.trim_end_matches('0');
        if frac.len() > 6 {
            return Err(format!("`{s}` has more than 6 decimal places"));
        }
        let whole: i64 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| format!("`{s}` is too large"))?
        };
        let frac_micros: i64 = format!("{frac:0<6}").parse().unwrap_or(0);
        whole
            .checked_mul(MICROS_PER_UNIT)
            .and_then(|w| w.checked_add(frac_micros))
            .map(Micros)
            .ok_or_else(|| format!("`{s}` is too large"))
    }

    /// `amount × numerator / denominator`, rounded up to the micro: used for markups and for
    /// per-second metering, where rounding must never favour us by more than one micro.
    pub fn mul_div_ceil(self, numerator: i64, denominator: i64) -> Micros {
        assert!(denominator > 0);
        let product = self.0 as i128 * numerator as i128;
        let d = denominator as i128;
        let q = product.div_euclid(d) + i128::from(product.rem_euclid(d) != 0);
        Micros(q as i64)
    }

    /// `amount × numerator / denominator`, rounded down.
    pub fn mul_div_floor(self, numerator: i64, denominator: i64) -> Micros {
        assert!(denominator > 0);
        let product = self.0 as i128 * numerator as i128;
        Micros(product.div_euclid(denominator as i128) as i64)
    }

    pub fn min(self, other: Micros) -> Micros {
        Micros(self.0.min(other.0))
    }
    pub fn max(self, other: Micros) -> Micros {
        Micros(self.0.max(other.0))
    }
}

impl std::ops::Add for Micros {
    type Output = Micros;
    fn add(self, o: Micros) -> Micros {
        Micros(self.0 + o.0)
    }
}
impl std::ops::Sub for Micros {
    type Output = Micros;
    fn sub(self, o: Micros) -> Micros {
        Micros(self.0 - o.0)
    }
}

/// Shown as the shortest exact decimal with at least two places: `3.95`, `0.000125`, `12.00`.
impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / MICROS_PER_UNIT as u64;
        let frac = format!("{:06}", abs % MICROS_PER_UNIT as u64);
        let mut frac = frac.trim_end_matches('0').to_string();
        while frac.len() < 2 {
            frac.push('0');
        }
        write!(f, "{sign}{whole}.{frac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_exactly() {
        for (s, m, shown) in [
            ("3.95", 3_950_000, "3.95"),
            ("0", 0, "0.00"),
            ("12", 12_000_000, "12.00"),
            ("0.000125", 125, "0.000125"),
            (".5", 500_000, "0.50"),
            ("1.100000", 1_100_000, "1.10"),
        ] {
            let parsed = Micros::parse_decimal(s).unwrap();
            assert_eq!(parsed, Micros(m), "{s}");
            assert_eq!(parsed.to_string(), shown);
        }
        for bad in ["", ".", "-1", "1e3", "1.0000001", "abc", "1.2.3"] {
            assert!(Micros::parse_decimal(bad).is_err(), "{bad}");
        }
        assert_eq!(Micros(-1_500_000).to_string(), "-1.50");
    }

    #[test]
    fn rounding_directions() {
        // 1.00/h for 1 s = 277.77… µ
        assert_eq!(Micros(1_000_000).mul_div_ceil(1, 3600), Micros(278));
        assert_eq!(Micros(1_000_000).mul_div_floor(1, 3600), Micros(277));
        assert_eq!(Micros(3_950_000).mul_div_ceil(110, 100), Micros(4_345_000));
    }
}
