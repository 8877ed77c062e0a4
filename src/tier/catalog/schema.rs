//! The catalog data model: [`CatalogEntry`], [`StorageTier`], the column list and the Arrow
//! schema, and conversion between entries and Arrow record batches (with schema evolution on
//! the way in: missing columns get their defaults).

use crate::error::{Error, Result};
use crate::key::Key;
use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, MapBuilder, MapFieldNames, StringBuilder,
    TimestampMicrosecondBuilder, UInt8Builder,
};
use arrow_array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Float64Array, MapArray, RecordBatch, StringArray,
    TimestampMicrosecondArray, UInt64Array, UInt8Array,
};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

/// Version of the catalog schema written into every file's key-value metadata
/// (`cidcache.catalog.schema_version`). Version 1 is the column list of [`Column::ALL`].
pub const SCHEMA_VERSION: u32 = 1;

/// Name of the persistence-only column that marks a tombstone row (a deleted key).
pub(crate) const DELETED_COLUMN: &str = "_deleted";

/// Which tier holds an object's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum StorageTier {
    /// Shared memory.
    Hot,
    /// Parquet files in the data directory.
    Warm,
    /// Object storage / IPFS (later).
    Cold,
    /// No tier holds the bytes (metadata only).
    #[default]
    None,
}

impl StorageTier {
    /// The lower-case name used in files, filters and output.
    pub fn as_str(self) -> &'static str {
        match self {
            StorageTier::Hot => "hot",
            StorageTier::Warm => "warm",
            StorageTier::Cold => "cold",
            StorageTier::None => "none",
        }
    }
}

impl fmt::Display for StorageTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StorageTier {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hot" => Ok(StorageTier::Hot),
            "warm" => Ok(StorageTier::Warm),
            "cold" => Ok(StorageTier::Cold),
            "none" | "" => Ok(StorageTier::None),
            other => Err(Error::InvalidArgument(format!(
                "unknown storage tier {other:?}; expected one of hot, warm, cold, none"
            ))),
        }
    }
}

/// The metadata the catalog keeps for one key.
///
/// Timestamps are microseconds since the Unix epoch (UTC). Optional strings that are `None`
/// cost no allocation; an empty `properties` list is stored as a null map.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogEntry {
    /// The key (binary CID or any 1..=63-byte key).
    pub key: Key,
    /// Size of the object's data in bytes.
    pub size_bytes: u64,
    /// MIME type, e.g. `image/png`.
    pub mimetype: Option<String>,
    /// Original file name, if known.
    pub filename: Option<String>,
    /// The tier that holds the bytes.
    pub storage_tier: StorageTier,
    /// Whether the object is pinned (never evicted).
    pub is_pinned: bool,
    /// When the key was added (µs since epoch).
    pub added_at: i64,
    /// Last access (µs since epoch).
    pub last_accessed: i64,
    /// Number of recorded accesses.
    pub access_count: u64,
    /// Exponentially decayed access rate (see [`crate::tier::catalog::Catalog::touch`]).
    pub heat_score: f64,
    /// Where the object came from (e.g. `put`, `ipfs`, `plasma`).
    pub source: Option<String>,
    /// CID version (0 or 1) when the key is a CID.
    pub cid_version: Option<u8>,
    /// Multihash name (e.g. `sha2-256`) when the key is a CID.
    pub multihash_type: Option<String>,
    /// Whether the data is known good (e.g. verified against its CID).
    pub valid: bool,
    /// Free-form string properties, in insertion order.
    pub properties: Vec<(String, String)>,
}

impl CatalogEntry {
    /// A new entry for `key` of `size_bytes`, added (and last accessed) at `now_us`, in tier
    /// `none`, valid, with no access recorded. `cid_version` and `multihash_type` are filled
    /// from the key when it parses as a CID (see [`CatalogEntry::with_cid_info`]).
    pub fn new(key: Key, size_bytes: u64, now_us: i64) -> CatalogEntry {
        CatalogEntry::bare(key, size_bytes, now_us).with_cid_info()
    }

    /// Like [`CatalogEntry::new`] but without parsing the key (cheapest; CID fields `None`).
    pub fn bare(key: Key, size_bytes: u64, now_us: i64) -> CatalogEntry {
        CatalogEntry {
            key,
            size_bytes,
            mimetype: None,
            filename: None,
            storage_tier: StorageTier::None,
            is_pinned: false,
            added_at: now_us,
            last_accessed: now_us,
            access_count: 0,
            heat_score: 0.0,
            source: None,
            cid_version: None,
            multihash_type: None,
            valid: true,
            properties: Vec::new(),
        }
    }

    /// Fills `cid_version` and `multihash_type` from the key when the whole key is a CID.
    pub fn with_cid_info(mut self) -> CatalogEntry {
        if let Ok(c) = cid::Cid::try_from(self.key.as_bytes()) {
            if c.encoded_len() == self.key.as_bytes().len() {
                self.cid_version = Some(match c.version() {
                    cid::Version::V0 => 0,
                    cid::Version::V1 => 1,
                });
                self.multihash_type = Some(multihash_name(c.hash().code()));
            }
        }
        self
    }
}

fn multihash_name(code: u64) -> String {
    match code {
        0x00 => "identity".into(),
        0x11 => "sha1".into(),
        0x12 => "sha2-256".into(),
        0x13 => "sha2-512".into(),
        0x16 => "sha3-256".into(),
        0x1b => "keccak-256".into(),
        0x1e => "blake3".into(),
        0xb220 => "blake2b-256".into(),
        other => format!("0x{other:x}"),
    }
}

/// The catalog columns, in schema order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Column {
    /// `cid`: Binary, not null.
    Cid,
    /// `size_bytes`: UInt64.
    SizeBytes,
    /// `mimetype`: Utf8, nullable.
    Mimetype,
    /// `filename`: Utf8, nullable.
    Filename,
    /// `storage_tier`: Utf8 (`hot`, `warm`, `cold`, `none`).
    StorageTier,
    /// `is_pinned`: Boolean.
    IsPinned,
    /// `added_at`: Timestamp(µs, UTC).
    AddedAt,
    /// `last_accessed`: Timestamp(µs, UTC).
    LastAccessed,
    /// `access_count`: UInt64.
    AccessCount,
    /// `heat_score`: Float64.
    HeatScore,
    /// `source`: Utf8, nullable.
    Source,
    /// `cid_version`: UInt8, nullable.
    CidVersion,
    /// `multihash_type`: Utf8, nullable.
    MultihashType,
    /// `valid`: Boolean.
    Valid,
    /// `properties`: Map<Utf8, Utf8>, nullable.
    Properties,
}

impl Column {
    /// All columns in schema order.
    pub const ALL: [Column; 15] = [
        Column::Cid,
        Column::SizeBytes,
        Column::Mimetype,
        Column::Filename,
        Column::StorageTier,
        Column::IsPinned,
        Column::AddedAt,
        Column::LastAccessed,
        Column::AccessCount,
        Column::HeatScore,
        Column::Source,
        Column::CidVersion,
        Column::MultihashType,
        Column::Valid,
        Column::Properties,
    ];

    /// The column name in files, filters and output.
    pub fn name(self) -> &'static str {
        match self {
            Column::Cid => "cid",
            Column::SizeBytes => "size_bytes",
            Column::Mimetype => "mimetype",
            Column::Filename => "filename",
            Column::StorageTier => "storage_tier",
            Column::IsPinned => "is_pinned",
            Column::AddedAt => "added_at",
            Column::LastAccessed => "last_accessed",
            Column::AccessCount => "access_count",
            Column::HeatScore => "heat_score",
            Column::Source => "source",
            Column::CidVersion => "cid_version",
            Column::MultihashType => "multihash_type",
            Column::Valid => "valid",
            Column::Properties => "properties",
        }
    }

    /// Position in [`catalog_schema`].
    pub fn index(self) -> usize {
        Column::ALL.iter().position(|c| *c == self).unwrap_or(0)
    }

    /// The comma-separated list of column names (for error messages).
    pub fn names() -> String {
        Column::ALL.map(|c| c.name()).join(", ")
    }

    /// The Arrow data type of this column.
    pub fn data_type(self) -> DataType {
        match self {
            Column::Cid => DataType::Binary,
            Column::SizeBytes | Column::AccessCount => DataType::UInt64,
            Column::Mimetype
            | Column::Filename
            | Column::StorageTier
            | Column::Source
            | Column::MultihashType => DataType::Utf8,
            Column::IsPinned | Column::Valid => DataType::Boolean,
            Column::AddedAt | Column::LastAccessed => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            Column::HeatScore => DataType::Float64,
            Column::CidVersion => DataType::UInt8,
            Column::Properties => properties_type(),
        }
    }

    pub(crate) fn nullable(self) -> bool {
        matches!(
            self,
            Column::Mimetype
                | Column::Filename
                | Column::Source
                | Column::CidVersion
                | Column::MultihashType
                | Column::Properties
        )
    }

    /// The Arrow field of this column.
    pub fn field(self) -> Field {
        Field::new(self.name(), self.data_type(), self.nullable())
    }
}

impl FromStr for Column {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        Column::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "unknown catalog column {s:?}; columns are: {}",
                    Column::names()
                ))
            })
    }
}

fn properties_type() -> DataType {
    DataType::Map(
        Arc::new(Field::new(
            "entries",
            DataType::Struct(Fields::from(vec![
                Field::new("keys", DataType::Utf8, false),
                Field::new("values", DataType::Utf8, true),
            ])),
            false,
        )),
        false,
    )
}

/// The Arrow schema of the catalog (the columns of [`Column::ALL`]), shared.
pub fn catalog_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| Arc::new(Schema::new(Column::ALL.map(|c| c.field()).to_vec())))
        .clone()
}

/// The on-disk schema: the catalog schema plus the `_deleted` tombstone flag.
pub(crate) fn file_schema() -> SchemaRef {
    static S: OnceLock<SchemaRef> = OnceLock::new();
    S.get_or_init(|| {
        let mut fields: Vec<Field> = Column::ALL.map(|c| c.field()).to_vec();
        fields.push(Field::new(DELETED_COLUMN, DataType::Boolean, false));
        Arc::new(Schema::new(fields))
    })
    .clone()
}

/// Builds the column arrays for `entries` (in order), for the given columns.
pub(crate) fn build_columns(entries: &[&CatalogEntry], columns: &[Column]) -> Vec<ArrayRef> {
    let n = entries.len();
    columns
        .iter()
        .map(|col| -> ArrayRef {
            match col {
                Column::Cid => {
                    let mut b = BinaryBuilder::with_capacity(n, n * 36);
                    for e in entries {
                        b.append_value(e.key.as_bytes());
                    }
                    Arc::new(b.finish())
                }
                Column::SizeBytes => Arc::new(UInt64Array::from_iter_values(
                    entries.iter().map(|e| e.size_bytes),
                )),
                Column::AccessCount => Arc::new(UInt64Array::from_iter_values(
                    entries.iter().map(|e| e.access_count),
                )),
                Column::Mimetype => str_col(entries, |e| e.mimetype.as_deref()),
                Column::Filename => str_col(entries, |e| e.filename.as_deref()),
                Column::Source => str_col(entries, |e| e.source.as_deref()),
                Column::MultihashType => str_col(entries, |e| e.multihash_type.as_deref()),
                Column::StorageTier => str_col(entries, |e| Some(e.storage_tier.as_str())),
                Column::IsPinned => {
                    let mut b = BooleanBuilder::with_capacity(n);
                    for e in entries {
                        b.append_value(e.is_pinned);
                    }
                    Arc::new(b.finish())
                }
                Column::Valid => {
                    let mut b = BooleanBuilder::with_capacity(n);
                    for e in entries {
                        b.append_value(e.valid);
                    }
                    Arc::new(b.finish())
                }
                Column::AddedAt => ts_col(entries, |e| e.added_at),
                Column::LastAccessed => ts_col(entries, |e| e.last_accessed),
                Column::HeatScore => Arc::new(Float64Array::from_iter_values(
                    entries.iter().map(|e| e.heat_score),
                )),
                Column::CidVersion => {
                    let mut b = UInt8Builder::with_capacity(n);
                    for e in entries {
                        b.append_option(e.cid_version);
                    }
                    Arc::new(b.finish())
                }
                Column::Properties => {
                    let mut b = MapBuilder::new(
                        Some(MapFieldNames {
                            entry: "entries".into(),
                            key: "keys".into(),
                            value: "values".into(),
                        }),
                        StringBuilder::new(),
                        StringBuilder::new(),
                    );
                    for e in entries {
                        for (k, v) in &e.properties {
                            b.keys().append_value(k);
                            b.values().append_value(v);
                        }
                        // Cannot fail: keys and values were appended in pairs.
                        let _ = b.append(!e.properties.is_empty());
                    }
                    Arc::new(b.finish())
                }
            }
        })
        .collect()
}

fn str_col<'a>(
    entries: &[&'a CatalogEntry],
    f: impl Fn(&'a CatalogEntry) -> Option<&'a str>,
) -> ArrayRef {
    let mut b = StringBuilder::with_capacity(entries.len(), entries.len() * 8);
    for e in entries {
        b.append_option(f(e));
    }
    Arc::new(b.finish())
}

fn ts_col(entries: &[&CatalogEntry], f: impl Fn(&CatalogEntry) -> i64) -> ArrayRef {
    let mut b = TimestampMicrosecondBuilder::with_capacity(entries.len()).with_timezone("UTC");
    for e in entries {
        b.append_value(f(e));
    }
    Arc::new(b.finish())
}

/// A record batch of `entries` with the given columns (in that order).
pub(crate) fn to_batch(entries: &[&CatalogEntry], columns: &[Column]) -> Result<RecordBatch> {
    let schema = Arc::new(Schema::new(
        columns.iter().map(|c| c.field()).collect::<Vec<_>>(),
    ));
    let arrays = build_columns(entries, columns);
    if columns.is_empty() {
        let opts = arrow_array::RecordBatchOptions::new().with_row_count(Some(entries.len()));
        return Ok(RecordBatch::try_new_with_options(schema, arrays, &opts)?);
    }
    Ok(RecordBatch::try_new(schema, arrays)?)
}

/// A batch in the on-disk schema: all columns plus `_deleted`.
pub(crate) fn to_file_batch(entries: &[&CatalogEntry], deleted: bool) -> Result<RecordBatch> {
    let mut arrays = build_columns(entries, &Column::ALL);
    arrays.push(Arc::new(BooleanArray::from(vec![deleted; entries.len()])));
    Ok(RecordBatch::try_new(file_schema(), arrays)?)
}

fn col<'a, T: 'static>(batch: &'a RecordBatch, name: &str) -> Result<Option<&'a T>> {
    let Some(a) = batch.column_by_name(name) else {
        return Ok(None);
    };
    a.as_any().downcast_ref::<T>().map(Some).ok_or_else(|| {
        Error::Corrupt(format!(
            "catalog column {name} has type {}, which this version cannot read",
            a.data_type()
        ))
    })
}

fn opt_str(a: Option<&StringArray>, i: usize) -> Option<String> {
    a.filter(|a| a.is_valid(i)).map(|a| a.value(i).to_string())
}

/// Decodes a batch of any catalog schema version into `(entry, deleted)` rows.
///
/// Schema evolution: every column except `cid` may be missing (a file from an older, smaller
/// schema); missing columns get the defaults of [`CatalogEntry::bare`] with `added_at` and
/// `last_accessed` 0, and `_deleted` false. Unknown extra columns are ignored. A column with an
/// unexpected type, a null or invalid `cid` is an error (the file is treated as corrupt).
pub(crate) fn from_batch(batch: &RecordBatch) -> Result<Vec<(CatalogEntry, bool)>> {
    let cid: &BinaryArray = col(batch, "cid")?.ok_or_else(|| {
        Error::Corrupt("catalog file has no cid column; it is not a catalog file".into())
    })?;
    let size = col::<UInt64Array>(batch, "size_bytes")?;
    let mime = col::<StringArray>(batch, "mimetype")?;
    let fname = col::<StringArray>(batch, "filename")?;
    let tier = col::<StringArray>(batch, "storage_tier")?;
    let pinned = col::<BooleanArray>(batch, "is_pinned")?;
    let added = col::<TimestampMicrosecondArray>(batch, "added_at")?;
    let last = col::<TimestampMicrosecondArray>(batch, "last_accessed")?;
    let count = col::<UInt64Array>(batch, "access_count")?;
    let heat = col::<Float64Array>(batch, "heat_score")?;
    let source = col::<StringArray>(batch, "source")?;
    let cidv = col::<UInt8Array>(batch, "cid_version")?;
    let mh = col::<StringArray>(batch, "multihash_type")?;
    let valid = col::<BooleanArray>(batch, "valid")?;
    let props = col::<MapArray>(batch, "properties")?;
    let deleted = col::<BooleanArray>(batch, DELETED_COLUMN)?;
    let (pk, pv) = match props {
        Some(m) => {
            let k = m.keys().as_any().downcast_ref::<StringArray>();
            let v = m.values().as_any().downcast_ref::<StringArray>();
            match (k, v) {
                (Some(k), Some(v)) => (Some(k), Some(v)),
                _ => {
                    return Err(Error::Arrow(
                        "catalog column properties is not a map of strings".into(),
                    ))
                }
            }
        }
        None => (None, None),
    };
    let mut out = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        if cid.is_null(i) {
            return Err(Error::Arrow(format!("catalog row {i} has a null cid")));
        }
        let key = Key::new(cid.value(i))
            .map_err(|e| Error::Arrow(format!("catalog row {i} has an invalid cid: {e}")))?;
        let mut e = CatalogEntry::bare(key, 0, 0);
        let ok = |a: Option<&dyn Array>| a.is_some_and(|a| a.is_valid(i));
        if let Some(a) = size.filter(|a| a.is_valid(i)) {
            e.size_bytes = a.value(i);
        }
        e.mimetype = opt_str(mime, i);
        e.filename = opt_str(fname, i);
        if let Some(t) = opt_str(tier, i) {
            e.storage_tier = t
                .parse()
                .map_err(|err| Error::Arrow(format!("catalog row {i}: {err}")))?;
        }
        if let Some(a) = pinned.filter(|a| a.is_valid(i)) {
            e.is_pinned = a.value(i);
        }
        if let Some(a) = added.filter(|a| a.is_valid(i)) {
            e.added_at = a.value(i);
        }
        if let Some(a) = last.filter(|a| a.is_valid(i)) {
            e.last_accessed = a.value(i);
        }
        if let Some(a) = count.filter(|a| a.is_valid(i)) {
            e.access_count = a.value(i);
        }
        if let Some(a) = heat.filter(|a| a.is_valid(i)) {
            e.heat_score = a.value(i);
        }
        e.source = opt_str(source, i);
        if let Some(a) = cidv.filter(|a| a.is_valid(i)) {
            e.cid_version = Some(a.value(i));
        }
        e.multihash_type = opt_str(mh, i);
        if let Some(a) = valid.filter(|a| a.is_valid(i)) {
            e.valid = a.value(i);
        }
        if let (Some(m), Some(k), Some(v)) = (props, pk, pv) {
            if ok(Some(m)) {
                let off = m.value_offsets();
                let (s, t) = (off[i] as usize, off[i + 1] as usize);
                for j in s..t {
                    let val = if v.is_valid(j) { v.value(j) } else { "" };
                    e.properties.push((k.value(j).to_string(), val.to_string()));
                }
            }
        }
        let del = deleted.is_some_and(|a| a.is_valid(i) && a.value(i));
        out.push((e, del));
    }
    Ok(out)
}
