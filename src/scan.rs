//! Column projection and row filters over Arrow objects ([`Scan`]).
//!
//! A scan names the columns to keep and simple predicates (`column OP literal`, ANDed). On an
//! object in shared memory the projection is zero-copy and the filter copies only the rows
//! kept. On an object in the warm tier the coordinator reads only the projected and filtered
//! columns, skips row groups whose statistics rule the predicates out and, inside the others,
//! pages whose page-index statistics do, and publishes the result in shared memory.

use crate::error::{Error, Result};
use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, BooleanArray, RecordBatch};
use arrow_schema::{DataType, Schema, SchemaRef};
use std::cmp::Ordering;
use std::sync::Arc;

/// A comparison of a predicate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=` (or `==`)
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
}

impl Op {
    fn holds(self, o: Ordering) -> bool {
        match self {
            Op::Eq => o == Ordering::Equal,
            Op::Ne => o != Ordering::Equal,
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Gt => o == Ordering::Greater,
            Op::Ge => o != Ordering::Less,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// A literal of a predicate.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// An integer (compared with integer, float, timestamp and date columns).
    Int(i64),
    /// A float.
    Float(f64),
    /// A string (compared with string and dictionary-of-string columns).
    Str(String),
    /// A boolean.
    Bool(bool),
}

/// `column OP value`: rows where the column is null never match.
#[derive(Debug, Clone, PartialEq)]
pub struct Predicate {
    /// Column name (top level).
    pub column: String,
    /// Comparison.
    pub op: Op,
    /// Literal.
    pub value: Value,
}

impl std::str::FromStr for Predicate {
    type Err = Error;
    /// Parses `col=v`, `col!=v`, `col<v`, `col<=v`, `col>v`, `col>=v`; `v` is `true`/`false`,
    /// an integer, a float, or a string (quotes optional).
    fn from_str(s: &str) -> Result<Predicate> {
        let ops = [
            ("!=", Op::Ne),
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("==", Op::Eq),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ];
        let (pos, tok, op) = ops
            .iter()
            .filter_map(|(t, op)| s.find(t).map(|p| (p, *t, *op)))
            .min_by_key(|(p, t, _)| (*p, usize::MAX - t.len()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "filter {s:?} has no comparison; write COLUMN OP VALUE with OP one of = != < <= > >="
                ))
            })?;
        let column = s[..pos].trim().to_string();
        let lit = s[pos + tok.len()..].trim();
        if column.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "filter {s:?} names no column"
            )));
        }
        let value = if lit == "true" || lit == "false" {
            Value::Bool(lit == "true")
        } else if let Ok(i) = lit.parse::<i64>() {
            Value::Int(i)
        } else if let Ok(f) = lit.parse::<f64>() {
            Value::Float(f)
        } else {
            let unq = lit
                .strip_prefix('\'')
                .and_then(|x| x.strip_suffix('\''))
                .or_else(|| lit.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
                .unwrap_or(lit);
            Value::Str(unq.to_string())
        };
        Ok(Predicate { column, op, value })
    }
}

impl std::fmt::Display for Predicate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = match &self.value {
            Value::Int(i) => i.to_string(),
            Value::Float(x) => format!("{x:?}"),
            Value::Bool(b) => b.to_string(),
            Value::Str(s) => format!("'{s}'"),
        };
        write!(f, "{}{}{}", self.column, self.op.as_str(), v)
    }
}

/// A projection and filter. The default keeps everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scan {
    /// Columns to keep, in this order; `None` keeps all.
    pub columns: Option<Vec<String>>,
    /// Predicates, all of which a row must satisfy.
    pub filters: Vec<Predicate>,
}

impl Scan {
    /// Keeps only `columns`.
    pub fn columns<S: AsRef<str>>(mut self, columns: &[S]) -> Scan {
        self.columns = Some(columns.iter().map(|c| c.as_ref().to_string()).collect());
        self
    }

    /// Adds a predicate written as text (`x>=5`, `name='a b'`).
    pub fn filter(mut self, text: &str) -> Result<Scan> {
        self.filters.push(text.parse()?);
        Ok(self)
    }

    /// The wire form: the columns (or `*`) and each predicate, as text.
    pub(crate) fn to_strings(&self) -> Vec<String> {
        let mut v = vec![match &self.columns {
            None => "*".to_string(),
            Some(c) => c.join("\u{1f}"),
        }];
        v.extend(self.filters.iter().map(|p| p.to_string()));
        v
    }

    /// Parses the wire form.
    pub(crate) fn from_strings(v: &[String]) -> Result<Scan> {
        let first = v
            .first()
            .ok_or_else(|| Error::Protocol("a scan without its column list".into()))?;
        let columns = (first != "*").then(|| {
            first
                .split('\u{1f}')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        });
        let filters = v[1..].iter().map(|s| s.parse()).collect::<Result<_>>()?;
        Ok(Scan { columns, filters })
    }

    /// A stable 64-bit digest of the scan (names the object a warm scan publishes).
    pub(crate) fn digest(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.to_strings().join("\u{1e}").as_bytes())
    }

    fn index_of(schema: &Schema, name: &str) -> Result<usize> {
        schema.index_of(name).map_err(|_| {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Error::InvalidArgument(format!(
                "no column {name:?}; the object has {}",
                names.join(", ")
            ))
        })
    }

    /// Indices of the projected columns in `schema`.
    pub(crate) fn projection(&self, schema: &Schema) -> Result<Vec<usize>> {
        match &self.columns {
            None => Ok((0..schema.fields().len()).collect()),
            Some(cols) => cols.iter().map(|c| Self::index_of(schema, c)).collect(),
        }
    }

    /// Indices of the columns the predicates read.
    pub(crate) fn filter_columns(&self, schema: &Schema) -> Result<Vec<usize>> {
        self.filters
            .iter()
            .map(|p| Self::index_of(schema, &p.column))
            .collect()
    }

    /// Rows of `batch` that satisfy every predicate (`None`: all rows, no predicate).
    pub(crate) fn mask(&self, batch: &RecordBatch) -> Result<Option<BooleanArray>> {
        if self.filters.is_empty() {
            return Ok(None);
        }
        let mut keep = vec![true; batch.num_rows()];
        for p in &self.filters {
            let i = Self::index_of(batch.schema_ref(), &p.column)?;
            let cmp = comparator(batch.column(i), &p.value)?;
            for (r, k) in keep.iter_mut().enumerate() {
                if *k {
                    *k = cmp(r).is_some_and(|o| p.op.holds(o));
                }
            }
        }
        Ok(Some(BooleanArray::from(keep)))
    }

    /// Applies the filter, then the projection, to batches of `schema`.
    pub(crate) fn apply(
        &self,
        schema: &SchemaRef,
        batches: &[RecordBatch],
    ) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let proj = self.projection(schema)?;
        self.filter_columns(schema)?;
        let out_schema = Arc::new(schema.project(&proj)?);
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let b = match self.mask(b)? {
                Some(m) => arrow_select::filter::filter_record_batch(b, &m)?,
                None => b.clone(),
            };
            out.push(b.project(&proj)?);
        }
        Ok((out_schema, out))
    }

    /// Whether rows whose column values lie between the statistics `mins[i]` and `maxes[i]`
    /// may satisfy `p` (true when the statistics are unknown or not comparable).
    pub(crate) fn may_match(p: &Predicate, mins: &ArrayRef, maxes: &ArrayRef, i: usize) -> bool {
        let (Ok(lo), Ok(hi)) = (comparator(mins, &p.value), comparator(maxes, &p.value)) else {
            return true;
        };
        // lo(i) compares min with the value, hi(i) compares max with the value.
        let (Some(min), Some(max)) = (lo(i), hi(i)) else {
            return true;
        };
        use Ordering::*;
        match p.op {
            Op::Eq => min != Greater && max != Less,
            Op::Ne => !(min == Equal && max == Equal),
            Op::Lt => min == Less,
            Op::Le => min != Greater,
            Op::Gt => max == Greater,
            Op::Ge => max != Less,
        }
    }
}

type Cmp<'a> = Box<dyn Fn(usize) -> Option<Ordering> + 'a>;

fn ints<'a, T: ArrowPrimitiveType>(a: &'a ArrayRef, v: &Value) -> Option<Cmp<'a>>
where
    T::Native: Into<i128>,
{
    let arr = a.as_primitive::<T>();
    match *v {
        Value::Int(i) => {
            let i = i as i128;
            Some(Box::new(move |r| {
                (!arr.is_null(r)).then(|| arr.value(r).into().cmp(&i))
            }))
        }
        Value::Float(f) => Some(Box::new(move |r| {
            (!arr.is_null(r)).then(|| (arr.value(r).into() as f64).total_cmp(&f))
        })),
        _ => None,
    }
}

fn floats<'a, T: ArrowPrimitiveType>(a: &'a ArrayRef, v: &Value) -> Option<Cmp<'a>>
where
    T::Native: Into<f64>,
{
    let arr = a.as_primitive::<T>();
    let v: f64 = match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => return None,
    };
    Some(Box::new(move |r| {
        (!arr.is_null(r)).then(|| arr.value(r).into().total_cmp(&v))
    }))
}

/// A function comparing row `r` of `a` with `v`; `None` for a null row.
fn comparator<'a>(a: &'a ArrayRef, v: &Value) -> Result<Cmp<'a>> {
    let c: Option<Cmp<'a>> =
        match a.data_type() {
            DataType::Int8 => ints::<Int8Type>(a, v),
            DataType::Int16 => ints::<Int16Type>(a, v),
            DataType::Int32 => ints::<Int32Type>(a, v),
            DataType::Date32 => ints::<Date32Type>(a, v),
            DataType::Date64 => ints::<Date64Type>(a, v),
            DataType::Int64 => ints::<Int64Type>(a, v),
            DataType::UInt8 => ints::<UInt8Type>(a, v),
            DataType::UInt16 => ints::<UInt16Type>(a, v),
            DataType::UInt32 => ints::<UInt32Type>(a, v),
            DataType::UInt64 => ints::<UInt64Type>(a, v),
            DataType::Float32 => floats::<Float32Type>(a, v),
            DataType::Float64 => floats::<Float64Type>(a, v),
            DataType::Timestamp(unit, _) => {
                use arrow_schema::TimeUnit::*;
                match unit {
                    Second => ints::<TimestampSecondType>(a, v),
                    Millisecond => ints::<TimestampMillisecondType>(a, v),
                    Microsecond => ints::<TimestampMicrosecondType>(a, v),
                    Nanosecond => ints::<TimestampNanosecondType>(a, v),
                }
            }
            DataType::Boolean => {
                let arr = a.as_boolean();
                match v {
                    Value::Bool(b) => {
                        let b = *b;
                        Some(
                            Box::new(move |r| (!arr.is_null(r)).then(|| arr.value(r).cmp(&b)))
                                as Cmp<'a>,
                        )
                    }
                    _ => None,
                }
            }
            DataType::Utf8 => strings(v, a.as_string::<i32>()),
            DataType::LargeUtf8 => strings(v, a.as_string::<i64>()),
            DataType::Utf8View => {
                let arr = a.as_string_view();
                match v {
                    Value::Str(s) => {
                        let s = s.clone();
                        Some(Box::new(move |r| {
                            (!arr.is_null(r)).then(|| arr.value(r).cmp(s.as_str()))
                        }) as Cmp<'a>)
                    }
                    _ => None,
                }
            }
            DataType::Dictionary(..) => {
                let d = a.as_any_dictionary();
                let values = d.values().clone();
                let keys: Vec<Option<usize>> = {
                    let k = d.normalized_keys();
                    (0..a.len())
                        .map(|r| (!a.is_null(r)).then(|| k[r]))
                        .collect()
                };
                // Compare each distinct value once.
                let per_value: Vec<Option<Ordering>> = {
                    let c = comparator(&values, v)?;
                    (0..values.len()).map(c).collect()
                };
                Some(Box::new(move |r: usize| {
                    keys[r].and_then(|k| per_value.get(k).copied().flatten())
                }) as Cmp<'a>)
            }
            _ => None,
        };
    c.ok_or_else(|| {
        Error::InvalidArgument(format!(
            "cannot compare a {} column with {v:?}",
            a.data_type()
        ))
    })
}

fn strings<'a, O: arrow_array::OffsetSizeTrait>(
    v: &Value,
    arr: &'a arrow_array::GenericStringArray<O>,
) -> Option<Cmp<'a>> {
    match v {
        Value::Str(s) => {
            let s = s.clone();
            Some(Box::new(move |r| {
                (!arr.is_null(r)).then(|| arr.value(r).cmp(s.as_str()))
            }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray};
    use arrow_schema::Field;

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("x", DataType::Float64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(0..10)),
                Arc::new(Float64Array::from_iter(
                    (0..10).map(|i| (i != 3).then_some(i as f64 / 2.0)),
                )),
                Arc::new(StringArray::from_iter(
                    (0..10).map(|i| Some(format!("n{i}"))),
                )),
            ],
        )
        .unwrap()
    }

    #[test]
    fn parses_and_prints() {
        for (s, col, op) in [
            ("a>=5", "a", Op::Ge),
            ("a <= 5", "a", Op::Le),
            ("name='x y'", "name", Op::Eq),
            ("b!=true", "b", Op::Ne),
            ("c<1.5", "c", Op::Lt),
        ] {
            let p: Predicate = s.parse().unwrap();
            assert_eq!((p.column.as_str(), p.op), (col, op), "{s}");
            assert_eq!(p.to_string().parse::<Predicate>().unwrap(), p);
        }
        assert!("novalue".parse::<Predicate>().is_err());
        assert!("=5".parse::<Predicate>().is_err());
        let s = Scan::default().columns(&["a", "b"]).filter("x>1").unwrap();
        assert_eq!(Scan::from_strings(&s.to_strings()).unwrap(), s);
    }

    #[test]
    fn filters_and_projects() {
        let b = batch();
        let s = Scan::default()
            .columns(&["name", "id"])
            .filter("x>=1")
            .unwrap()
            .filter("id<8")
            .unwrap();
        let (schema, out) = s.apply(&b.schema(), &[b]).unwrap();
        assert_eq!(schema.field(0).name(), "name");
        let ids: Vec<i64> = out[0]
            .column(1)
            .as_primitive::<Int64Type>()
            .values()
            .to_vec();
        // x = id/2 >= 1 means id >= 2; id 3 has a null x; id < 8.
        assert_eq!(ids, vec![2, 4, 5, 6, 7]);
        let e = Scan::default()
            .filter("nope=1")
            .unwrap()
            .apply(out[0].schema_ref(), &out);
        assert!(e.unwrap_err().to_string().contains("no column"));
    }

    #[test]
    fn statistics_pruning_is_conservative() {
        let mins: ArrayRef = Arc::new(Int64Array::from(vec![Some(0), Some(10), None]));
        let maxes: ArrayRef = Arc::new(Int64Array::from(vec![Some(9), Some(19), None]));
        let p = |s: &str| s.parse::<Predicate>().unwrap();
        let m = |s: &str, i| Scan::may_match(&p(s), &mins, &maxes, i);
        assert!(m("v=5", 0) && !m("v=5", 1) && m("v=5", 2));
        assert!(!m("v>9", 0) && m("v>9", 1));
        assert!(m("v<10", 0) && !m("v<10", 1));
        assert!(m("v>=9", 0) && !m("v<=9", 1) && m("v<=10", 1));
    }
}
