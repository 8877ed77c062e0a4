//! `cidcache._native.Client`: the Rust client for Python (the Python class `cidcache.Client`
//! derives from it and adds the asyncio and pyarrow conveniences).
//!
//! GIL policy: a hit is served with the GIL held (it takes no lock and makes no system call, so
//! releasing the GIL would cost more than the hit); everything that may touch the socket or copy
//! large data runs with the GIL released, so other Python threads run meanwhile.

use crate::aio::{Op, OpFuture, Out, Poller};
use crate::arrow::{empty_schema, import, ArrowStream};
use crate::buffer::InBuffer;
use crate::errors::{closed, instance, to_py, IntoPy};
use crate::keys::key_of;
use crate::object::new_object;
use cidcache::proto::ListEntry;
use cidcache::scan::{Op as ScanOp, Predicate, Scan, Value};
use cidcache::tier::catalog::CatalogEntry;
use cidcache::{Client, ConnectOptions, Error, Key, PutOptions};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use std::sync::Mutex;
use std::time::Duration;

/// How long a get may wait.
#[derive(Clone, Copy)]
enum Wait {
    No,
    For(Duration),
    Forever,
}

/// `timeout` in seconds: `None` or 0 = do not wait, `math.inf` = without limit.
fn wait_of(timeout: Option<f64>) -> PyResult<Wait> {
    match timeout {
        None => Ok(Wait::No),
        Some(t) if t.is_nan() || t < 0.0 => Err(to_py(Error::InvalidArgument(format!(
            "timeout must be None, a number of seconds >= 0, or math.inf, not {t}"
        )))),
        Some(0.0) => Ok(Wait::No),
        Some(t) if t.is_infinite() || t > 1e9 => Ok(Wait::Forever),
        Some(t) => Ok(Wait::For(Duration::from_secs_f64(t))),
    }
}

impl Wait {
    fn async_timeout(self) -> Option<Duration> {
        match self {
            Wait::No => Some(Duration::ZERO),
            Wait::For(d) => Some(d),
            Wait::Forever => None,
        }
    }
}

/// "Without limit" for the batch gets, whose Rust API takes a `Duration`: a year (far enough,
/// and far from the overflow of a deadline computed as now + timeout).
const FOREVER: Duration = Duration::from_secs(365 * 86_400);

/// Long waits are cut into slices so that Ctrl-C (a pending signal) interrupts them.
const WAIT_SLICE: Duration = Duration::from_millis(200);

pub(crate) fn list_to_py(py: Python<'_>, entries: Vec<ListEntry>) -> PyResult<Py<PyAny>> {
    let l = PyList::empty(py);
    for e in entries {
        l.append((
            pyo3::types::PyBytes::new(py, e.key.as_bytes()),
            e.data_len,
            e.meta_len,
            e.flags & cidcache::index::FLAG_ARROW != 0,
        ))?;
    }
    Ok(l.into_any().unbind())
}

/// Keys of a batch call: a wrong type fails the call; an invalid key is that item's error.
fn keys_of(keys: &Bound<'_, PyAny>) -> PyResult<Vec<Result<Key, Error>>> {
    if keys.is_instance_of::<PyString>() || keys.is_instance_of::<pyo3::types::PyBytes>() {
        return Err(PyTypeError::new_err(
            "keys must be an iterable of keys (a list of bytes or str), not a single key",
        ));
    }
    keys.try_iter()?.map(|k| key_or_error(&k?)).collect()
}

/// A key, or the error that makes it invalid (a `TypeError` for a value of the wrong type).
fn key_or_error(k: &Bound<'_, PyAny>) -> PyResult<Result<Key, Error>> {
    match key_of(k) {
        Ok(k) => Ok(Ok(k)),
        Err(e) if e.is_instance_of::<PyTypeError>(k.py()) => Err(e),
        Err(e) => Ok(Err(Error::InvalidKey(e.value(k.py()).to_string()))),
    }
}

/// Per-item results being filled in, and the valid keys with their positions.
type Split<T> = (Vec<Option<Result<T, Error>>>, Vec<(usize, Key)>);

/// Splits per-item key results into the valid keys (with their positions) and the results
/// list to fill, where invalid keys already have their error.
fn split_keys<T>(keys: Vec<Result<Key, Error>>) -> Split<T> {
    let mut out = Vec::with_capacity(keys.len());
    let mut valid = Vec::with_capacity(keys.len());
    for (i, k) in keys.into_iter().enumerate() {
        match k {
            Ok(k) => {
                out.push(None);
                valid.push((i, k));
            }
            Err(e) => out.push(Some(Err(e))),
        }
    }
    (out, valid)
}

/// `(key, data)` pairs from an iterable of pairs or a mapping (an invalid key is that item's
/// error; a value without the buffer protocol fails the call).
fn items_of(items: &Bound<'_, PyAny>) -> PyResult<Vec<(Result<Key, Error>, InBuffer)>> {
    let it = if let Ok(d) = items.cast::<PyDict>() {
        d.items().into_any().try_iter()?
    } else {
        items.try_iter()?
    };
    it.map(|p| {
        let p = p?;
        let t = p.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err("put_many takes (key, data) pairs or a mapping of key to data")
        })?;
        if t.len() != 2 {
            return Err(PyTypeError::new_err(
                "put_many takes (key, data) pairs or a mapping of key to data",
            ));
        }
        Ok((
            key_or_error(&t.get_item(0)?)?,
            InBuffer::get(&t.get_item(1)?)?,
        ))
    })
    .collect()
}

fn scan_op(op: &str) -> PyResult<ScanOp> {
    Ok(match op {
        "=" | "==" => ScanOp::Eq,
        "!=" => ScanOp::Ne,
        "<" => ScanOp::Lt,
        "<=" => ScanOp::Le,
        ">" => ScanOp::Gt,
        ">=" => ScanOp::Ge,
        _ => {
            return Err(to_py(Error::InvalidArgument(format!(
                "unknown comparison {op:?}; use one of = == != < <= > >="
            ))))
        }
    })
}

/// A scan from `columns=` and `filter=` (a text predicate such as `"x>=5"`, a
/// `(column, op, value)` tuple, or a list of either, ANDed).
fn scan_of(columns: Option<Vec<String>>, filter: Option<&Bound<'_, PyAny>>) -> PyResult<Scan> {
    let mut scan = Scan::default();
    if let Some(c) = columns {
        scan = scan.columns(&c);
    }
    let Some(f) = filter else { return Ok(scan) };
    let parts: Vec<Bound<'_, PyAny>> =
        if f.is_instance_of::<PyString>() || f.is_instance_of::<PyTuple>() {
            vec![f.clone()]
        } else {
            f.try_iter()?.collect::<PyResult<_>>()?
        };
    for p in parts {
        if let Ok(s) = p.cast::<PyString>() {
            scan = scan.filter(&s.to_cow()?).py_err()?;
            continue;
        }
        let t = p.cast::<PyTuple>().map_err(|_| {
            PyTypeError::new_err(
                "a filter is a string such as \"x>=5\" or a (column, op, value) tuple",
            )
        })?;
        if t.len() != 3 {
            return Err(PyTypeError::new_err(
                "a filter tuple is (column, op, value)",
            ));
        }
        let column: String = t.get_item(0)?.extract()?;
        let op = scan_op(&t.get_item(1)?.extract::<String>()?)?;
        let v = t.get_item(2)?;
        let value = if v.is_instance_of::<PyBool>() {
            Value::Bool(v.extract()?)
        } else if v.is_instance_of::<PyInt>() {
            Value::Int(v.extract()?)
        } else if v.is_instance_of::<PyFloat>() {
            Value::Float(v.extract()?)
        } else if v.is_instance_of::<PyString>() {
            Value::Str(v.extract()?)
        } else {
            return Err(PyTypeError::new_err(format!(
                "a filter value is a bool, int, float or str, not {}",
                v.get_type().name()?
            )));
        };
        scan.filters.push(Predicate { column, op, value });
    }
    Ok(scan)
}

fn opt_str(d: &Bound<'_, PyDict>, k: &str) -> PyResult<Option<String>> {
    match d.get_item(k)? {
        Some(v) if !v.is_none() => Ok(Some(v.extract()?)),
        _ => Ok(None),
    }
}

/// A catalog entry from a dict with the catalog's column names (see docs/catalog.md).
fn entry_of(d: &Bound<'_, PyAny>, now_us: i64) -> PyResult<CatalogEntry> {
    const KNOWN: &[&str] = &[
        "cid",
        "size_bytes",
        "mimetype",
        "filename",
        "storage_tier",
        "is_pinned",
        "added_at",
        "last_accessed",
        "access_count",
        "heat_score",
        "source",
        "cid_version",
        "multihash_type",
        "valid",
        "properties",
    ];
    let d = d
        .cast::<PyDict>()
        .map_err(|_| PyTypeError::new_err("catalog entries are dicts"))?;
    for k in d.keys() {
        let k: String = k.extract()?;
        if !KNOWN.contains(&k.as_str()) {
            return Err(to_py(Error::InvalidArgument(format!(
                "unknown catalog column {k:?}; the columns are {}",
                KNOWN.join(", ")
            ))));
        }
    }
    let key = key_of(
        &d.get_item("cid")?
            .ok_or_else(|| to_py(Error::InvalidArgument("a catalog entry needs a cid".into())))?,
    )?;
    let get = |k: &str| d.get_item(k).map(|v| v.filter(|v| !v.is_none()));
    let size: u64 = get("size_bytes")?
        .map(|v| v.extract())
        .transpose()?
        .unwrap_or(0);
    let mut e = CatalogEntry::new(key, size, now_us);
    e.mimetype = opt_str(d, "mimetype")?;
    e.filename = opt_str(d, "filename")?;
    e.source = opt_str(d, "source")?;
    if let Some(m) = opt_str(d, "multihash_type")? {
        e.multihash_type = Some(m);
    }
    if let Some(v) = get("cid_version")? {
        e.cid_version = Some(v.extract()?);
    }
    if let Some(v) = get("is_pinned")? {
        e.is_pinned = v.extract()?;
    }
    if let Some(v) = get("valid")? {
        e.valid = v.extract()?;
    }
    if let Some(v) = get("added_at")? {
        e.added_at = v.extract()?;
    }
    if let Some(v) = get("last_accessed")? {
        e.last_accessed = v.extract()?;
    }
    if let Some(v) = get("access_count")? {
        e.access_count = v.extract()?;
    }
    if let Some(v) = get("heat_score")? {
        e.heat_score = v.extract()?;
    }
    if let Some(v) = get("properties")? {
        let p = v
            .cast::<PyDict>()
            .map_err(|_| PyTypeError::new_err("properties is a dict of str to str"))?;
        for (k, v) in p.iter() {
            e.properties.push((k.extract()?, v.extract()?));
        }
    }
    Ok(e)
}

/// A catalog entry as a dict with the catalog's column names.
fn entry_to_py<'py>(py: Python<'py>, e: &CatalogEntry) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("cid", pyo3::types::PyBytes::new(py, e.key.as_bytes()))?;
    d.set_item("size_bytes", e.size_bytes)?;
    d.set_item("mimetype", e.mimetype.as_deref())?;
    d.set_item("filename", e.filename.as_deref())?;
    d.set_item("storage_tier", e.storage_tier.as_str())?;
    d.set_item("is_pinned", e.is_pinned)?;
    d.set_item("added_at", e.added_at)?;
    d.set_item("last_accessed", e.last_accessed)?;
    d.set_item("access_count", e.access_count)?;
    d.set_item("heat_score", e.heat_score)?;
    d.set_item("source", e.source.as_deref())?;
    d.set_item("cid_version", e.cid_version)?;
    d.set_item("multihash_type", e.multihash_type.as_deref())?;
    d.set_item("valid", e.valid)?;
    let p = PyDict::new(py);
    for (k, v) in &e.properties {
        p.set_item(k, v)?;
    }
    d.set_item("properties", p)?;
    Ok(d)
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// A connection to a cidcache store (see `cidcache.Client` for the documented API).
///
/// Thread safety: every method may be called from any thread; calls that wait release the GIL.
#[pyclass(module = "cidcache._native", name = "Client", subclass, frozen)]
pub(crate) struct PyClient {
    client: Mutex<Option<Client>>,
    store: String,
}

impl PyClient {
    #[inline]
    fn client(&self) -> PyResult<Client> {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(closed)
    }

    fn get_wait(
        &self,
        py: Python<'_>,
        c: &Client,
        key: &Key,
        wait: Wait,
    ) -> PyResult<Option<cidcache::ObjectRef>> {
        let k = key.as_bytes();
        match wait {
            Wait::No => py.detach(|| c.get(k)).py_err(),
            Wait::For(d) if d <= WAIT_SLICE => py.detach(|| c.get_timeout(k, d)).py_err(),
            _ => {
                let deadline = match wait {
                    Wait::For(d) => Some(std::time::Instant::now() + d),
                    _ => None,
                };
                loop {
                    let slice = match deadline {
                        Some(end) => end
                            .saturating_duration_since(std::time::Instant::now())
                            .min(WAIT_SLICE),
                        None => WAIT_SLICE,
                    };
                    if let Some(o) = py.detach(|| c.get_timeout(k, slice)).py_err()? {
                        return Ok(Some(o));
                    }
                    py.check_signals()?;
                    if deadline.is_some_and(|end| std::time::Instant::now() >= end) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    fn start(&self, poller: &Poller, fut: OpFuture) -> Op {
        Op::start(poller, fut)
    }
}

#[pymethods]
impl PyClient {
    #[new]
    #[pyo3(signature = (store = None, *, socket = None, read_only = false))]
    fn new(
        py: Python<'_>,
        store: Option<String>,
        socket: Option<std::path::PathBuf>,
        read_only: bool,
    ) -> PyResult<PyClient> {
        let store = store
            .or_else(|| {
                std::env::var("CIDCACHE_STORE")
                    .ok()
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| cidcache::config::DEFAULT_STORE.to_string());
        let mut opts = match &socket {
            Some(s) => ConnectOptions::socket(s),
            None => ConnectOptions::store(&store),
        };
        if read_only {
            opts = opts.read_only();
        }
        let c = py.detach(|| Client::connect_with(opts)).py_err()?;
        let store = c.store_name().to_string();
        Ok(PyClient {
            client: Mutex::new(Some(c)),
            store,
        })
    }

    /// The store's name.
    #[getter]
    fn store(&self) -> &str {
        &self.store
    }

    /// This connection's client id at the coordinator.
    #[getter]
    fn client_id(&self) -> PyResult<u64> {
        Ok(self.client()?.client_id())
    }

    /// Number of objects this client holds pinned (live `Object`s, Arrow buffers, views).
    #[getter]
    fn pinned(&self) -> PyResult<usize> {
        Ok(self.client()?.pinned())
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// Closes this handle. Objects and Arrow data still alive stay valid (they keep the
    /// connection and mappings they need); the connection ends when the last of them goes.
    fn close(&self) {
        let c = self.client.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(c);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) {
        self.close();
    }

    /// Gets `key`: an `Object` (zero-copy, pinned) or `None` when it is not stored (or did not
    /// appear within `timeout` seconds; `None`/0 = do not wait, `math.inf` = no limit). A hit
    /// takes no lock and makes no system call; a miss asks the coordinator, which promotes the
    /// object from a lower tier when it is there.
    #[pyo3(signature = (key, timeout = None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let key = key_of(key)?;
        let wait = wait_of(timeout)?;
        let c = self.client()?;
        if let Some(o) = c.get_hot(key.as_bytes()).py_err()? {
            return new_object(py, o);
        }
        match self.get_wait(py, &c, &key, wait)? {
            Some(o) => new_object(py, o),
            None => Ok(py.None()),
        }
    }

    /// `client[key]`: like `get` without waiting, but a missing key raises `NotFound`.
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let k = key_of(key)?;
        let c = self.client()?;
        let o = match c.get_hot(k.as_bytes()).py_err()? {
            Some(o) => Some(o),
            None => self.get_wait(py, &c, &k, Wait::No)?,
        };
        match o {
            Some(o) => new_object(py, o),
            None => Err(to_py(Error::NotFound(crate::keys::display(k.as_bytes())))),
        }
    }

    /// Stores `data` (anything with the buffer protocol) under `key`. `metadata` is stored after
    /// the data; `ephemeral` objects are dropped instead of demoted when evicted; `verify_cid`
    /// has the coordinator check that the data hashes to the key; `durable` returns only once the
    /// object is in a synced warm-tier file (as `cidcached --durability sync`, for this put). An
    /// existing key raises `AlreadyExists`.
    #[pyo3(signature = (key, data, *, metadata = None, ephemeral = false, verify_cid = false, durable = false))]
    #[allow(clippy::too_many_arguments)] // Python keyword arguments
    fn put(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
        ephemeral: bool,
        verify_cid: bool,
        durable: bool,
    ) -> PyResult<()> {
        let key = key_of(key)?;
        let c = self.client()?;
        let data = InBuffer::get(data)?;
        let meta = metadata.map(InBuffer::get).transpose()?;
        let opts = PutOptions {
            metadata: meta.as_ref().map_or(&[][..], |m| m.as_slice()),
            ephemeral,
            verify_cid,
            durable,
            ..Default::default()
        };
        py.detach(|| c.put_with(key.as_bytes(), data.as_slice(), opts))
            .py_err()
    }

    /// Stores `data` under its CIDv1 (raw codec, sha2-256) and returns the CID as text. Storing
    /// content that is already present succeeds.
    fn put_content(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<String> {
        let c = self.client()?;
        let data = InBuffer::get(data)?;
        let cid = py.detach(|| c.put_content(data.as_slice())).py_err()?;
        Ok(crate::keys::display(&cid))
    }

    /// Whether a sealed object is stored under `key`, in any tier.
    fn contains(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let key = key_of(key)?;
        let c = self.client()?;
        py.detach(|| c.contains(key.as_bytes())).py_err()
    }

    fn __contains__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        self.contains(py, key)
    }

    /// Deletes `key` (`NotFound` when absent). Gets miss at once; objects already read stay
    /// valid until released.
    fn delete(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<()> {
        let key = key_of(key)?;
        let c = self.client()?;
        py.detach(|| c.delete(key.as_bytes())).py_err()
    }

    /// The sealed objects of the hot tier as `(key, size, metadata_size, is_arrow)` tuples.
    fn _list(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let c = self.client()?;
        let l = py.detach(|| c.list()).py_err()?;
        list_to_py(py, l)
    }

    /// The store's counters (see docs/operations.md).
    fn stats(&self, py: Python<'_>) -> PyResult<Py<PyDict>> {
        let c = self.client()?;
        let s = py.detach(|| c.stats()).py_err()?;
        let d = PyDict::new(py);
        for (k, v) in s {
            d.set_item(k, v)?;
        }
        Ok(d.unbind())
    }

    /// Gets many keys: hits locally, the misses in one round trip (waiting up to `timeout`
    /// seconds for them). One result per key, in order: an `Object`, `None` (missing), or the
    /// exception for that key (not raised).
    #[pyo3(signature = (keys, timeout = None))]
    fn get_many(
        &self,
        py: Python<'_>,
        keys: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyList>> {
        let keys = keys_of(keys)?;
        let wait = wait_of(timeout)?;
        let c = self.client()?;
        let (mut out, valid) = split_keys(keys);
        let refs: Vec<&[u8]> = valid.iter().map(|(_, k)| k.as_bytes()).collect();
        let t = match wait {
            Wait::No => Duration::ZERO,
            Wait::For(d) => d,
            Wait::Forever => FOREVER,
        };
        let res = py.detach(|| c.get_many(&refs, t));
        for ((i, _), r) in valid.iter().zip(res) {
            out[*i] = Some(r);
        }
        let l = PyList::empty(py);
        for r in out.into_iter().flatten() {
            l.append(match r {
                Ok(Some(o)) => new_object(py, o)?,
                Ok(None) => py.None(),
                Err(e) => instance(py, &e),
            })?;
        }
        Ok(l.unbind())
    }

    /// Stores many `(key, data)` pairs (or a mapping of key to data), small ones batched into as
    /// few round trips as the frame limit allows. One result per item, in order: `None` for
    /// success or the exception for that item (not raised); partial success is normal.
    fn put_many(&self, py: Python<'_>, items: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let items = items_of(items)?;
        let c = self.client()?;
        let mut out: Vec<Option<Result<(), Error>>> = Vec::with_capacity(items.len());
        let mut pos = Vec::with_capacity(items.len());
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(items.len());
        for (i, (k, d)) in items.iter().enumerate() {
            match k {
                Ok(k) => {
                    out.push(None);
                    pos.push(i);
                    pairs.push((k.as_bytes(), d.as_slice()));
                }
                Err(e) => out.push(Some(Err(Error::from_code(e.code(), e.message())))),
            }
        }
        let res = py.detach(|| c.put_many(&pairs));
        drop(pairs);
        for (i, r) in pos.into_iter().zip(res) {
            out[i] = Some(r);
        }
        let l = PyList::empty(py);
        for r in out.into_iter().flatten() {
            l.append(match r {
                Ok(()) => py.None(),
                Err(e) => instance(py, &e),
            })?;
        }
        Ok(l.unbind())
    }

    /// Stores the Arrow data `data` (any object with `__arrow_c_stream__` or
    /// `__arrow_c_array__`) under `key` as one Arrow object that readers decode in place.
    fn put_arrow(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
    ) -> PyResult<()> {
        let key = key_of(key)?;
        let c = self.client()?;
        let (schema, batches) = import(data)?;
        py.detach(|| c.put_arrow(key.as_bytes(), &schema, &batches))
            .py_err()
    }

    /// The Arrow object `key` as an `ArrowStream` (zero-copy; `NotFound` when no tier holds
    /// it). `columns` projects, `filter` keeps the rows that satisfy every predicate (a string
    /// such as `"x>=5"`, a `(column, op, value)` tuple, or a list of them); both use the scan
    /// path, which reads only what it needs from the warm tier.
    #[pyo3(signature = (key, columns = None, filter = None))]
    fn get_arrow_stream(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        columns: Option<Vec<String>>,
        filter: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ArrowStream> {
        if columns.as_ref().is_some_and(|c| c.is_empty()) {
            return Err(to_py(Error::InvalidArgument(
                "columns=[] selects nothing; pass None for all columns".into(),
            )));
        }
        let key = key_of(key)?;
        let c = self.client()?;
        let plain = columns.is_none() && filter.is_none();
        let scan = scan_of(columns, filter)?;
        let k = key.as_bytes();
        let hot = if plain { c.get_hot(k).py_err()? } else { None };
        let r = match hot {
            Some(o) => Some(cidcache::arrow::arrow_from_object(o).py_err()?),
            None if plain => py.detach(|| c.get_arrow(k)).py_err()?,
            None => py.detach(|| c.get_arrow_scan(k, &scan)).py_err()?,
        };
        match r {
            Some(a) => Ok(ArrowStream::new(a.schema, a.batches)),
            None => Err(to_py(Error::NotFound(format!(
                "{}: no tier holds it",
                crate::keys::display(k)
            )))),
        }
    }

    /// The catalog rows matching every filter of `where_` (text filters, see docs/catalog.md)
    /// as an `ArrowStream`; `columns` projects, `limit` caps the rows.
    #[pyo3(signature = (where_ = None, columns = None, limit = None))]
    fn catalog_query_stream(
        &self,
        py: Python<'_>,
        where_: Option<Vec<String>>,
        columns: Option<Vec<String>>,
        limit: Option<usize>,
    ) -> PyResult<ArrowStream> {
        let c = self.client()?;
        let filters = where_.unwrap_or_default();
        let refs: Vec<&str> = filters.iter().map(|s| s.as_str()).collect();
        let cols = columns.map(|c| c.join(","));
        let batches = py
            .detach(|| c.catalog_query_batches(&refs, cols.as_deref(), limit))
            .py_err()?;
        let schema = batches.first().map_or_else(empty_schema, |b| b.schema());
        Ok(ArrowStream::new(schema, batches))
    }

    /// Upserts catalog entries: dicts with the catalog's column names (`cid` required;
    /// `added_at` / `last_accessed` in µs since the epoch; `properties` a dict of str). The store
    /// sets `storage_tier` and keeps what it recorded itself (see docs/catalog.md).
    fn catalog_upsert(&self, py: Python<'_>, entries: &Bound<'_, PyAny>) -> PyResult<()> {
        let now = now_us();
        let entries: Vec<CatalogEntry> = entries
            .try_iter()?
            .map(|e| entry_of(&e?, now))
            .collect::<PyResult<_>>()?;
        let c = self.client()?;
        py.detach(|| c.catalog_upsert(&entries)).py_err()
    }

    /// The catalog entries of `keys`, in order: a dict with the catalog's column names
    /// (`cid` as bytes, timestamps in µs since the epoch, `properties` a dict) or `None` for a
    /// key the catalog does not know. One round trip; the store looks the keys up in its index.
    fn catalog_get(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let keys: Vec<Key> = keys_of(keys)?
            .into_iter()
            .map(|k| k.map_err(to_py))
            .collect::<PyResult<_>>()?;
        let out = PyList::empty(py);
        if keys.is_empty() {
            return Ok(out.unbind());
        }
        let c = self.client()?;
        let mut filter = String::with_capacity(16 + keys.len() * 132);
        filter.push_str("cid in (");
        for (i, k) in keys.iter().enumerate() {
            if i > 0 {
                filter.push(',');
            }
            filter.push_str("0x");
            for b in k.as_bytes() {
                filter.push_str(&format!("{b:02x}"));
            }
        }
        filter.push(')');
        let entries = py
            .detach(|| {
                let ipc = c.catalog_query(
                    &[filter.as_str()],
                    None,
                    None,
                    cidcache::tier::catalog::OutputFormat::Ipc,
                )?;
                cidcache::tier::catalog::entries_from_ipc(&ipc)
            })
            .py_err()?;
        let mut by_key: std::collections::HashMap<Key, CatalogEntry> =
            entries.into_iter().map(|e| (e.key, e)).collect();
        for k in &keys {
            match by_key.remove(k) {
                Some(e) => out.append(entry_to_py(py, &e)?)?,
                None => out.append(py.None())?,
            }
        }
        Ok(out.unbind())
    }

    // ----- asyncio: operations completed through a Poller (see aio.rs and cidcache/_aio.py) --

    #[pyo3(signature = (poller, key, timeout = None))]
    fn _start_get(
        &self,
        poller: &Poller,
        key: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Op> {
        let key = key_of(key)?;
        let t = wait_of(timeout)?.async_timeout();
        let c = self.client()?;
        if let Some(o) = c.get_hot(key.as_bytes()).py_err()? {
            return Ok(self.start(poller, Box::pin(async move { Out::Get(Ok(Some(o))) })));
        }
        let fut = async move { Out::Get(c.get_async(key.as_bytes(), t).await) };
        Ok(self.start(poller, Box::pin(fut)))
    }

    #[pyo3(signature = (poller, keys, timeout = None))]
    fn _start_get_many(
        &self,
        poller: &Poller,
        keys: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Op> {
        let keys = keys_of(keys)?;
        let t = wait_of(timeout)?.async_timeout().unwrap_or(FOREVER);
        let c = self.client()?;
        let fut = async move {
            let (mut out, valid) = split_keys(keys);
            let refs: Vec<&[u8]> = valid.iter().map(|(_, k)| k.as_bytes()).collect();
            let res = c.get_many_async(&refs, t).await;
            for ((i, _), r) in valid.iter().zip(res) {
                out[*i] = Some(r);
            }
            Out::GetMany(out.into_iter().flatten().collect())
        };
        Ok(self.start(poller, Box::pin(fut)))
    }

    #[pyo3(signature = (poller, key, data, *, metadata = None, ephemeral = false, verify_cid = false, durable = false))]
    #[allow(clippy::too_many_arguments)]
    fn _start_put(
        &self,
        poller: &Poller,
        key: &Bound<'_, PyAny>,
        data: &Bound<'_, PyAny>,
        metadata: Option<&Bound<'_, PyAny>>,
        ephemeral: bool,
        verify_cid: bool,
        durable: bool,
    ) -> PyResult<Op> {
        let key = key_of(key)?;
        // Copied: the operation outlives this call and must not hold Python buffers.
        let data = InBuffer::get(data)?.as_slice().to_vec();
        let meta = metadata
            .map(InBuffer::get)
            .transpose()?
            .map(|m| m.as_slice().to_vec())
            .unwrap_or_default();
        let c = self.client()?;
        let fut = async move {
            let opts = PutOptions {
                metadata: &meta,
                ephemeral,
                verify_cid,
                durable,
                ..Default::default()
            };
            Out::Unit(c.put_async(key.as_bytes(), &data, opts).await)
        };
        Ok(self.start(poller, Box::pin(fut)))
    }

    fn _start_put_many(&self, poller: &Poller, items: &Bound<'_, PyAny>) -> PyResult<Op> {
        let items: Vec<(Result<Key, Error>, Vec<u8>)> = items_of(items)?
            .into_iter()
            .map(|(k, d)| (k, d.as_slice().to_vec()))
            .collect();
        let c = self.client()?;
        let fut = async move {
            let mut out: Vec<Option<Result<(), Error>>> = Vec::with_capacity(items.len());
            let mut pos = Vec::new();
            let mut pairs: Vec<(&[u8], &[u8])> = Vec::new();
            for (i, (k, d)) in items.iter().enumerate() {
                match k {
                    Ok(k) => {
                        out.push(None);
                        pos.push(i);
                        pairs.push((k.as_bytes(), d.as_slice()));
                    }
                    Err(e) => out.push(Some(Err(Error::from_code(e.code(), e.message())))),
                }
            }
            let res = c.put_many_async(&pairs).await;
            for (i, r) in pos.into_iter().zip(res) {
                out[i] = Some(r);
            }
            Out::PutMany(out.into_iter().flatten().collect())
        };
        Ok(self.start(poller, Box::pin(fut)))
    }

    fn _start_delete(&self, poller: &Poller, key: &Bound<'_, PyAny>) -> PyResult<Op> {
        let key = key_of(key)?;
        let c = self.client()?;
        let fut = async move { Out::Unit(c.delete_async(key.as_bytes()).await) };
        Ok(self.start(poller, Box::pin(fut)))
    }

    fn _start_contains(&self, poller: &Poller, key: &Bound<'_, PyAny>) -> PyResult<Op> {
        let key = key_of(key)?;
        let c = self.client()?;
        let fut = async move { Out::Bool(c.contains_async(key.as_bytes()).await) };
        Ok(self.start(poller, Box::pin(fut)))
    }

    fn _start_list(&self, poller: &Poller) -> PyResult<Op> {
        let c = self.client()?;
        let fut = async move { Out::List(c.list_async().await) };
        Ok(self.start(poller, Box::pin(fut)))
    }

    fn _start_stats(&self, poller: &Poller) -> PyResult<Op> {
        let c = self.client()?;
        let fut = async move { Out::Stats(c.stats_async().await) };
        Ok(self.start(poller, Box::pin(fut)))
    }

    fn __repr__(&self) -> String {
        if self.closed() {
            format!("<cidcache.Client store={:?} (closed)>", self.store)
        } else {
            format!("<cidcache.Client store={:?}>", self.store)
        }
    }
}
