//! The command-line tools as a new user meets them: real `cidcache` / `cidcached` processes
//! against a real daemon.

mod common;

use common::*;
use std::io::Read;
use std::process::{Command, Stdio};

fn cli(d: &Daemon) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cidcache"));
    c.arg("--socket").arg(&d.socket);
    c
}

fn run_ok(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        c,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A row of `cidcache query` (table format) that mentions `needle`.
fn query_row(d: &Daemon, needle: &str, cols: &str) -> String {
    let mut c = cli(d);
    c.args(["query", "-c", cols]);
    run_ok(c)
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no catalog row mentions {needle}"))
        .to_string()
}

#[test]
fn stats_into_a_closed_pipe_ends_quietly() {
    let d = Daemon::start(&[]);
    // The reader closes its end at once, as `| head -0` would.
    let mut child = cli(&d)
        .arg("stats")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(!err.contains("panicked"), "{err}");
    assert!(status.success(), "{status}: {err}");
}

#[test]
fn import_records_names_and_types_and_a_second_put_keeps_them() {
    let d = Daemon::start(&[]);
    let dir = d.dir.path().join("photos");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("notes.txt"), b"some notes").unwrap();
    std::fs::write(dir.join("sub/data.json"), b"{\"a\": 1}").unwrap();
    let mut c = cli(&d);
    c.args(["import", "--quiet"]).arg(&dir);
    let out = run_ok(c);
    assert_eq!(out.lines().count(), 2, "{out}");
    let cid = out
        .lines()
        .find(|l| l.ends_with("notes.txt"))
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();

    let mut c = cli(&d);
    c.args([
        "query",
        "--where",
        "mimetype=application/json",
        "-c",
        "filename",
    ]);
    assert!(run_ok(c).contains("data.json"));
    let row = query_row(&d, "notes.txt", "cid,filename,mimetype,added_at");
    assert!(row.contains("text/plain"), "{row}");

    // The same bytes again, from standard input (no name, no type): what was recorded stays.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let mut c = cli(&d);
    c.args(["put", "-"])
        .stdin(std::fs::File::open(dir.join("notes.txt")).unwrap());
    assert_eq!(run_ok(c).trim(), cid);
    let again = query_row(&d, "notes.txt", "cid,filename,mimetype,added_at");
    assert_eq!(again, row, "a second put changed the catalog row");
}

#[test]
fn ls_all_lists_every_tier() {
    // A hot tier of 2 MiB: half of 4 MiB put is demoted to the warm tier. (Not 1 MiB: lease
    // pages may take an eighth of the memory, two clients' worth, and this test runs three.)
    let d = Daemon::start(&["-m", "2M", "--arena-size", "1M"]);
    let c = d.client();
    let mut keys = Vec::new();
    for i in 0..16u64 {
        let data = content(i, 256 << 10);
        keys.push(c.put_content(&data).unwrap());
    }
    let hot = run_ok({
        let mut c = cli(&d);
        c.arg("ls");
        c
    });
    assert!(hot.lines().count() < 16, "{hot}");
    assert!(eventually(std::time::Duration::from_secs(20), || {
        let mut c = cli(&d);
        c.args(["ls", "--all"]);
        let all = run_ok(c);
        all.lines().count() == 16 && all.contains("\twarm") && all.contains("\thot")
    }));
}

#[test]
fn stats_count_the_hits_of_short_lived_clients() {
    let d = Daemon::start(&[]);
    let file = d.dir.path().join("f.txt");
    std::fs::write(&file, b"three gets").unwrap();
    let cid = run_ok({
        let mut c = cli(&d);
        c.arg("put").arg(&file);
        c
    });
    // Three processes, each one lock-free hit and gone within milliseconds.
    for _ in 0..3 {
        let mut c = cli(&d);
        c.args(["get", cid.trim()]);
        assert_eq!(run_ok(c), "three gets");
    }
    let out = run_ok({
        let mut c = cli(&d);
        c.arg("stats");
        c
    });
    let hits: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("hot.hits "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(hits, 3, "{out}");
}

#[test]
fn daemon_command_line_errors_and_help() {
    let daemon = env!("CARGO_BIN_EXE_cidcached");
    let out = Command::new(daemon)
        .args(["plasma", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("-s SOCKET"));

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(daemon)
        .args(["-m", "0", "--store", &unique_store(), "--socket"])
        .arg(dir.path().join("s.sock"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 MiB") && !err.contains("full"), "{err}");
    // Refused before anything was created.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn logs_written_to_a_file_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cidcached"))
        .args([
            "-m",
            "8M",
            "--no-warm",
            "--store",
            &unique_store(),
            "--socket",
        ])
        .arg(dir.path().join("s.sock"))
        .env("CIDCACHE_LOG", "info")
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for_socket(&dir.path().join("s.sock"), &mut child);
    signal(child.id() as i32, libc_sigterm());
    wait_timeout(&mut child, std::time::Duration::from_secs(20)).expect("exits");
    let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(text.contains("serving"), "{text}");
    assert!(!text.contains('\u{1b}'), "{text:?}");
}

/// The README's tour, run as written (but for building, starting the daemon, which the test
/// does with a small hot tier, and the benchmark, which CI runs on its own).
#[test]
fn readme_tour_runs() {
    let readme = include_str!("../README.md");
    let start = readme.find("## A short tour").expect("tour section");
    let block = &readme[start..];
    let block = &block[block.find("```sh\n").unwrap() + 6..];
    let block = &block[..block.find("```").unwrap()];
    let skip = [
        "cargo build",
        "export PATH",
        "cidcached &",
        "cidcache bench",
    ];
    let script: Vec<&str> = block
        .lines()
        .filter(|l| !skip.iter().any(|s| l.starts_with(s)))
        .collect();
    assert!(script.len() >= 8, "{script:?}");

    let dir = tempfile::tempdir().unwrap();
    let (run, data, work) = (
        dir.path().join("run"),
        dir.path().join("data"),
        dir.path().join("work"),
    );
    std::fs::create_dir_all(work.join("docs")).unwrap();
    std::fs::write(work.join("docs/guide.md"), b"# a guide\n").unwrap();
    let store = unique_store();
    let bins = std::path::Path::new(env!("CARGO_BIN_EXE_cidcache"))
        .parent()
        .unwrap();
    let path = format!("{}:{}", bins.display(), std::env::var("PATH").unwrap());
    let env = [
        ("PATH", path.as_str()),
        ("CIDCACHE_STORE", store.as_str()),
        ("XDG_RUNTIME_DIR", run.to_str().unwrap()),
        ("XDG_DATA_HOME", data.to_str().unwrap()),
        ("CIDCACHE_LOG", "warn"),
    ];
    std::fs::create_dir_all(&run).unwrap();
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_cidcached"))
        .args([
            "-m",
            "64M",
            "--arena-size",
            "16M",
            "--index-capacity",
            "4096",
        ])
        .envs(env)
        .spawn()
        .unwrap();
    wait_for_socket(
        &run.join("cidcache").join(format!("{store}.sock")),
        &mut daemon,
    );
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script.join("\n")])
        .current_dir(&work)
        .envs(env)
        .output()
        .unwrap();
    signal(daemon.id() as i32, libc_sigterm());
    wait_timeout(&mut daemon, std::time::Duration::from_secs(20)).expect("daemon exits");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello cidcache"), "{stdout}");
    assert!(
        stdout.contains("hello.txt"),
        "the catalog query found nothing: {stdout}"
    );
    assert!(stdout.contains("guide.md"), "{stdout}");
}
