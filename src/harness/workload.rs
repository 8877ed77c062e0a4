//! Workload definitions, key-popularity samplers, and the client loop a worker process runs.

use crate::error::{Error, Result};
use crate::Client;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Which dataset keys the operations pick.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Popularity {
    /// Every key equally likely.
    Uniform,
    /// Key of rank `i` (0-based) has weight `1 / (i + 1)^s`.
    Zipf {
        /// Skew exponent (0.99 is the YCSB default).
        s: f64,
    },
}

/// One standard workload: what a run measures and on how many client processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workload {
    /// Unique name in a suite, also the legend of the plots.
    pub name: String,
    /// Axis this workload belongs to (`size`, `batch`, `clients`, `popularity`, `mix`,
    /// `dataset`); the plots group by it.
    pub group: String,
    /// Bytes per object.
    pub object_size: usize,
    /// Objects per call: 1 uses `get`/`put`, more uses `get_many`/`put_many`.
    pub batch: usize,
    /// Client processes running the loop at once.
    pub clients: usize,
    /// Objects in the dataset, preloaded before the timed phase. Ignored when
    /// `dataset_factor` is set.
    pub keys: usize,
    /// Dataset bytes as a multiple of the hot tier's memory limit (sets `keys` at run time).
    pub dataset_factor: Option<f64>,
    /// Key popularity of reads.
    pub popularity: Popularity,
    /// Percentage of calls that are reads (the rest write new objects).
    pub read_percent: u32,
    /// Length of the timed phase.
    pub duration_ms: u64,
}

/// What a worker process is told to do (one JSON argument).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// The workload.
    pub workload: Workload,
    /// Dataset size actually preloaded.
    pub keys: usize,
    /// Prefix of the dataset keys (`PREFIX-i`); writes use `PREFIX-wWORKER-n`.
    pub prefix: String,
    /// Index of this worker among the workload's clients.
    pub worker: usize,
}

/// What a worker reports (one JSON line on its standard output).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkerResult {
    /// Calls made (a batch is one call).
    pub calls: u64,
    /// Objects read or written.
    pub items: u64,
    /// Object bytes read (each read touches one byte per cache line) or written.
    pub bytes: u64,
    /// Reads that found their object.
    pub hits: u64,
    /// Reads that did not.
    pub misses: u64,
    /// Calls or items that failed (a full store, for example).
    pub errors: u64,
    /// Length of the timed phase.
    pub elapsed_ns: u64,
    /// Latency histogram of calls, as `(ns, count)` pairs.
    pub histogram: Vec<(u64, u64)>,
    /// CPU time of the worker process over its whole life.
    pub cpu_ns: u64,
    /// Peak RSS of the worker process.
    pub peak_rss: u64,
    /// First error message seen, if any.
    pub first_error: Option<String>,
}

/// A small, fast PRNG (SplitMix64); statistical quality is ample for picking keys.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, n)`; `n` must be > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Samples key indices `0..n` with a given [`Popularity`].
#[derive(Debug, Clone)]
pub enum Sampler {
    /// Uniform over `0..n`.
    Uniform(u64),
    /// Zipf: inverse transform over the cumulative weights of the ranks (exact; `8 n` bytes
    /// of table); rank `r` maps to key `r * mul mod n`, a permutation, so that the popular
    /// keys are spread over the dataset instead of being the first ones loaded.
    Zipf {
        /// Cumulative weights of ranks `0..n`.
        cdf: Vec<f64>,
        /// Multiplier coprime with `n`.
        mul: u64,
    },
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Sampler {
    /// A sampler over `n >= 1` keys.
    pub fn new(n: usize, p: Popularity) -> Sampler {
        let n = n.max(1);
        match p {
            Popularity::Uniform => Sampler::Uniform(n as u64),
            Popularity::Zipf { s } => {
                let mut acc = 0.0;
                let cdf = (0..n)
                    .map(|i| {
                        acc += 1.0 / ((i + 1) as f64).powf(s);
                        acc
                    })
                    .collect();
                let mut mul = 0x9E37_79B9_7F4A_7C15u64 % n as u64;
                while gcd(mul, n as u64) != 1 {
                    mul += 1;
                }
                Sampler::Zipf { cdf, mul }
            }
        }
    }

    /// Next key rank.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        match self {
            Sampler::Uniform(n) => rng.below(*n) as usize,
            Sampler::Zipf { cdf, mul } => {
                let total = *cdf.last().expect("n >= 1");
                let u = rng.next_f64() * total;
                let rank = cdf.partition_point(|&c| c <= u).min(cdf.len() - 1) as u128;
                ((rank * *mul as u128) % cdf.len() as u128) as usize
            }
        }
    }
}

/// Dataset key `i` of a workload.
pub fn dataset_key(prefix: &str, i: usize) -> Vec<u8> {
    format!("{prefix}-{i}").into_bytes()
}

/// Deterministic object contents of `len` bytes.
pub fn payload(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ 0x5a)
        .collect()
}

/// Reads one byte per cache line, as a consumer scanning the object would.
fn touch(data: &[u8]) -> u64 {
    data.iter()
        .step_by(64)
        .fold(0u64, |a, &b| a.wrapping_add(b as u64))
}

/// Deletes `keys` (ignoring errors such as an already evicted key), with up to 256 deletes in
/// flight on the connection instead of one round trip after another.
pub fn delete_all(client: &Client, keys: Vec<Vec<u8>>) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        for k in &keys {
            let _ = client.delete(k);
        }
        return;
    };
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for k in keys {
            if set.len() >= 256 {
                set.join_next().await;
            }
            let c = client.clone();
            set.spawn(async move {
                let _ = c.delete_async(&k).await;
            });
        }
        while set.join_next().await.is_some() {}
    });
}

/// Creates the latency histogram used everywhere (1 ns .. 1 hour, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs `spec` on `client` for its duration; returns what it measured and the keys of the
/// objects it wrote (for the caller to delete once the result is reported).
pub fn run_worker(client: &Client, spec: &WorkerSpec) -> Result<(WorkerResult, Vec<Vec<u8>>)> {
    let w = &spec.workload;
    let batch = w.batch.max(1);
    let sampler = Sampler::new(spec.keys, w.popularity);
    let mut rng = Rng::new(0xC1D_CAC4E ^ ((spec.worker as u64 + 1) << 32) ^ w.object_size as u64);
    let data = payload(w.object_size);
    let dataset: Vec<Vec<u8>> = (0..spec.keys.max(1))
        .map(|i| dataset_key(&spec.prefix, i))
        .collect();
    let mut hist = new_histogram();
    let mut r = WorkerResult::default();
    let mut written: Vec<Vec<u8>> = Vec::new();
    let note = |r: &mut WorkerResult, e: &Error| {
        r.errors += 1;
        if r.first_error.is_none() {
            r.first_error = Some(e.to_string());
        }
    };
    let mut sum = 0u64;
    // Untimed warm-up: map the segments and fault in the first objects' pages.
    if w.read_percent > 0 {
        for k in dataset.iter().take(64) {
            if let Ok(Some(o)) = client.get(k) {
                sum = sum.wrapping_add(touch(o.data()));
            }
        }
    }
    let start = Instant::now();
    let until = start + Duration::from_millis(w.duration_ms);
    while Instant::now() < until {
        let read = rng.below(100) < w.read_percent as u64;
        if read {
            let picks: Vec<&[u8]> = (0..batch)
                .map(|_| dataset[sampler.sample(&mut rng)].as_slice())
                .collect();
            let t = Instant::now();
            if batch == 1 {
                match client.get(picks[0]) {
                    Ok(Some(o)) => {
                        sum = sum.wrapping_add(touch(o.data()));
                        r.hits += 1;
                    }
                    Ok(None) => r.misses += 1,
                    Err(e) => note(&mut r, &e),
                }
            } else {
                for res in client.get_many(&picks, Duration::ZERO) {
                    match res {
                        Ok(Some(o)) => {
                            sum = sum.wrapping_add(touch(o.data()));
                            r.hits += 1;
                        }
                        Ok(None) => r.misses += 1,
                        Err(e) => note(&mut r, &e),
                    }
                }
            }
            let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
        } else {
            let base = written.len();
            for j in 0..batch {
                written.push(format!("{}-w{}-{}", spec.prefix, spec.worker, base + j).into_bytes());
            }
            let keys = &written[base..];
            let t = Instant::now();
            if batch == 1 {
                if let Err(e) = client.put(&keys[0], &data) {
                    note(&mut r, &e);
                }
            } else {
                let items: Vec<(&[u8], &[u8])> = keys
                    .iter()
                    .map(|k| (k.as_slice(), data.as_slice()))
                    .collect();
                for res in client.put_many(&items) {
                    if let Err(e) = res {
                        note(&mut r, &e);
                    }
                }
            }
            let _ = hist.record((t.elapsed().as_nanos() as u64).max(1));
        }
        r.calls += 1;
        r.items += batch as u64;
    }
    r.elapsed_ns = start.elapsed().as_nanos() as u64;
    r.bytes = r.items * w.object_size as u64;
    black_box(sum);
    r.histogram = hist
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    let me = std::process::id();
    r.cpu_ns = super::procstat::cpu_ns(me).unwrap_or(0);
    r.peak_rss = super::procstat::peak_rss(me).unwrap_or(0);
    Ok((r, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_prefers_low_ranks_and_uniform_is_flat() {
        let mut rng = Rng::new(7);
        let z = Sampler::new(1000, Popularity::Zipf { s: 0.99 });
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        // Back from keys to ranks: the most popular key first.
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // Rank 0 has weight 1, rank 9 about 1/9.7: expect a clear ratio.
        assert!(counts[0] > 5 * counts[9], "{} vs {}", counts[0], counts[9]);
        assert!(counts[0] > 10_000, "rank 0 got {}", counts[0]);
        let u = Sampler::new(10, Popularity::Uniform);
        let mut c = [0u32; 10];
        for _ in 0..100_000 {
            c[u.sample(&mut rng)] += 1;
        }
        assert!(c.iter().all(|&n| (8_000..12_000).contains(&n)), "{c:?}");
    }

    #[test]
    fn samplers_stay_in_range() {
        let mut rng = Rng::new(1);
        for n in [1, 2, 3, 17] {
            for p in [Popularity::Uniform, Popularity::Zipf { s: 1.2 }] {
                let s = Sampler::new(n, p);
                for _ in 0..1000 {
                    assert!(s.sample(&mut rng) < n);
                }
            }
        }
    }
}
