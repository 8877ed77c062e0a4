//! `cidcache import DIR` and `cidcache bench` against a live daemon (connect mode).

mod common;

use common::Daemon;
use std::process::Command;

fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cidcache"))
}

#[test]
fn import_prints_one_cid_per_file_and_stores_them() {
    let d = Daemon::start(&[]);
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("a/b")).unwrap();
    std::fs::write(src.path().join("one.txt"), b"one").unwrap();
    std::fs::write(src.path().join("a/b/two.bin"), vec![7u8; 100_000]).unwrap();
    let out = cli()
        .arg("--socket")
        .arg(&d.socket)
        .arg("import")
        .arg(src.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<(&str, &str)> = text
        .lines()
        .map(|l| l.split_once('\t').expect("CID<TAB>path"))
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    let c = d.client();
    for (cid, path) in lines {
        let key = cidcache::cid::parse(cid).unwrap();
        assert_eq!(
            key,
            cidcache::cid::cid_v1_raw(&std::fs::read(path).unwrap())
        );
        let obj = c.get(&key).unwrap().expect("imported object present");
        assert_eq!(obj.data(), std::fs::read(path).unwrap().as_slice());
    }
}

#[test]
fn bench_against_a_live_store_writes_a_json_report() {
    let d = Daemon::start(&["-m", "128M"]);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = cli()
        .arg("--socket")
        .arg(&d.socket)
        .args(["bench", "--suite", "smoke", "--no-plasma", "--quiet"])
        .args(["--only", "4KiB", "--duration-ms", "50", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(dir.path().join("plots"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("get 4KiB"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let ws = r["workloads"].as_array().unwrap();
    assert!(ws.len() >= 3, "{r}");
    for w in ws {
        assert!(w["workload"]["name"].as_str().unwrap().contains("4KiB"));
        assert!(w["ops_per_s"].as_f64().unwrap() > 0.0, "{w}");
        assert_eq!(w["errors"].as_u64(), Some(0), "{w}");
        assert!(w["latency"]["p50"].as_u64().unwrap() > 0);
        // The daemon's pid was found through its lock file: CPU and RSS are known.
        assert!(w["daemon_peak_rss"].as_u64().unwrap() > 0, "{w}");
    }
    let png = std::fs::read(dir.path().join("plots/latency.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // The store is left as it was found: the bench removed its objects.
    assert!(d.client().list().unwrap().is_empty());
}
