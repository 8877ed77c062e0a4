//! Prints the hit-ratio table of every policy on the OLTP and P3 traces.
//!
//! `cargo run --release --example replay [trace_dir]` (default: the repository's
//! `tests/data/traces`)

use cidcache::policy::replay::{load_lis_zst, replay, repo_trace_dir, MissOrder};
use cidcache::policy::{new_policy, PolicyConfig, PolicyKind};
use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(repo_trace_dir);
    let traces: [(&str, &[u64]); 2] = [
        ("OLTP", &[1_000, 2_000, 5_000, 10_000, 15_000]),
        (
            "P3",
            &[
                1_024, 2_048, 4_096, 8_192, 16_384, 32_768, 65_536, 131_072, 262_144, 524_288,
            ],
        ),
    ];
    for (name, sizes) in traces {
        let t0 = Instant::now();
        let keys = load_lis_zst(&dir.join(format!("{name}.lis.zst"))).expect("load trace");
        println!(
            "\n{name}: {} page requests (loaded in {:.2?}); hit ratio %, on_insert then evict",
            keys.len(),
            t0.elapsed()
        );
        print!("{:>9}", "pages");
        for k in PolicyKind::ALL {
            print!("{:>10}", k.as_str());
        }
        println!("{:>14}", "arc(ev-first)");
        for &size in sizes {
            print!("{size:>9}");
            for kind in PolicyKind::ALL {
                let mut p = new_policy(kind, PolicyConfig::unit(size));
                let s = replay(p.as_mut(), &keys, size, MissOrder::InsertThenEvict);
                print!("{:>10.2}", s.hit_percent());
            }
            let mut p = new_policy(PolicyKind::Arc, PolicyConfig::unit(size));
            let s = replay(p.as_mut(), &keys, size, MissOrder::EvictThenInsert);
            println!("{:>14.2}", s.hit_percent());
        }
    }
}
