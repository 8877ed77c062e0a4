//! Partitioning strategies: which partition directory (`<catalog dir>/<name>/`) a row lives in.
//!
//! Each partition has its own snapshot + delta file set. Directory names are
//! `part=all` (no partitioning), `day=YYYY-MM-DD` (by `added_at`, UTC), `size=2^K` (by
//! `size_bytes`, log2 buckets; `size=0` for empty objects), `type=<top-level mimetype>`
//! (`type=unknown` when absent, `type=other` when it is not a plain token starting with a
//! letter or digit) and `hash=NNNN`
//! (xxh3 of the key, the fixed slot hash, modulo N).

use super::schema::CatalogEntry;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// How a store's catalog is split into partitions (CLI flag value: `none`, `time`, `size`,
/// `type`, `hash` or `hash:N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PartitionStrategy {
    /// One partition (`part=all`).
    #[default]
    None,
    /// By the UTC day of `added_at`.
    Time,
    /// By `floor(log2(size_bytes))`.
    SizeClass,
    /// By the top-level mimetype (`image`, `text`, ...).
    ContentType,
    /// By the key's fixed hash modulo N buckets (1..=65536).
    Hash(u32),
}

impl PartitionStrategy {
    /// The partition directory name for `entry`.
    pub fn partition_of(&self, entry: &CatalogEntry) -> String {
        match *self {
            PartitionStrategy::None => "part=all".into(),
            PartitionStrategy::Time => {
                let days = entry.added_at.div_euclid(86_400_000_000);
                let (y, m, d) = civil_from_days(days);
                format!("day={y:04}-{m:02}-{d:02}")
            }
            PartitionStrategy::SizeClass => match entry.size_bytes {
                0 => "size=0".into(),
                s => format!("size=2^{}", 63 - s.leading_zeros()),
            },
            PartitionStrategy::ContentType => match entry.mimetype.as_deref() {
                None | Some("") => "type=unknown".into(),
                Some(m) => {
                    let top = m
                        .split('/')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    if top.len() <= 32
                        && top.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && top
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
                    {
                        format!("type={top}")
                    } else {
                        "type=other".into()
                    }
                }
            },
            PartitionStrategy::Hash(n) => {
                format!("hash={:04}", entry.key.hash() % u64::from(n.max(1)))
            }
        }
    }
}

impl fmt::Display for PartitionStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PartitionStrategy::None => f.write_str("none"),
            PartitionStrategy::Time => f.write_str("time"),
            PartitionStrategy::SizeClass => f.write_str("size"),
            PartitionStrategy::ContentType => f.write_str("type"),
            PartitionStrategy::Hash(n) => write!(f, "hash:{n}"),
        }
    }
}

impl FromStr for PartitionStrategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        let bad = || {
            Error::InvalidArgument(format!(
                "unknown partition strategy {s:?}; expected none, time, size, type, hash or hash:N (N in 1..=65536)"
            ))
        };
        match s.as_str() {
            "none" => Ok(PartitionStrategy::None),
            "time" | "day" => Ok(PartitionStrategy::Time),
            "size" => Ok(PartitionStrategy::SizeClass),
            "type" | "mimetype" | "content-type" => Ok(PartitionStrategy::ContentType),
            "hash" => Ok(PartitionStrategy::Hash(16)),
            other => {
                let n = other.strip_prefix("hash:").ok_or_else(bad)?;
                let n: u32 = n.parse().map_err(|_| bad())?;
                if n == 0 || n > 65536 {
                    return Err(bad());
                }
                Ok(PartitionStrategy::Hash(n))
            }
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// (year, month, day) to days since 1970-01-01.
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;

    #[test]
    fn names_and_parse() {
        let mut e = CatalogEntry::bare(Key::new(b"abc").unwrap(), 5000, 1_764_547_200_000_000);
        e.mimetype = Some("Image/PNG".into());
        assert_eq!(PartitionStrategy::None.partition_of(&e), "part=all");
        assert_eq!(PartitionStrategy::Time.partition_of(&e), "day=2025-12-01");
        assert_eq!(PartitionStrategy::SizeClass.partition_of(&e), "size=2^12");
        assert_eq!(
            PartitionStrategy::ContentType.partition_of(&e),
            "type=image"
        );
        e.mimetype = Some("../etc".into());
        assert_eq!(
            PartitionStrategy::ContentType.partition_of(&e),
            "type=other"
        );
        let h = PartitionStrategy::Hash(8).partition_of(&e);
        assert!(h.starts_with("hash=000"), "{h}");
        for s in ["none", "time", "size", "type", "hash", "hash:4"] {
            let p: PartitionStrategy = s.parse().unwrap();
            let again: PartitionStrategy = p.to_string().parse().unwrap();
            assert_eq!(p, again);
        }
        assert!("hash:0".parse::<PartitionStrategy>().is_err());
        assert!("weekly".parse::<PartitionStrategy>().is_err());
        for d in [-1000, 0, 365, 20_423, 100_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }
}
