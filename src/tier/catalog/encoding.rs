//! Per-column encodings and compression: the named presets and the Parquet writer properties
//! they produce.
//!
//! Every preset uses the same encodings (they are chosen for the data, not for speed):
//! - dictionary for the low-cardinality strings `mimetype`, `storage_tier`, `source`,
//!   `multihash_type` (and `properties`, whose keys repeat);
//! - `DELTA_BINARY_PACKED` for the timestamps `added_at`, `last_accessed` and the integers
//!   `size_bytes`, `access_count` (dictionary off so the encoding applies);
//! - `RLE` for the booleans `is_pinned`, `valid`, `_deleted`;
//! - `DELTA_BYTE_ARRAY` for `filename` (shared prefixes); `BYTE_STREAM_SPLIT` for
//!   `heat_score`; `PLAIN` for `cid` (hashes do not repeat), with a Parquet bloom filter;
//! - page-level statistics on every column and the page index (column + offset index) written.
//!
//! Presets differ in compression: `fast` = LZ4 (raw) on everything but `cid` (uncompressed),
//! `balanced` = zstd level 1, `small` = zstd level 9 and larger pages.

use crate::error::{Error, Result};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::schema::types::ColumnPath;
use std::fmt;
use std::str::FromStr;

use super::schema::{Column, DELETED_COLUMN, SCHEMA_VERSION};

/// Named encoding/compression preset for catalog files, chosen per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Preset {
    /// LZ4 (raw); `cid` uncompressed. Fastest to write and read.
    Fast,
    /// zstd level 1 (the default).
    #[default]
    Balanced,
    /// zstd level 9, larger pages: smallest files, slowest writes.
    Small,
}

impl Preset {
    /// All presets.
    pub const ALL: [Preset; 3] = [Preset::Fast, Preset::Balanced, Preset::Small];

    /// The preset's name (`fast`, `balanced`, `small`).
    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Fast => "fast",
            Preset::Balanced => "balanced",
            Preset::Small => "small",
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Preset {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "fast" => Ok(Preset::Fast),
            "balanced" => Ok(Preset::Balanced),
            "small" => Ok(Preset::Small),
            other => Err(Error::InvalidArgument(format!(
                "unknown catalog preset {other:?}; expected fast, balanced or small"
            ))),
        }
    }
}

fn path(name: &str) -> ColumnPath {
    ColumnPath::from(name)
}

/// Writer properties for a catalog file of about `rows` rows under `preset`.
pub(crate) fn writer_properties(preset: Preset, rows: usize) -> WriterProperties {
    let compression = match preset {
        Preset::Fast => Compression::LZ4_RAW,
        Preset::Balanced => Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()),
        Preset::Small => Compression::ZSTD(ZstdLevel::try_new(9).unwrap_or_default()),
    };
    let page_rows = match preset {
        Preset::Small => 16 * 1024,
        _ => 4 * 1024,
    };
    let mut b = WriterProperties::builder()
        .set_writer_version(WriterVersion::PARQUET_2_0)
        .set_compression(compression)
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_data_page_row_count_limit(page_rows)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_key_value_metadata(Some(vec![KeyValue::new(
            "cidcache.catalog.schema_version".to_string(),
            SCHEMA_VERSION.to_string(),
        )]));
    // cid: plain, bloom filter sized for the file.
    let cid = path(Column::Cid.name());
    b = b
        .set_column_dictionary_enabled(cid.clone(), false)
        .set_column_encoding(cid.clone(), Encoding::PLAIN)
        .set_column_bloom_filter_enabled(cid.clone(), true)
        .set_column_bloom_filter_fpp(cid.clone(), 0.01)
        .set_column_bloom_filter_max_ndv(cid.clone(), rows.max(1) as u64);
    if preset == Preset::Fast {
        b = b.set_column_compression(cid, Compression::UNCOMPRESSED);
    }
    for c in [
        Column::Mimetype,
        Column::StorageTier,
        Column::Source,
        Column::MultihashType,
    ] {
        b = b.set_column_dictionary_enabled(path(c.name()), true);
    }
    for c in [
        Column::AddedAt,
        Column::LastAccessed,
        Column::SizeBytes,
        Column::AccessCount,
    ] {
        b = b
            .set_column_dictionary_enabled(path(c.name()), false)
            .set_column_encoding(path(c.name()), Encoding::DELTA_BINARY_PACKED);
    }
    for name in [
        Column::IsPinned.name(),
        Column::Valid.name(),
        DELETED_COLUMN,
    ] {
        b = b
            .set_column_dictionary_enabled(path(name), false)
            .set_column_encoding(path(name), Encoding::RLE);
    }
    let fname = path(Column::Filename.name());
    b = b
        .set_column_dictionary_enabled(fname.clone(), false)
        .set_column_encoding(fname, Encoding::DELTA_BYTE_ARRAY);
    let heat = path(Column::HeatScore.name());
    b = b
        .set_column_dictionary_enabled(heat.clone(), false)
        .set_column_encoding(heat, Encoding::BYTE_STREAM_SPLIT);
    b.build()
}
