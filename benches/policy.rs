//! Per-operation cost of each eviction policy (run with `cargo bench --bench policy`).
//!
//! * `hit`: `on_hit` on a resident id (random order, 100k resident objects).
//! * `miss`: a steady-state miss on a full cache: `on_insert` + `evict_into` of one object.
//! * `mixed`: one request of a skewed synthetic trace (contains + hit, or miss path),
//!   on the same full cache; reported per request.

use cidcache::policy::{new_policy, EvictionPolicy, PolicyConfig, PolicyKind};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use std::time::Duration;

const CAP: u64 = 100_000;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn filled(kind: PolicyKind) -> Box<dyn EvictionPolicy> {
    let mut p = new_policy(kind, PolicyConfig::unit(CAP));
    let mut v = Vec::new();
    for id in 0..CAP {
        p.on_insert(id, 1);
    }
    // Touch everything once so every policy is past warm-up.
    for id in 0..CAP {
        p.on_hit(id);
    }
    p.evict_into(0, &mut |_| true, &mut v);
    p
}

fn skewed(n: usize, universe: u64, seed: u64) -> Vec<u64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            let u = (xorshift(&mut s) >> 11) as f64 / (1u64 << 53) as f64;
            (u.powi(4) * universe as f64) as u64
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let hit_ids: Vec<u64> = (0..1 << 16).map(|_| xorshift(&mut s) % CAP).collect();
    let trace = skewed(1 << 20, 4 * CAP, 42);

    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(1));
    for kind in PolicyKind::ALL {
        let mut p = filled(kind);
        let mut i = 0usize;
        g.bench_function(format!("{kind}/hit"), |b| {
            b.iter(|| {
                i = (i + 1) & (hit_ids.len() - 1);
                p.on_hit(black_box(hit_ids[i]));
            })
        });

        let mut p = filled(kind);
        let mut next = CAP;
        let mut victims = Vec::with_capacity(8);
        g.bench_function(format!("{kind}/miss"), |b| {
            b.iter(|| {
                next += 1;
                p.on_insert(black_box(next), 1);
                victims.clear();
                p.evict_into(1, &mut |_| true, &mut victims);
                black_box(victims.len());
            })
        });

        // Same (already full) policy: the synthetic trace reaches steady state quickly.
        let mut j = 0usize;
        g.bench_function(format!("{kind}/mixed"), |b| {
            b.iter(|| {
                let k = black_box(trace[j & (trace.len() - 1)]);
                j += 1;
                if p.contains(k) {
                    p.on_hit(k);
                } else {
                    p.on_insert(k, 1);
                    victims.clear();
                    p.evict_into(1, &mut |_| true, &mut victims);
                }
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench
}
criterion_main!(benches);
