//! Ethernet (MAC) addresses.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacParseError {
    /// The text does not have six colon- or dash-separated groups.
    #[error("`{0}` is not a MAC address: expected six hex bytes such as 02:00:00:00:00:01")]
    Shape(String),
    /// One group is not a two-digit hexadecimal byte.
    #[error("`{0}` is not a MAC address: `{1}` is not a hex byte")]
    Byte(String, String),
}

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// True for group (multicast and broadcast) addresses: the I/G bit is set.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    /// Reads the destination and source addresses of an Ethernet frame, or `None` when the
    /// frame is shorter than an Ethernet header.
    pub fn frame_addrs(frame: &[u8]) -> Option<(MacAddr, MacAddr)> {
        if frame.len() < 14 {
            return None;
        }
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        src.copy_from_slice(&frame[6..12]);
        Some((MacAddr(dst), MacAddr(src)))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let groups: Vec<&str> = s.split([':', '-']).collect();
        if groups.len() != 6 {
            return Err(MacParseError::Shape(s.to_string()));
        }
        let mut out = [0u8; 6];
        for (slot, group) in out.iter_mut().zip(&groups) {
            if group.is_empty() || group.len() > 2 || !group.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(MacParseError::Byte(s.to_string(), group.to_string()));
            }
            *slot = u8::from_str_radix(group, 16)
                .map_err(|_| MacParseError::Byte(s.to_string(), group.to_string()))?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            Ok(MacAddr(<[u8; 6]>::deserialize(d)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: MacAddr = "02:00:00:00:00:0a".parse().unwrap();
        assert_eq!(m.0, [2, 0, 0, 0, 0, 10]);
        assert_eq!(m.to_string(), "02:00:00:00:00:0a");
        assert_eq!("02-00-00-00-00-0A".parse::<MacAddr>().unwrap(), m);
    }

    #[test]
    fn rejects_garbage() {
        assert!(matches!("02:00".parse::<MacAddr>(), Err(MacParseError::Shape(_))));
        assert!(matches!(
            "02:00:00:00:00:zz".parse::<MacAddr>(),
            Err(MacParseError::Byte(_, _))
        ));
        assert!("02:00:00:00:00:100".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:+1".parse::<MacAddr>().is_err());
    }

    #[test]
    fn multicast_bit() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_multicast());
        assert!(!"02:00:00:00:00:01".parse::<MacAddr>().unwrap().is_multicast());
    }
}
