//! `cidcache`: command-line client of a cidcache store.

use cidcache::cid;
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
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Store a file; prints its CID (CIDv1, raw, sha2-256) unless --key is given.
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
    /// List objects in the hot tier.
    Ls,
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
    /// Show the store's counters.
    Stats,
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
            key,
            ephemeral,
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
                None => cid::cid_v1_raw(&data),
            };
            let opts = cidcache::PutOptions {
                ephemeral: *ephemeral,
                verify_cid: true,
                ..Default::default()
            };
            match c.put_with(&key, &data, opts) {
                Ok(()) => {}
                Err(Error::AlreadyExists(_)) => eprintln!("already stored"),
                Err(e) => return Err(e),
            }
            println!("{}", cid::format_key(&key));
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
                    .map_err(|e| Error::Io {
                        context: "writing standard output".into(),
                        source: e,
                    })?,
            }
        }
        Cmd::Ls => {
            let c = connect(&a)?;
            for e in c.list()? {
                let kind = if e.flags & cidcache::index::FLAG_ARROW != 0 {
                    "arrow"
                } else {
                    "raw"
                };
                println!("{}\t{}\t{}", e.key, e.data_len, kind);
            }
        }
        Cmd::Stat { cid: text } => {
            let key = cid::parse_key_arg(text)?;
            let c = connect(&a)?;
            let obj = c
                .get(&key)?
                .ok_or_else(|| Error::NotFound(format!("{text} is not in the store")))?;
            println!("cid:       {}", obj.key());
            println!("size:      {}", obj.data().len());
            println!("metadata:  {}", obj.metadata().len());
            println!(
                "kind:      {}",
                if obj.is_arrow() { "arrow" } else { "raw" }
            );
            println!("tier:      hot");
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
                println!("{k:w$}  {v}");
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let a = Args::parse();
    match run(a) {
        Ok(()) => ExitCode::SUCCESS,
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
