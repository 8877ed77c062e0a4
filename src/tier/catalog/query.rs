//! Catalog queries: ANDed column filters and a projection, evaluated over the in-memory
//! entries or over the persisted Parquet files (pruning row groups by statistics and pages by
//! the page index, one thread per core across partitions), the text filter syntax of the CLI,
//! and the output writers (aligned text table, Arrow IPC file, Parquet).

use super::encoding::{writer_properties, Preset};
use super::partition::days_from_civil;
use super::persist::{self, FileRef};
use super::schema::{from_batch, to_batch, CatalogEntry, Column, StorageTier};
use crate::error::{Error, Result};
use crate::key::Key;
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, TimestampMicrosecondType, UInt64Type, UInt8Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use parquet::arrow::arrow_reader::{
    ArrowReaderOptions, ParquetRecordBatchReaderBuilder, RowSelection,
};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData};
use parquet::file::page_index::column_index::ColumnIndexMetaData;
use parquet::file::statistics::Statistics;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::Write;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A comparison operator of a [`Filter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `^=`: string (or `cid` bytes) prefix.
    Prefix,
    /// `in (a, b, ...)`: value is a [`Literal::List`].
    In,
    /// `is null`
    IsNull,
    /// `is not null`
    IsNotNull,
}

/// A filter value, typed for its column.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// No value (for `is null` / `is not null`).
    Null,
    /// `cid` bytes.
    Bytes(Vec<u8>),
    /// `size_bytes`, `access_count`, `cid_version`.
    UInt(u64),
    /// Timestamps, µs since epoch.
    Int(i64),
    /// `heat_score`.
    Float(f64),
    /// Booleans.
    Bool(bool),
    /// Strings (and `storage_tier`).
    Str(String),
    /// The values of an `in` filter.
    List(Vec<Literal>),
}

/// One condition `column op value`; a [`Query`] ANDs its filters. Null values (absent
/// optional fields, empty `properties`) match only `is null`.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    /// The column tested.
    pub column: Column,
    /// The operator.
    pub op: CmpOp,
    /// The value (typed for the column; see [`Filter::new`]).
    pub value: Literal,
}

#[derive(Clone, Copy)]
enum Kind {
    Bytes,
    Str,
    UInt,
    Int,
    Float,
    Bool,
    Map,
}

fn kind(c: Column) -> Kind {
    match c {
        Column::Cid => Kind::Bytes,
        Column::Mimetype
        | Column::Filename
        | Column::StorageTier
        | Column::Source
        | Column::MultihashType => Kind::Str,
        Column::SizeBytes | Column::AccessCount | Column::CidVersion => Kind::UInt,
        Column::AddedAt | Column::LastAccessed => Kind::Int,
        Column::HeatScore => Kind::Float,
        Column::IsPinned | Column::Valid => Kind::Bool,
        Column::Properties => Kind::Map,
    }
}

enum Field<'a> {
    Null,
    Bytes(&'a [u8]),
    Str(&'a str),
    UInt(u64),
    Int(i64),
    Float(f64),
    Bool(bool),
    Map,
}

fn field(e: &CatalogEntry, c: Column) -> Field<'_> {
    fn s(o: &Option<String>) -> Field<'_> {
        match o {
            Some(v) => Field::Str(v.as_str()),
            None => Field::Null,
        }
    }
    match c {
        Column::Cid => Field::Bytes(e.key.as_bytes()),
        Column::SizeBytes => Field::UInt(e.size_bytes),
        Column::Mimetype => s(&e.mimetype),
        Column::Filename => s(&e.filename),
        Column::StorageTier => Field::Str(e.storage_tier.as_str()),
        Column::IsPinned => Field::Bool(e.is_pinned),
        Column::AddedAt => Field::Int(e.added_at),
        Column::LastAccessed => Field::Int(e.last_accessed),
        Column::AccessCount => Field::UInt(e.access_count),
        Column::HeatScore => Field::Float(e.heat_score),
        Column::Source => s(&e.source),
        Column::CidVersion => e.cid_version.map_or(Field::Null, |v| Field::UInt(v.into())),
        Column::MultihashType => s(&e.multihash_type),
        Column::Valid => Field::Bool(e.valid),
        Column::Properties => {
            if e.properties.is_empty() {
                Field::Null
            } else {
                Field::Map
            }
        }
    }
}

fn cmp_field(f: &Field<'_>, l: &Literal) -> Option<Ordering> {
    match (f, l) {
        (Field::Bytes(a), Literal::Bytes(b)) => Some((*a).cmp(b.as_slice())),
        (Field::Str(a), Literal::Str(b)) => Some((*a).cmp(b.as_str())),
        (Field::UInt(a), Literal::UInt(b)) => Some(a.cmp(b)),
        (Field::Int(a), Literal::Int(b)) => Some(a.cmp(b)),
        (Field::Float(a), Literal::Float(b)) => a.partial_cmp(b),
        (Field::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

fn type_error(c: Column, what: &str) -> Error {
    Error::InvalidArgument(format!("column {} {what}", c.name()))
}

/// Converts `l` to the literal type of column `c` (e.g. a string to a tier, a CID text to
/// bytes); errors name the column and the expected form.
fn coerce(c: Column, l: Literal) -> Result<Literal> {
    let k = kind(c);
    Ok(match (k, l) {
        (_, Literal::List(items)) => Literal::List(
            items
                .into_iter()
                .map(|i| coerce(c, i))
                .collect::<Result<_>>()?,
        ),
        (Kind::Map, _) => {
            return Err(type_error(c, "supports only `is null` and `is not null`"));
        }
        (_, Literal::Str(s)) => parse_value(c, &s)?,
        (Kind::UInt, Literal::Int(i)) if i >= 0 => Literal::UInt(i as u64),
        (Kind::Int, Literal::UInt(u)) if u <= i64::MAX as u64 => Literal::Int(u as i64),
        (Kind::Float, Literal::UInt(u)) => Literal::Float(u as f64),
        (Kind::Float, Literal::Int(i)) => Literal::Float(i as f64),
        (Kind::Bytes, l @ Literal::Bytes(_))
        | (Kind::UInt, l @ Literal::UInt(_))
        | (Kind::Int, l @ Literal::Int(_))
        | (Kind::Float, l @ Literal::Float(_))
        | (Kind::Bool, l @ Literal::Bool(_)) => l,
        (_, l) => return Err(type_error(c, &format!("cannot be compared with {l:?}"))),
    })
}

impl Filter {
    /// A validated filter: `value` is converted to the column's type (strings are parsed as
    /// in the text syntax); `In` needs a list, `IsNull`/`IsNotNull` ignore the value, `Prefix`
    /// works on string columns and `cid`, and `properties` supports only the null tests.
    pub fn new(column: Column, op: CmpOp, value: Literal) -> Result<Filter> {
        let value = match op {
            CmpOp::IsNull | CmpOp::IsNotNull => Literal::Null,
            CmpOp::In => match value {
                Literal::List(_) => coerce(column, value)?,
                other => Literal::List(vec![coerce(column, other)?]),
            },
            CmpOp::Prefix => {
                if !matches!(kind(column), Kind::Str | Kind::Bytes) {
                    return Err(type_error(
                        column,
                        "is not a string; `^=` (prefix) needs one",
                    ));
                }
                match (kind(column), value) {
                    (Kind::Bytes, Literal::Str(s)) => Literal::Bytes(s.into_bytes()),
                    (_, v @ (Literal::Str(_) | Literal::Bytes(_))) => v,
                    (_, v) => return Err(type_error(column, &format!("prefix {v:?} is not text"))),
                }
            }
            _ => {
                if let Literal::List(_) = value {
                    return Err(type_error(column, "got a list; use `in (...)`"));
                }
                coerce(column, value)?
            }
        };
        Ok(Filter { column, op, value })
    }

    /// Parses one text filter: `COLUMN OP VALUE` with OP one of `=`, `!=`, `<`, `<=`, `>`,
    /// `>=`, `^=` (prefix), `in (v1, v2, ...)`, `is null`, `is not null`. Values may be
    /// quoted. Timestamps take µs since epoch or `YYYY-MM-DD[THH:MM:SS[.ffffff]Z]`; sizes take
    /// an optional `k`/`m`/`g`/`t` suffix (powers of 1024); `cid` takes a text CID or `0x` hex.
    pub fn parse(text: &str) -> Result<Filter> {
        let t = text.trim();
        let name_len = t
            .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
            .unwrap_or(t.len());
        if name_len == 0 {
            return Err(Error::InvalidArgument(format!(
                "filter {text:?} does not start with a column name; columns are: {}",
                Column::names()
            )));
        }
        let column: Column = t[..name_len].parse()?;
        let rest = t[name_len..].trim_start();
        let lower = rest.to_ascii_lowercase();
        let (op, vtext) = if lower.starts_with("is not null") && lower.trim() == "is not null" {
            (CmpOp::IsNotNull, "")
        } else if lower.trim() == "is null" {
            (CmpOp::IsNull, "")
        } else if lower.starts_with("in") && rest[2..].trim_start().starts_with('(') {
            (CmpOp::In, rest[2..].trim())
        } else {
            let ops: [(&str, CmpOp); 9] = [
                ("^=", CmpOp::Prefix),
                ("!=", CmpOp::Ne),
                ("<>", CmpOp::Ne),
                ("<=", CmpOp::Le),
                (">=", CmpOp::Ge),
                ("==", CmpOp::Eq),
                ("=", CmpOp::Eq),
                ("<", CmpOp::Lt),
                (">", CmpOp::Gt),
            ];
            let Some((sym, op)) = ops.iter().find(|(s, _)| rest.starts_with(s)) else {
                return Err(Error::InvalidArgument(format!(
                    "filter {text:?}: expected an operator after {} (=, !=, <, <=, >, >=, ^=, in (...), is null, is not null)",
                    column.name()
                )));
            };
            (*op, rest[sym.len()..].trim())
        };
        let value = match op {
            CmpOp::IsNull | CmpOp::IsNotNull => Literal::Null,
            CmpOp::In => {
                let inner = vtext
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(')'))
                    .ok_or_else(|| {
                        Error::InvalidArgument(format!(
                            "filter {text:?}: `in` needs a parenthesized list, e.g. storage_tier in (hot,warm)"
                        ))
                    })?;
                Literal::List(
                    inner
                        .split(',')
                        .map(|v| Literal::Str(unquote(v.trim()).to_string()))
                        .collect(),
                )
            }
            _ => {
                if vtext.is_empty() {
                    return Err(Error::InvalidArgument(format!(
                        "filter {text:?}: missing value after the operator"
                    )));
                }
                let v = unquote(vtext);
                if op == CmpOp::Prefix && column == Column::Cid {
                    Literal::Bytes(crate::cid::parse_key_arg(v)?)
                } else {
                    Literal::Str(v.to_string())
                }
            }
        };
        Filter::new(column, op, value).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("filter {text:?}: {m}")),
            other => other,
        })
    }

    /// True when `entry` satisfies this filter.
    pub fn matches(&self, entry: &CatalogEntry) -> bool {
        self.matches_field(&field(entry, self.column))
    }

    fn matches_field(&self, f: &Field<'_>) -> bool {
        match self.op {
            CmpOp::IsNull => matches!(f, Field::Null),
            CmpOp::IsNotNull => !matches!(f, Field::Null),
            _ if matches!(f, Field::Null) => false,
            CmpOp::Eq => cmp_field(f, &self.value) == Some(Ordering::Equal),
            CmpOp::Ne => matches!(
                cmp_field(f, &self.value),
                Some(Ordering::Less | Ordering::Greater)
            ),
            CmpOp::Lt => cmp_field(f, &self.value) == Some(Ordering::Less),
            CmpOp::Le => matches!(
                cmp_field(f, &self.value),
                Some(Ordering::Less | Ordering::Equal)
            ),
            CmpOp::Gt => cmp_field(f, &self.value) == Some(Ordering::Greater),
            CmpOp::Ge => matches!(
                cmp_field(f, &self.value),
                Some(Ordering::Greater | Ordering::Equal)
            ),
            CmpOp::Prefix => match (f, &self.value) {
                (Field::Str(s), Literal::Str(p)) => s.starts_with(p.as_str()),
                (Field::Bytes(b), Literal::Bytes(p)) => b.starts_with(p),
                _ => false,
            },
            CmpOp::In => match &self.value {
                Literal::List(items) => items
                    .iter()
                    .any(|l| cmp_field(f, l) == Some(Ordering::Equal)),
                _ => false,
            },
        }
    }
}

fn unquote(v: &str) -> &str {
    for q in ['\'', '"'] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

fn parse_value(c: Column, s: &str) -> Result<Literal> {
    let s = s.trim();
    let bad =
        |what: &str| Error::InvalidArgument(format!("column {}: {s:?} is not {what}", c.name()));
    Ok(match kind(c) {
        Kind::Bytes => Literal::Bytes(crate::cid::parse_key_arg(s)?),
        Kind::Str if c == Column::StorageTier => {
            Literal::Str(StorageTier::from_str(s)?.as_str().to_string())
        }
        Kind::Str => Literal::Str(s.to_string()),
        Kind::UInt => {
            let lower = s.to_ascii_lowercase();
            let t = lower.trim_end_matches("ib").trim_end_matches('b');
            let (num, mult) = match t.chars().last() {
                Some('k') => (&t[..t.len() - 1], 1u64 << 10),
                Some('m') => (&t[..t.len() - 1], 1 << 20),
                Some('g') => (&t[..t.len() - 1], 1 << 30),
                Some('t') => (&t[..t.len() - 1], 1 << 40),
                _ => (t, 1),
            };
            let n: u64 = num
                .trim()
                .parse()
                .map_err(|_| bad("an unsigned integer (optionally with k, m, g or t)"))?;
            Literal::UInt(
                n.checked_mul(mult)
                    .ok_or_else(|| bad("a value that fits in 64 bits"))?,
            )
        }
        Kind::Int => Literal::Int(parse_timestamp(s).ok_or_else(|| {
            bad("a timestamp (µs since epoch, or YYYY-MM-DD[THH:MM:SS[.ffffff]Z])")
        })?),
        Kind::Float => Literal::Float(s.parse().map_err(|_| bad("a number"))?),
        Kind::Bool => Literal::Bool(match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(bad("a boolean (true or false)")),
        }),
        Kind::Map => return Err(type_error(c, "supports only `is null` and `is not null`")),
    })
}

/// Parses µs since epoch or `YYYY-MM-DD[THH:MM:SS[.ffffff]][Z]` (UTC).
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(v) = s.parse::<i64>() {
        return Some(v);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let (date, time) = match s.split_once(['T', ' ']) {
        Some((d, t)) => (d, Some(t)),
        None => (s, None),
    };
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let m: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    // ±200,000 years keeps every µs value inside i64.
    if dp.next().is_some()
        || !(1..=12).contains(&m)
        || !(1..=31).contains(&d)
        || !(-200_000..=200_000).contains(&y)
    {
        return None;
    }
    let mut us = days_from_civil(y, m, d).checked_mul(86_400_000_000)?;
    if let Some(t) = time {
        let (hms, frac) = match t.split_once('.') {
            Some((a, b)) => (a, Some(b)),
            None => (t, None),
        };
        let mut tp = hms.split(':');
        let h: i64 = tp.next()?.parse().ok()?;
        let mi: i64 = tp.next()?.parse().ok()?;
        let sec: i64 = tp.next().unwrap_or("0").parse().ok()?;
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        us += (h * 3600 + mi * 60 + sec) * 1_000_000;
        if let Some(f) = frac {
            if f.is_empty() || f.len() > 6 || !f.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let v: i64 = f.parse().ok()?;
            us += v * 10i64.pow(6 - f.len() as u32);
        }
    }
    Some(us)
}

/// Filters (ANDed), a projection and a row limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// Conditions every returned row satisfies.
    pub filters: Vec<Filter>,
    /// Output columns in order; `None` = all columns.
    pub projection: Option<Vec<Column>>,
    /// At most this many rows (in-memory queries stop early; persisted scans truncate).
    pub limit: Option<usize>,
}

impl Query {
    /// Builds a query from CLI text: each filter as in [`Filter::parse`], and an optional
    /// comma-separated column list (`*` or empty = all).
    pub fn parse<S: AsRef<str>>(filters: &[S], columns: Option<&str>) -> Result<Query> {
        let filters = filters
            .iter()
            .map(|f| Filter::parse(f.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        let projection = match columns.map(str::trim) {
            None | Some("") | Some("*") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|c| c.parse::<Column>())
                    .collect::<Result<Vec<_>>>()?,
            ),
        };
        Ok(Query {
            filters,
            projection,
            limit: None,
        })
    }

    /// True when `entry` satisfies every filter.
    pub fn matches(&self, entry: &CatalogEntry) -> bool {
        self.filters.iter().all(|f| f.matches(entry))
    }

    /// The output columns.
    pub fn columns(&self) -> Vec<Column> {
        self.projection
            .clone()
            .unwrap_or_else(|| Column::ALL.to_vec())
    }

    /// Evaluates the query over `entries` into one record batch.
    pub fn run<'a>(&self, entries: impl Iterator<Item = &'a CatalogEntry>) -> Result<RecordBatch> {
        let limit = self.limit.unwrap_or(usize::MAX);
        let rows: Vec<&CatalogEntry> = entries.filter(|e| self.matches(e)).take(limit).collect();
        to_batch(&rows, &self.columns())
    }
}

/// What a persisted scan did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanReport {
    /// Partitions scanned.
    pub partitions: usize,
    /// Files opened.
    pub files: usize,
    /// Row groups in those files.
    pub row_groups: usize,
    /// Row groups skipped by statistics or the `cid` bloom filter (never read).
    pub row_groups_pruned: usize,
    /// Rows decoded (after row-group and page pruning).
    pub rows_decoded: usize,
    /// Rows returned.
    pub rows_matched: usize,
    /// Files that could not be read (left in place; `Catalog::open` quarantines them).
    pub skipped_files: Vec<(PathBuf, String)>,
}

/// Scans the persisted catalog under `catalog_dir` with `query`, partitions in parallel
/// (`threads` = 0: one per core). Per partition, the active files (newest snapshot and later
/// deltas) are read newest first and a row is returned only when no newer file holds its key,
/// so results equal querying the recovered catalog. Row groups whose statistics exclude a
/// filter are skipped, and pages excluded by the page index are not decoded. Returns one batch
/// per partition with matches.
pub fn scan_persisted(
    catalog_dir: &Path,
    query: &Query,
    threads: usize,
) -> Result<(Vec<RecordBatch>, ScanReport)> {
    let names = persist::partition_names(catalog_dir)?;
    let threads = if threads == 0 {
        persist::cores()
    } else {
        threads
    };
    let results = persist::parallel_map(&names, threads, |name| {
        scan_partition(&catalog_dir.join(name), query)
    });
    let mut report = ScanReport {
        partitions: names.len(),
        ..Default::default()
    };
    let mut batches = Vec::new();
    let limit = query.limit.unwrap_or(usize::MAX);
    for r in results {
        let (part_batches, rep) = r?;
        report.files += rep.files;
        report.row_groups += rep.row_groups;
        report.row_groups_pruned += rep.row_groups_pruned;
        report.rows_decoded += rep.rows_decoded;
        report.skipped_files.extend(rep.skipped_files);
        for b in part_batches {
            let room = limit.saturating_sub(report.rows_matched);
            if room == 0 {
                break;
            }
            let b = if b.num_rows() > room {
                b.slice(0, room)
            } else {
                b
            };
            report.rows_matched += b.num_rows();
            batches.push(b);
        }
    }
    Ok((batches, report))
}

fn scan_partition(dir: &Path, query: &Query) -> Result<(Vec<RecordBatch>, ScanReport)> {
    let files = persist::active_files(dir)?;
    let mut rep = ScanReport::default();
    let mut shadow: HashSet<Key> = HashSet::new();
    let mut out = Vec::new();
    for (n, f) in files.iter().rev().enumerate() {
        let oldest = n + 1 == files.len();
        let res = crate::tier::warm::files::no_panic(&f.path.display().to_string(), || {
            scan_file(f, query, &mut rep, !oldest)
        })
        .and_then(|(raw, keys)| {
            let mut sel = Vec::new();
            for b in &raw {
                if let Some(b) = select(b, query, &shadow)
                    .map_err(|e| persist::pq_err("decode", &f.path, e.message()))?
                {
                    sel.push(b);
                }
            }
            Ok((sel, keys))
        });
        match res {
            Ok((sel, keys)) => {
                rep.files += 1;
                out.extend(sel);
                shadow.extend(keys);
            }
            Err(e) => rep.skipped_files.push((f.path.clone(), e.message())),
        }
    }
    Ok((out, rep))
}

/// The value of column `c` at row `i` of array `a` (of the exact catalog type), with the
/// decoding rules of `from_batch`: nulls in non-nullable columns read as the default, an empty
/// map reads as null.
fn array_field<'a>(c: Column, a: &'a dyn Array, i: usize, default: &'a CatalogEntry) -> Field<'a> {
    if a.is_null(i) {
        return if c.nullable() {
            Field::Null
        } else {
            field(default, c)
        };
    }
    match c {
        Column::Cid => Field::Bytes(a.as_binary::<i32>().value(i)),
        Column::Mimetype
        | Column::Filename
        | Column::StorageTier
        | Column::Source
        | Column::MultihashType => Field::Str(a.as_string::<i32>().value(i)),
        Column::SizeBytes | Column::AccessCount => {
            Field::UInt(a.as_primitive::<UInt64Type>().value(i))
        }
        Column::CidVersion => Field::UInt(a.as_primitive::<UInt8Type>().value(i).into()),
        Column::AddedAt | Column::LastAccessed => {
            Field::Int(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        Column::HeatScore => Field::Float(a.as_primitive::<Float64Type>().value(i)),
        Column::IsPinned | Column::Valid => Field::Bool(a.as_boolean().value(i)),
        Column::Properties => {
            let off = a.as_map().value_offsets();
            if off[i + 1] > off[i] {
                Field::Map
            } else {
                Field::Null
            }
        }
    }
}

/// Applies tombstones, shadowing by newer files and the filters to one decoded batch and
/// returns the projected matches. Batches whose catalog columns all have the exact current
/// types are evaluated on the Arrow arrays directly; others (older or foreign type variants)
/// go through `from_batch`, with the same results.
fn select(
    batch: &RecordBatch,
    query: &Query,
    shadow: &HashSet<Key>,
) -> Result<Option<RecordBatch>> {
    let cols = query.columns();
    let deleted_name = super::schema::DELETED_COLUMN;
    let exact = Column::ALL.iter().all(|c| {
        batch
            .column_by_name(c.name())
            .is_none_or(|a| *a.data_type() == c.data_type())
    }) && batch
        .column_by_name(deleted_name)
        .is_none_or(|a| *a.data_type() == DataType::Boolean)
        && batch
            .column_by_name(Column::Cid.name())
            .is_some_and(|a| a.null_count() == 0);
    if !exact {
        let rows = from_batch(batch)?;
        let refs: Vec<&CatalogEntry> = rows
            .iter()
            .filter(|(e, d)| !d && !shadow.contains(&e.key) && query.matches(e))
            .map(|(e, _)| e)
            .collect();
        return if refs.is_empty() {
            Ok(None)
        } else {
            to_batch(&refs, &cols).map(Some)
        };
    }
    let default = CatalogEntry::bare(
        Key::new(&[0]).map_err(|e| Error::Internal(e.message()))?,
        0,
        0,
    );
    // Filters on columns this file lacks are constant over it.
    let mut on_arrays: Vec<(&Filter, &dyn Array)> = Vec::new();
    for f in &query.filters {
        match batch.column_by_name(f.column.name()) {
            Some(a) => on_arrays.push((f, a.as_ref())),
            None if f.matches(&default) => {}
            None => return Ok(None),
        }
    }
    let bad = |what: &str| Error::Corrupt(format!("catalog file: {what}"));
    let cid = batch
        .column_by_name(Column::Cid.name())
        .and_then(|a| a.as_binary_opt::<i32>())
        .ok_or_else(|| bad("no binary cid column"))?;
    let deleted = match batch.column_by_name(deleted_name) {
        Some(a) => Some(
            a.as_boolean_opt()
                .ok_or_else(|| bad("_deleted is not boolean"))?,
        ),
        None => None,
    };
    let tiers = match batch.column_by_name(Column::StorageTier.name()) {
        Some(a) => Some(
            a.as_string_opt::<i32>()
                .ok_or_else(|| bad("storage_tier is not a string"))?,
        ),
        None => None,
    };
    let n = batch.num_rows();
    let mut mask = Vec::with_capacity(n);
    for i in 0..n {
        let k = cid.value(i);
        if k.is_empty() || k.len() > crate::key::MAX_KEY_LEN {
            return Err(Error::Corrupt(format!(
                "catalog row {i} has an invalid cid"
            )));
        }
        if let Some(t) = tiers.filter(|t| t.is_valid(i)) {
            t.value(i)
                .parse::<StorageTier>()
                .map_err(|e| Error::Corrupt(format!("catalog row {i}: {e}")))?;
        }
        let keep = !deleted.is_some_and(|d| d.is_valid(i) && d.value(i))
            && (shadow.is_empty() || Key::new(k).is_ok_and(|k| !shadow.contains(&k)))
            && on_arrays
                .iter()
                .all(|(f, a)| f.matches_field(&array_field(f.column, *a, i, &default)));
        mask.push(keep);
    }
    let filtered =
        arrow_select::filter::filter_record_batch(batch, &arrow_array::BooleanArray::from(mask))?;
    let m = filtered.num_rows();
    if m == 0 {
        return Ok(None);
    }
    let defaults: Vec<&CatalogEntry> = vec![&default; m];
    let arrays = cols
        .iter()
        .map(|c| match filtered.column_by_name(c.name()) {
            Some(a) => a.clone(),
            None => super::schema::build_columns(&defaults, &[*c]).remove(0),
        })
        .collect::<Vec<_>>();
    Ok(Some(RecordBatch::try_new(output_schema(query), arrays)?))
}

/// Reads the rows of `f` that may match `query` (pruned), plus all its keys when `want_keys`.
fn scan_file(
    f: &FileRef,
    query: &Query,
    rep: &mut ScanReport,
    want_keys: bool,
) -> Result<(Vec<RecordBatch>, Vec<Key>)> {
    let path = &f.path;
    let opts = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Optional);
    let builder = persist::open_checked(path, opts)?;
    let meta = builder.metadata().clone();
    let leaves: Vec<String> = builder
        .parquet_schema()
        .columns()
        .iter()
        .map(|c| c.path().string())
        .collect();
    let leaf = |c: Column| leaves.iter().position(|p| p == c.name());
    let num_rg = meta.num_row_groups();
    rep.row_groups += num_rg;
    let mut keep = Vec::new();
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut total = 0usize;
    for rg in 0..num_rg {
        let rg_rows = meta.row_group(rg).num_rows().max(0) as usize;
        let mut rg_ranges: Vec<Range<usize>> = std::iter::once(0..rg_rows).collect();
        let mut pruned = false;
        for flt in &query.filters {
            let Some(ci) = leaf(flt.column) else { continue };
            if let Some(st) = meta.row_group(rg).column(ci).statistics() {
                if !stats_may_match(flt, st, rg_rows) {
                    pruned = true;
                    break;
                }
            }
            if let Some(pr) = page_ranges(&meta, rg, ci, flt, rg_rows) {
                rg_ranges = intersect(&rg_ranges, &pr);
            }
        }
        if !pruned {
            pruned = bloom_excludes(&builder, rg, &query.filters, leaf(Column::Cid));
        }
        if pruned || rg_ranges.is_empty() {
            rep.row_groups_pruned += usize::from(pruned);
            continue;
        }
        keep.push(rg);
        ranges.extend(
            rg_ranges
                .into_iter()
                .map(|r| r.start + total..r.end + total),
        );
        total += rg_rows;
    }
    let mut rows = Vec::new();
    if !keep.is_empty() {
        let sel = RowSelection::from_consecutive_ranges(ranges.into_iter(), total);
        // Decode only the columns the filters and the projection need (plus the key, the
        // tombstone flag and the tier, which is validated); the others are never looked at.
        let mut needed: Vec<&str> = vec![
            Column::Cid.name(),
            super::schema::DELETED_COLUMN,
            Column::StorageTier.name(),
        ];
        needed.extend(query.filters.iter().map(|f| f.column.name()));
        needed.extend(query.columns().iter().map(|c| c.name()));
        let mask = ProjectionMask::columns(builder.parquet_schema(), needed);
        let reader = builder
            .with_projection(mask)
            .with_row_groups(keep)
            .with_row_selection(sel)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| persist::pq_err("open", path, e))?;
        for b in reader {
            let b = b.map_err(|e| persist::pq_err("decode", path, e))?;
            rep.rows_decoded += b.num_rows();
            rows.push(b);
        }
    }
    let mut keys = Vec::new();
    if want_keys {
        let kb = persist::open_checked(path, ArrowReaderOptions::new())?;
        let mask = ProjectionMask::columns(kb.parquet_schema(), ["cid"]);
        let reader = kb
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(|e| persist::pq_err("open", path, e))?;
        for b in reader {
            let b = b.map_err(|e| persist::pq_err("decode", path, e))?;
            let Some(a) = b
                .column_by_name("cid")
                .and_then(|a| a.as_binary_opt::<i32>())
            else {
                return Err(Error::Corrupt(format!(
                    "{}: no binary cid column",
                    path.display()
                )));
            };
            for i in 0..a.len() {
                if a.is_valid(i) {
                    if let Ok(k) = Key::new(a.value(i)) {
                        keys.push(k);
                    }
                }
            }
        }
    }
    Ok((rows, keys))
}

/// True when the `cid` bloom filter of row group `rg` proves that no `cid =` / `cid in`
/// filter value is present (a missing or unreadable filter proves nothing).
fn bloom_excludes<T: parquet::file::reader::ChunkReader + 'static>(
    builder: &ParquetRecordBatchReaderBuilder<T>,
    rg: usize,
    filters: &[Filter],
    cid_leaf: Option<usize>,
) -> bool {
    let Some(ci) = cid_leaf else { return false };
    let wanted: Vec<&[u8]> = filters
        .iter()
        .filter(|f| f.column == Column::Cid)
        .filter_map(|f| match (&f.op, &f.value) {
            (CmpOp::Eq, Literal::Bytes(b)) => Some(vec![b.as_slice()]),
            (CmpOp::In, Literal::List(items)) => Some(
                items
                    .iter()
                    .filter_map(|l| match l {
                        Literal::Bytes(b) => Some(b.as_slice()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        })
        .next()
        .unwrap_or_default();
    if wanted.is_empty() {
        return false;
    }
    match builder.get_row_group_column_bloom_filter(rg, ci) {
        Ok(Some(sbbf)) => !wanted.iter().any(|v| sbbf.check(*v)),
        _ => false,
    }
}

/// A bound from statistics, typed for comparison with a literal.
enum Bound<'a> {
    U(u64),
    I(i64),
    F(f64),
    B(bool),
    Bytes(&'a [u8]),
}

fn cmp_bound(b: &Bound<'_>, l: &Literal) -> Option<Ordering> {
    match (b, l) {
        (Bound::U(a), Literal::UInt(v)) => Some(a.cmp(v)),
        (Bound::I(a), Literal::Int(v)) => Some(a.cmp(v)),
        (Bound::F(a), Literal::Float(v)) => a.partial_cmp(v),
        (Bound::B(a), Literal::Bool(v)) => Some(a.cmp(v)),
        (Bound::Bytes(a), Literal::Bytes(v)) => Some((*a).cmp(v.as_slice())),
        (Bound::Bytes(a), Literal::Str(v)) => Some((*a).cmp(v.as_bytes())),
        _ => None,
    }
}

fn int_bound(c: Column, v: i64) -> Bound<'static> {
    match kind(c) {
        Kind::UInt => Bound::U(v as u64),
        _ => Bound::I(v),
    }
}

/// Whether a chunk/page with `[min, max]` and `nulls` null values out of `rows` may hold a
/// row matching `f`. Unknown bounds or types answer true (never prunes wrongly).
fn range_may_match(
    f: &Filter,
    min: Option<Bound<'_>>,
    max: Option<Bound<'_>>,
    nulls: Option<u64>,
    rows: usize,
) -> bool {
    match f.op {
        CmpOp::IsNull => return nulls.is_none_or(|n| n > 0),
        CmpOp::IsNotNull => return nulls.is_none_or(|n| (n as usize) < rows),
        _ => {}
    }
    if nulls.is_some_and(|n| n as usize >= rows) && rows > 0 {
        return false; // all null: only `is null` matches
    }
    let (Some(min), Some(max)) = (min, max) else {
        return true;
    };
    let lo = |l: &Literal| cmp_bound(&min, l);
    let hi = |l: &Literal| cmp_bound(&max, l);
    let eq = |l: &Literal| {
        !matches!(lo(l), Some(Ordering::Greater)) && !matches!(hi(l), Some(Ordering::Less))
    };
    match f.op {
        CmpOp::Eq => eq(&f.value),
        CmpOp::In => match &f.value {
            Literal::List(items) => items.iter().any(eq),
            _ => true,
        },
        CmpOp::Lt => !matches!(lo(&f.value), Some(Ordering::Greater | Ordering::Equal)),
        CmpOp::Le => !matches!(lo(&f.value), Some(Ordering::Greater)),
        CmpOp::Gt => !matches!(hi(&f.value), Some(Ordering::Less | Ordering::Equal)),
        CmpOp::Ge => !matches!(hi(&f.value), Some(Ordering::Less)),
        CmpOp::Prefix => {
            let p: &[u8] = match &f.value {
                Literal::Str(s) => s.as_bytes(),
                Literal::Bytes(b) => b,
                _ => return true,
            };
            match (&min, &max) {
                (Bound::Bytes(mn), Bound::Bytes(mx)) => {
                    // Some value in [mn, mx] starts with p.
                    (*mx >= p || mx.starts_with(p)) && (*mn <= p || mn.starts_with(p))
                }
                _ => true,
            }
        }
        _ => true,
    }
}

fn stats_may_match(f: &Filter, st: &Statistics, rows: usize) -> bool {
    let c = f.column;
    let nulls = st.null_count_opt();
    match st {
        Statistics::Int64(s) => range_may_match(
            f,
            s.min_opt().map(|v| int_bound(c, *v)),
            s.max_opt().map(|v| int_bound(c, *v)),
            nulls,
            rows,
        ),
        Statistics::Int32(s) => range_may_match(
            f,
            s.min_opt().map(|v| int_bound(c, i64::from(*v))),
            s.max_opt().map(|v| int_bound(c, i64::from(*v))),
            nulls,
            rows,
        ),
        Statistics::Double(s) => range_may_match(
            f,
            s.min_opt().map(|v| Bound::F(*v)),
            s.max_opt().map(|v| Bound::F(*v)),
            nulls,
            rows,
        ),
        Statistics::Boolean(s) => range_may_match(
            f,
            s.min_opt().map(|v| Bound::B(*v)),
            s.max_opt().map(|v| Bound::B(*v)),
            nulls,
            rows,
        ),
        Statistics::ByteArray(s) => range_may_match(
            f,
            s.min_opt().map(|v| Bound::Bytes(v.data())),
            s.max_opt().map(|v| Bound::Bytes(v.data())),
            nulls,
            rows,
        ),
        _ => true,
    }
}

/// Row ranges (within row group `rg`) of the pages of leaf `ci` that may match `f`, or `None`
/// when there is no usable page index.
fn page_ranges(
    meta: &ParquetMetaData,
    rg: usize,
    ci: usize,
    f: &Filter,
    rg_rows: usize,
) -> Option<Vec<Range<usize>>> {
    let pi = meta.page_index_for_row_group(rg);
    let ci_meta = pi.column_index(ci)?;
    let locs = pi.offset_index(ci)?.page_locations();
    let n = locs.len();
    if n == 0 || ci_meta.num_pages() as usize != n {
        return None;
    }
    let c = f.column;
    let mut out: Vec<Range<usize>> = Vec::new();
    for p in 0..n {
        let start = locs[p].first_row_index.max(0) as usize;
        let end = if p + 1 < n {
            locs[p + 1].first_row_index.max(0) as usize
        } else {
            rg_rows
        };
        let rows = end.saturating_sub(start);
        let nulls = ci_meta.null_count(p).map(|v| v.max(0) as u64);
        let may = if ci_meta.is_null_page(p) {
            range_may_match(f, None, None, Some(rows as u64), rows)
        } else {
            match ci_meta {
                ColumnIndexMetaData::INT64(x) => range_may_match(
                    f,
                    x.min_value(p).map(|v| int_bound(c, *v)),
                    x.max_value(p).map(|v| int_bound(c, *v)),
                    nulls,
                    rows,
                ),
                ColumnIndexMetaData::INT32(x) => range_may_match(
                    f,
                    x.min_value(p).map(|v| int_bound(c, i64::from(*v))),
                    x.max_value(p).map(|v| int_bound(c, i64::from(*v))),
                    nulls,
                    rows,
                ),
                ColumnIndexMetaData::DOUBLE(x) => range_may_match(
                    f,
                    x.min_value(p).map(|v| Bound::F(*v)),
                    x.max_value(p).map(|v| Bound::F(*v)),
                    nulls,
                    rows,
                ),
                ColumnIndexMetaData::BOOLEAN(x) => range_may_match(
                    f,
                    x.min_value(p).map(|v| Bound::B(*v)),
                    x.max_value(p).map(|v| Bound::B(*v)),
                    nulls,
                    rows,
                ),
                ColumnIndexMetaData::BYTE_ARRAY(x) => range_may_match(
                    f,
                    x.min_value(p).map(Bound::Bytes),
                    x.max_value(p).map(Bound::Bytes),
                    nulls,
                    rows,
                ),
                _ => true,
            }
        };
        if may && rows > 0 {
            match out.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => out.push(start..end),
            }
        }
    }
    Some(out)
}

fn intersect(a: &[Range<usize>], b: &[Range<usize>]) -> Vec<Range<usize>> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        let s = a[i].start.max(b[j].start);
        let e = a[i].end.min(b[j].end);
        if s < e {
            out.push(s..e);
        }
        if a[i].end < b[j].end {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Output writers

fn fmt_ts(us: i64) -> String {
    let days = us.div_euclid(86_400_000_000);
    let rem = us.rem_euclid(86_400_000_000);
    let (y, m, d) = super::partition::civil_from_days(days);
    let secs = rem / 1_000_000;
    let frac = rem % 1_000_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn cell(a: &dyn Array, name: &str, i: usize) -> String {
    if a.is_null(i) {
        return String::new();
    }
    match a.data_type() {
        DataType::Binary => {
            let v = a.as_binary::<i32>().value(i);
            if name == "cid" {
                crate::cid::format_key(v)
            } else {
                v.iter().map(|b| format!("{b:02x}")).collect()
            }
        }
        DataType::Utf8 => a.as_string::<i32>().value(i).to_string(),
        DataType::UInt64 => a.as_primitive::<UInt64Type>().value(i).to_string(),
        DataType::UInt8 => a.as_primitive::<UInt8Type>().value(i).to_string(),
        DataType::Float64 => format!("{:.4}", a.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => a.as_boolean().value(i).to_string(),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            fmt_ts(a.as_primitive::<TimestampMicrosecondType>().value(i))
        }
        DataType::Map(_, _) => {
            let e = a.as_map().value(i);
            let (Some(k), Some(v)) = (
                e.column(0).as_string_opt::<i32>(),
                e.column(1).as_string_opt::<i32>(),
            ) else {
                return format!("<{}>", a.data_type());
            };
            let parts: Vec<String> = (0..e.len())
                .map(|j| {
                    let val = if v.is_valid(j) { v.value(j) } else { "" };
                    format!("{}={val}", k.value(j))
                })
                .collect();
            format!("{{{}}}", parts.join(", "))
        }
        other => format!("<{other}>"),
    }
}

/// Formats batches as an aligned text table (header, separator, one line per row); cells
/// longer than 64 characters are cut with `…`; nulls are empty; `cid` shows as text CID.
pub fn format_table(batches: &[RecordBatch]) -> String {
    let Some(first) = batches.first() else {
        return "(no rows)\n".to_string();
    };
    let schema = first.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for b in batches {
        for i in 0..b.num_rows() {
            rows.push(
                b.columns()
                    .iter()
                    .zip(&names)
                    .map(|(a, n)| {
                        let s = cell(a.as_ref(), n, i);
                        if s.chars().count() > 64 {
                            let mut t: String = s.chars().take(63).collect();
                            t.push('…');
                            t
                        } else {
                            s
                        }
                    })
                    .collect(),
            );
        }
    }
    let mut w: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for r in &rows {
        for (j, c) in r.iter().enumerate() {
            w[j] = w[j].max(c.chars().count());
        }
    }
    let line = |cells: &[&str]| -> String {
        let mut s = String::new();
        for (j, c) in cells.iter().enumerate() {
            if j > 0 {
                s.push_str(" | ");
            }
            s.push_str(c);
            if j + 1 < cells.len() {
                s.extend(std::iter::repeat_n(' ', w[j] - c.chars().count()));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(&names);
    let sep: Vec<String> = w.iter().map(|&n| "-".repeat(n)).collect();
    out.push_str(&line(&sep.iter().map(String::as_str).collect::<Vec<_>>()));
    for r in &rows {
        out.push_str(&line(&r.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out.push_str(&format!("({} rows)\n", rows.len()));
    out
}

/// Writes batches (all of `schema`) as an Arrow IPC file to `w`.
pub fn write_ipc<W: Write>(w: W, schema: &SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let mut fw = arrow_ipc::writer::FileWriter::try_new(w, schema)?;
    for b in batches {
        fw.write(b)?;
    }
    fw.finish()?;
    Ok(())
}

/// Writes batches (all of `schema`) as a Parquet file to `w` with the catalog encodings of
/// `preset`.
pub fn write_parquet<W: Write + Send>(
    w: W,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    preset: Preset,
) -> Result<()> {
    let rows = batches.iter().map(|b| b.num_rows()).sum();
    let mut pw = ArrowWriter::try_new(w, schema.clone(), Some(writer_properties(preset, rows)))
        .map_err(|e| Error::Arrow(format!("start writing parquet: {e}")))?;
    for b in batches {
        pw.write(b)
            .map_err(|e| Error::Arrow(format!("write parquet: {e}")))?;
    }
    pw.close()
        .map_err(|e| Error::Arrow(format!("finish parquet: {e}")))?;
    Ok(())
}

/// Output format of `cidcache query` (CLI values `table`, `ipc` / `arrow`, `parquet`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Aligned text table ([`format_table`]).
    #[default]
    Table,
    /// Arrow IPC file ([`write_ipc`]).
    Ipc,
    /// Parquet file ([`write_parquet`], balanced preset).
    Parquet,
}

impl FromStr for OutputFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "table" | "text" => Ok(OutputFormat::Table),
            "ipc" | "arrow" | "feather" => Ok(OutputFormat::Ipc),
            "parquet" => Ok(OutputFormat::Parquet),
            other => Err(Error::InvalidArgument(format!(
                "unknown output format {other:?}; expected table, ipc or parquet"
            ))),
        }
    }
}

/// Writes query results to `w` in `format`. `schema` is used when `batches` is empty (an
/// empty IPC/Parquet file still carries the columns).
pub fn write_output<W: Write + Send>(
    mut w: W,
    format: OutputFormat,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or(schema.clone());
    match format {
        OutputFormat::Table => w
            .write_all(format_table(batches).as_bytes())
            .map_err(|e| Error::io("write query output", e)),
        OutputFormat::Ipc => write_ipc(w, &schema, batches),
        OutputFormat::Parquet => write_parquet(w, &schema, batches, Preset::Balanced),
    }
}

/// The schema of a query's output (the projected catalog columns).
pub fn output_schema(query: &Query) -> SchemaRef {
    std::sync::Arc::new(arrow_schema::Schema::new(
        query
            .columns()
            .iter()
            .map(|c| c.field())
            .collect::<Vec<_>>(),
    ))
}
