//! PostgreSQL log sequence numbers: a byte position in the write-ahead log.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A log sequence number (`pg_lsn`): a byte position in PostgreSQL's write-ahead log, written
/// `16/B374D848` (the high and low 32 bits in hexadecimal). Later positions compare greater; the
/// difference of two is a number of bytes of WAL.
///
/// It travels as that text in JSON, as PostgreSQL prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The position as a number of bytes.
    pub fn as_u64(self) -> u64 {
        self.0
    }

    /// The bytes of WAL from `earlier` to `self` (0 when `earlier` is not earlier).
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The text is not a log sequence number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a PostgreSQL LSN: expected two hexadecimal numbers like `16/B374D848`")]
pub struct InvalidLsn(String);

impl FromStr for Lsn {
    type Err = InvalidLsn;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidLsn(s.to_owned());
        let (high, low) = s.split_once('/').ok_or_else(invalid)?;
        let high = u32::from_str_radix(high, 16).map_err(|_| invalid())?;
        let low = u32::from_str_radix(low, 16).map_err(|_| invalid())?;
        Ok(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_and_parses_like_postgresql() {
        let lsn: Lsn = "16/B374D848".parse().expect("valid");
        assert_eq!(lsn.as_u64(), 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert_eq!("0/8E57C18".parse::<Lsn>(), Ok(Lsn(0x08E5_7C18)));
        assert!("8E57C18".parse::<Lsn>().is_err());
        assert!("1/2/3".parse::<Lsn>().is_err());
        assert!("G/0".parse::<Lsn>().is_err());
    }

    #[test]
    fn orders_and_measures_bytes() {
        let a: Lsn = "0/FFFFFFFF".parse().expect("valid");
        let b: Lsn = "1/0".parse().expect("valid");
        assert!(a < b);
        assert_eq!(b.bytes_since(a), 1);
        assert_eq!(a.bytes_since(b), 0);
    }

    #[test]
    fn travels_as_text_in_json() {
        let lsn = Lsn(0x1_0000_002A);
        let json = serde_json::to_string(&lsn).expect("serializes");
        assert_eq!(json, "\"1/2A\"");
        assert_eq!(serde_json::from_str::<Lsn>(&json).expect("parses"), lsn);
        assert!(serde_json::from_str::<Lsn>("\"x\"").is_err());
    }
}
