//! Trace replay for hit-ratio measurements (unit-size keys).
//!
//! Trace format (the ARC paper's `.lis` traces, zstd-compressed): one request per line,
//! `starting_block number_of_blocks ignored request_number`; a request touches pages
//! `starting_block .. starting_block + number_of_blocks`, each counted as one request
//! for a unit-size key.

use super::EvictionPolicy;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

/// Parses an uncompressed `.lis` trace into one page key per page access.
///
/// Lines that are empty are skipped; malformed lines are an `InvalidData` error.
pub fn parse_lis<R: BufRead>(reader: R) -> io::Result<Vec<u64>> {
    let mut keys = Vec::new();
    for (no, line) in reader.lines().enumerate() {
        let line = line?;
        let mut f = line.split_ascii_whitespace();
        let Some(start) = f.next() else { continue };
        let bad = || {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line {}: {line:?}", no + 1),
            )
        };
        let start: u64 = start.parse().map_err(|_| bad())?;
        let count: u64 = f.next().ok_or_else(bad)?.parse().map_err(|_| bad())?;
        keys.extend(start..start.checked_add(count).ok_or_else(bad)?);
    }
    Ok(keys)
}

/// Reads a zstd-compressed `.lis` trace (decompressed in-process).
pub fn load_lis_zst(path: &Path) -> io::Result<Vec<u64>> {
    let file = std::fs::File::open(path)?;
    let decoder = zstd::stream::read::Decoder::new(file)?;
    parse_lis(BufReader::with_capacity(1 << 16, decoder.take(u64::MAX)))
}

/// The directory of the traces that ship with the repository (`tests/data/traces`: the ARC
/// paper's OLTP and P3 traces, with their citation in its README).
pub fn repo_trace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/traces")
}

/// Order in which a miss is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissOrder {
    /// `on_insert` then `evict` down to capacity (the papers' order; exact ARC).
    InsertThenEvict,
    /// `evict` to make room, then `on_insert` (a coordinator that must allocate first).
    EvictThenInsert,
}

/// Hit counts from a replay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Requests replayed.
    pub requests: u64,
    /// Requests that found their key resident.
    pub hits: u64,
}

impl ReplayStats {
    /// Hit ratio in percent.
    pub fn hit_percent(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            100.0 * self.hits as f64 / self.requests as f64
        }
    }
}

/// Replays `keys` (unit size) through `policy` with a capacity of `capacity` keys.
/// Hits are delivered immediately (no batching) and nothing is pinned.
pub fn replay(
    policy: &mut dyn EvictionPolicy,
    keys: &[u64],
    capacity: u64,
    order: MissOrder,
) -> ReplayStats {
    let mut stats = ReplayStats::default();
    let mut victims = Vec::new();
    let mut always = |_: u64| true;
    for &k in keys {
        stats.requests += 1;
        if policy.contains(k) {
            stats.hits += 1;
            policy.on_hit(k);
            continue;
        }
        match order {
            MissOrder::InsertThenEvict => {
                policy.on_insert(k, 1);
                let used = policy.resident_bytes();
                if used > capacity {
                    policy.evict_into(used - capacity, &mut always, &mut victims);
                }
            }
            MissOrder::EvictThenInsert => {
                let used = policy.resident_bytes();
                if used + 1 > capacity {
                    policy.evict_into(used + 1 - capacity, &mut always, &mut victims);
                }
                policy.on_insert(k, 1);
            }
        }
        victims.clear();
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{new_policy, PolicyConfig, PolicyKind};
    use std::sync::OnceLock;

    const SIZES: [u64; 5] = [1_000, 2_000, 5_000, 10_000, 15_000];
    const PAPER_LRU: [f64; 5] = [32.83, 42.47, 53.65, 60.70, 64.63];
    const PAPER_ARC: [f64; 5] = [38.93, 46.08, 55.25, 61.87, 65.40];

    fn oltp() -> &'static [u64] {
        static KEYS: OnceLock<Vec<u64>> = OnceLock::new();
        KEYS.get_or_init(|| {
            let keys = load_lis_zst(&repo_trace_dir().join("OLTP.lis.zst"))
                .expect("read tests/data/traces/OLTP.lis.zst");
            assert_eq!(keys.len(), 914_145, "OLTP page requests");
            keys
        })
    }

    fn run(kind: PolicyKind, size: u64) -> f64 {
        let mut p = new_policy(kind, PolicyConfig::unit(size));
        let s = replay(p.as_mut(), oltp(), size, MissOrder::InsertThenEvict);
        assert!(p.len() as u64 <= size);
        s.hit_percent()
    }

    #[test]
    fn parse_expands_multi_page_requests() {
        let keys = parse_lis(&b"10 3 0 0\n\n7 1 0 1\n"[..]).unwrap();
        assert_eq!(keys, vec![10, 11, 12, 7]);
        assert!(parse_lis(&b"10 x 0 0\n"[..]).is_err());
        assert!(parse_lis(&b"10\n"[..]).is_err());
    }

    #[test]
    fn oltp_lru_matches_paper_exactly() {
        for (&size, &paper) in SIZES.iter().zip(&PAPER_LRU) {
            let got = run(PolicyKind::Lru, size);
            eprintln!("OLTP LRU {size:>6}: {got:.2} % (paper {paper:.2} %)");
            assert!(
                (got - paper).abs() < 0.005 + 1e-9,
                "LRU {size}: {got:.4} vs {paper}"
            );
        }
    }

    #[test]
    fn oltp_arc_close_to_paper() {
        for (&size, &paper) in SIZES.iter().zip(&PAPER_ARC) {
            let got = run(PolicyKind::Arc, size);
            eprintln!(
                "OLTP ARC {size:>6}: {got:.2} % (paper {paper:.2} %, diff {:+.2})",
                got - paper
            );
            assert!(
                (got - paper).abs() < 0.05,
                "ARC {size}: {got:.3} vs {paper}"
            );
        }
    }

    #[test]
    fn oltp_s3fifo_beats_lru_at_small_sizes() {
        for (i, &size) in SIZES[..2].iter().enumerate() {
            let got = run(PolicyKind::S3Fifo, size);
            eprintln!(
                "OLTP S3-FIFO {size:>6}: {got:.2} % (LRU {:.2} %)",
                PAPER_LRU[i]
            );
            assert!(
                got > PAPER_LRU[i],
                "S3-FIFO {size}: {got:.2} <= LRU {}",
                PAPER_LRU[i]
            );
        }
    }

    #[test]
    fn oltp_other_policies_are_sane() {
        // One size each for CLOCK and W-TinyLFU (the full table is printed by
        // `cargo run --release --example replay`). CLOCK approximates LRU. W-TinyLFU with
        // the standard 1 % window is measured *below* LRU on OLTP at 2,000 pages (41.09 vs
        // 42.47 %): OLTP is recency-biased, and a larger window recovers it (20 % window:
        // 46.26 %), which is what motivated Caffeine's adaptive window. So only a band is
        // asserted here, not a win.
        let clock = run(PolicyKind::Clock, 2_000);
        let tiny = run(PolicyKind::WTinyLfu, 2_000);
        eprintln!("OLTP 2000: CLOCK {clock:.2} %, W-TinyLFU {tiny:.2} %");
        assert!((clock - PAPER_LRU[1]).abs() < 2.0, "CLOCK {clock}");
        assert!((tiny - PAPER_LRU[1]).abs() < 3.0, "W-TinyLFU {tiny}");
    }
}
