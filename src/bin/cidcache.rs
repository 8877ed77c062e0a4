//! `cidcache`: command-line client of a cidcache store.

use cidcache::cid;
use cidcache::tier::catalog::CatalogEntry;
use cidcache::{Client, ConnectOptions, Error};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Put, get and inspect objects in a cidcache store. Keys are text CIDs (CIDv0 `Qm...`,
/// CIDv1 `b...`); `0x`-prefixed hex is accepted for non-CID keys.
#[derive(Parser, Debug)]
#[command(name = "cidcache", version, about)]
struct Args {
    /// Store name.
    #[arg(long, global = true, env = "CIDCACHE_STORE", default_value = cidcache::config::DEFAULT_STORE)]
    store: String,
    /// Socket path (overrides --store).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// No progress bars (they are also off when standard error is not a terminal).
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Store a file; prints its CID (CIDv1, raw, sha2-256; with --ipfs the UnixFS CIDv1 that
    /// `ipfs add --cid-version 1 --raw-leaves` gives, the same up to 256 KiB) unless --key is
    /// given.
    Put {
        /// File to store (`-` for standard input).
        file: PathBuf,
        /// Store under this CID instead of the computed one (verified against the bytes when it
        /// is a sha2-256 CID).
        #[arg(long)]
        key: Option<String>,
        /// Drop instead of demoting when evicted.
        #[arg(long)]
        ephemeral: bool,
        /// MIME type recorded in the catalog (default: guessed from the file name).
        #[arg(long)]
        mimetype: Option<String>,
        /// Also add it to the store's IPFS node (cidcached --ipfs-api), pinned, under the same
        /// CID; succeeds only once the node holds it.
        #[arg(long)]
        ipfs: bool,
    },
    /// Query the CID catalog: `cidcache query --where 'size_bytes>1000' --where
    /// 'storage_tier in (hot,warm)' --columns cid,size_bytes,filename`.
    Query {
        /// A filter `COLUMN OP VALUE` (=, !=, <, <=, >, >=, `in (a,b)`, `^=` prefix, `is null`,
        /// `is not null`); repeat to AND several.
        #[arg(long = "where", short = 'w')]
        filters: Vec<String>,
        /// Comma-separated columns to show (default: all).
        #[arg(long, short = 'c')]
        columns: Option<String>,
        /// At most this many rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Output format: table, ipc (Arrow IPC file) or parquet.
        #[arg(long, short = 'f', default_value = "table")]
        format: cidcache::tier::catalog::OutputFormat,
        /// Write to this file instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Write an object's bytes to standard output or a file.
    Get {
        /// CID of the object.
        cid: String,
        /// Output file.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Wait up to this many milliseconds for the object to appear.
        #[arg(long, default_value_t = 0)]
        timeout_ms: u64,
    },
    /// List the objects in the hot tier (shared memory): `KEY<TAB>BYTES<TAB>raw|arrow`. With
    /// --all, every object the catalog knows, in any tier, with a tier column.
    Ls {
        /// Every tier (from the catalog): `KEY<TAB>BYTES<TAB>TIER`.
        #[arg(long)]
        all: bool,
    },
    /// Show an object's size and kind.
    Stat {
        /// CID of the object.
        cid: String,
    },
    /// Delete an object.
    Rm {
        /// CID of the object.
        cid: String,
    },
    /// Show the store's counters. `hot.hits` counts the lock-free hits that clients report
    /// through their lease pages' hit rings: exact at low rates, a sample when a client hits
    /// faster than the coordinator drains its ring (docs/operations.md).
    Stats,
    /// Store every file under a directory (recursively); prints `CID<TAB>path` per file.
    Import {
        /// Directory to import.
        dir: PathBuf,
        /// Drop instead of demoting when evicted.
        #[arg(long)]
        ephemeral: bool,
    },
    /// Run the benchmark harness (see docs/benchmarks.md): a table, and JSON / plots on request.
    Bench {
        /// Preset: smoke (seconds, for CI), standard (the documented figures) or full.
        #[arg(long, default_value = "standard")]
        suite: cidcache::harness::Suite,
        /// Start a temporary cidcached (found next to this executable) instead of using the
        /// store named by --store / --socket.
        #[arg(long)]
        spawn: bool,
        /// Hot-tier memory limit of the --spawn'ed daemon (e.g. 256M, 2G) [default: the suite's].
        #[arg(long, short = 'm', value_parser = cidcache::shm::parse_bytes)]
        memory: Option<u64>,
        /// Run only workloads whose name contains this (or whose group is this: size, batch,
        /// clients, popularity, mix, dataset).
        #[arg(long)]
        only: Option<String>,
        /// Timed phase of every workload, milliseconds [default: the suite's].
        #[arg(long)]
        duration_ms: Option<u64>,
        /// Write the report as JSON to this file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write PNG plots into this directory.
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Skip the Plasma side-by-side (plasma-store-server vs cidcached plasma vs memcpy).
        #[arg(long)]
        no_plasma: bool,
    },
    /// Internal: one client process of `cidcache bench`.
    #[command(name = "__bench-worker", hide = true)]
    BenchWorker {
        /// The worker's spec (JSON).
        spec: String,
    },
}

/// Writes a line to standard output; a reader that went away (`cidcache stats | head`) ends the
/// command quietly (see `main`) instead of a panic.
macro_rules! say {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(stdout_error)?
    };
}

fn stdout_error(e: std::io::Error) -> Error {
    Error::Io {
        context: "writing standard output".into(),
        source: e,
    }
}

fn connect(a: &Args) -> Result<Client, Error> {
    let opts = match &a.socket {
        Some(s) => ConnectOptions::socket(s),
        None => ConnectOptions::store(&a.store),
    };
    Client::connect_with(opts)
}

fn run(a: Args) -> Result<(), Error> {
    match &a.cmd {
        Cmd::Put {
            file,
            key: None,
            ephemeral,
            ipfs: false,
            ..
        } if file.is_dir() => import(&a, file, *ephemeral)?,
        Cmd::Put {
            file,
            key,
            ephemeral,
            mimetype,
            ipfs,
        } => {
            let data = if file.as_os_str() == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v).map_err(|e| {
                    Error::Io {
                        context: "reading standard input".into(),
                        source: e,
                    }
                })?;
                v
            } else {
                std::fs::read(file).map_err(|e| Error::Io {
                    context: format!("reading {}", file.display()),
                    source: e,
                })?
            };
            let c = connect(&a)?;
            let key = match key {
                Some(k) => cid::parse(k)?,
                None if *ipfs => cid::unixfs_file_cid(&data),
                None => cid::cid_v1_raw(&data),
            };
            let opts = cidcache::PutOptions {
                ephemeral: *ephemeral,
                verify_cid: true,
                ipfs: *ipfs,
                ..Default::default()
            };
            match c.put_with(&key, &data, opts) {
                Ok(()) => {}
                Err(Error::AlreadyExists(_)) => eprintln!("already stored"),
                Err(e) => return Err(e),
            }
            let e = file_entry(&key, data.len(), file, mimetype.as_deref(), "cidcache put");
            record(&c, e.as_slice(), &mut false);
            say!("{}", cid::format_key(&key));
        }
        Cmd::Query {
            filters,
            columns,
            limit,
            format,
            output,
        } => {
            let f: Vec<&str> = filters.iter().map(String::as_str).collect();
            let out = connect(&a)?.catalog_query(&f, columns.as_deref(), *limit, *format)?;
            match output {
                Some(p) => std::fs::write(p, &out).map_err(|e| Error::Io {
                    context: format!("writing {}", p.display()),
                    source: e,
                })?,
                None => std::io::stdout().write_all(&out).map_err(stdout_error)?,
            }
        }
        Cmd::Get {
            cid: text,
            output,
            timeout_ms,
        } => {
            let key = cid::parse_key_arg(text)?;
            let c = connect(&a)?;
            let obj = c
                .get_timeout(&key, std::time::Duration::from_millis(*timeout_ms))?
                .ok_or_else(|| Error::NotFound(format!("{text} is not in the store")))?;
            match output {
                Some(p) => std::fs::write(p, obj.data()).map_err(|e| Error::Io {
                    context: format!("writing {}", p.display()),
                    source: e,
                })?,
                None => std::io::stdout()
                    .write_all(obj.data())
                    .map_err(stdout_error)?,
            }
        }
        Cmd::Ls { all: true } => {
            use arrow_array::{Array, BinaryArray, StringArray, UInt64Array};
            let c = connect(&a)?;
            let cols = Some("cid,size_bytes,storage_tier");
            for b in c.catalog_query_batches(&[], cols, None)? {
                let unexpected = || Error::Internal("the catalog answered other columns".into());
                let (Some(k), Some(n), Some(t)) = (
                    b.column(0).as_any().downcast_ref::<BinaryArray>(),
                    b.column(1).as_any().downcast_ref::<UInt64Array>(),
                    b.column(2).as_any().downcast_ref::<StringArray>(),
                ) else {
                    return Err(unexpected());
                };
                for i in 0..b.num_rows() {
                    let tier = if t.is_null(i) { "none" } else { t.value(i) };
                    say!("{}\t{}\t{}", cid::format_key(k.value(i)), n.value(i), tier);
                }
            }
        }
        Cmd::Ls { all: false } => {
            let c = connect(&a)?;
            for e in c.list()? {
                let kind = if e.flags & cidcache::index::FLAG_ARROW != 0 {
                    "arrow"
                } else {
                    "raw"
                };
                say!("{}\t{}\t{}", e.key, e.data_len, kind);
            }
        }
        Cmd::Stat { cid: text } => {
            let key = cid::parse_key_arg(text)?;
            let c = connect(&a)?;
            let obj = c
                .get(&key)?
                .ok_or_else(|| Error::NotFound(format!("{text} is not in the store")))?;
            say!("cid:       {}", obj.key());
            say!("size:      {}", obj.data().len());
            say!("metadata:  {}", obj.metadata().len());
            say!(
                "kind:      {}",
                if obj.is_arrow() { "arrow" } else { "raw" }
            );
            say!("tier:      hot");
        }
        Cmd::Rm { cid: text } => {
            let key = cid::parse_key_arg(text)?;
            connect(&a)?.delete(&key)?;
        }
        Cmd::Stats => {
            let c = connect(&a)?;
            let stats = c.stats()?;
            let w = stats.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in stats {
                say!("{k:w$}  {v}");
            }
        }
        Cmd::Import { dir, ephemeral } => import(&a, dir, *ephemeral)?,
        Cmd::Bench {
            suite,
            spawn,
            memory,
            only,
            duration_ms,
            json,
            plot,
            no_plasma,
        } => {
            let opts = cidcache::harness::BenchOptions {
                suite: *suite,
                spawn: *spawn,
                socket: a
                    .socket
                    .clone()
                    .unwrap_or_else(|| cidcache::config::default_socket(&a.store)),
                memory: *memory,
                filter: only.clone(),
                duration_ms: *duration_ms,
                json: json.clone(),
                plot: plot.clone(),
                no_plasma: *no_plasma,
                quiet: a.quiet,
            };
            let report = cidcache::harness::run(&opts)?;
            write!(
                std::io::stdout().lock(),
                "{}",
                cidcache::harness::report::table(&report)
            )
            .map_err(stdout_error)?;
            if let Some(p) = json {
                say!("wrote {}", p.display());
            }
            if let Some(d) = plot {
                say!("wrote plots into {}", d.display());
            }
        }
        Cmd::BenchWorker { spec } => {
            let socket = a
                .socket
                .clone()
                .unwrap_or_else(|| cidcache::config::default_socket(&a.store));
            cidcache::harness::worker_main(&socket, spec)?;
        }
    }
    Ok(())
}

/// Files under `dir`, recursively, sorted (symbolic links are not followed).
fn walk(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::Io {
        context: format!("reading directory {}", dir.display()),
        source: e,
    })?;
    let mut entries: Vec<_> = rd.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let t = e.file_type().map_err(|err| Error::Io {
            context: format!("stat {}", e.path().display()),
            source: err,
        })?;
        if t.is_dir() {
            walk(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

/// `cidcache import DIR` (and `cidcache put DIR`): one content-addressed put per file, a
/// progress bar over the bytes when standard error is a terminal.
fn import(a: &Args, dir: &std::path::Path, ephemeral: bool) -> Result<(), Error> {
    use std::io::IsTerminal;
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let total: u64 = files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let c = connect(a)?;
    let pb = if a.quiet || !std::io::stderr().is_terminal() {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(total);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    };
    let mut out = std::io::stdout().lock();
    // Catalog entries go in batches: one round trip per RECORD_BATCH files.
    const RECORD_BATCH: usize = 256;
    let mut entries = Vec::with_capacity(RECORD_BATCH);
    let mut warned = false;
    for f in &files {
        let data = std::fs::read(f).map_err(|e| Error::Io {
            context: format!("reading {}", f.display()),
            source: e,
        })?;
        let key = cid::cid_v1_raw(&data);
        let opts = cidcache::PutOptions {
            ephemeral,
            verify_cid: true,
            ..Default::default()
        };
        match c.put_with(&key, &data, opts) {
            Ok(()) | Err(Error::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        entries.extend(file_entry(&key, data.len(), f, None, "cidcache import"));
        if entries.len() == RECORD_BATCH {
            record(&c, &entries, &mut warned);
            entries.clear();
        }
        pb.suspend(|| writeln!(out, "{}\t{}", cid::format_key(&key), f.display()))
            .map_err(stdout_error)?;
        pb.inc(data.len() as u64);
    }
    record(&c, &entries, &mut warned);
    pb.finish_and_clear();
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): nothing left to say to anyone.
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cidcache: {e}");
            ExitCode::from(match e.code() {
                cidcache::Code::NotFound => 2,
                cidcache::Code::InvalidKey | cidcache::Code::InvalidArgument => 64,
                _ => 1,
            })
        }
    }
}

/// The catalog entry that records a stored file's name and MIME type (guessed from the name
/// unless given). The store merges it with what it knows of the key (see docs/catalog.md).
fn file_entry(
    key: &[u8],
    size: usize,
    file: &std::path::Path,
    mimetype: Option<&str>,
    source: &str,
) -> Option<CatalogEntry> {
    let k = cidcache::Key::new(key).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let mut e = CatalogEntry::new(k, size as u64, now);
    if file.as_os_str() != "-" {
        e.filename = file.file_name().map(|n| n.to_string_lossy().into_owned());
    }
    e.mimetype = mimetype
        .map(str::to_string)
        .or_else(|| guess_mimetype(file).map(str::to_string));
    e.source = Some(source.into());
    Some(e)
}

/// Records entries in the store's catalog (best effort: a store without a catalog only gets a
/// warning, once).
fn record(c: &Client, entries: &[CatalogEntry], warned: &mut bool) {
    if entries.is_empty() || *warned {
        return;
    }
    if let Err(err) = c.catalog_upsert(entries) {
        eprintln!("cidcache: stored, but not recorded in the catalog: {err}");
        *warned = true;
    }
}

/// A MIME type from a file's extension, for the common cases.
fn guess_mimetype(file: &std::path::Path) -> Option<&'static str> {
    let ext = file.extension()?.to_str()?.to_ascii_lowercase();
    Some(match ext.as_str() {
        "txt" | "md" => "text/plain",
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "csv" => "text/csv",
        "json" => "application/json",
        "js" => "text/javascript",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "svg" => "image/svg+xml",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "parquet" => "application/vnd.apache.parquet",
        "arrow" | "feather" => "application/vnd.apache.arrow.file",
        "gz" => "application/gzip",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        "mp4" => "video/mp4",
        "mp3" => "audio/mpeg",
        "wasm" => "application/wasm",
        _ => return None,
    })
}
