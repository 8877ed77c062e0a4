//! Arrow through the Arrow PyCapsule interface (`__arrow_c_stream__`, `__arrow_c_array__`,
//! `__arrow_c_schema__`): import whatever a producer hands us (pyarrow, polars, DuckDB, ...) and
//! export stored objects zero-copy.

use crate::errors::to_py;
use arrow_array::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{Array, RecordBatch, RecordBatchIterator, RecordBatchReader, StructArray};
use arrow_schema::{Schema, SchemaRef};
use cidcache::Error;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};
use std::ffi::CStr;
use std::sync::{Arc, Mutex};

const STREAM: &CStr = c"arrow_array_stream";
const SCHEMA: &CStr = c"arrow_schema";
const ARRAY: &CStr = c"arrow_array";

fn capsule_ptr<T>(cap: &Bound<'_, PyAny>, name: &'static CStr) -> PyResult<*mut T> {
    let cap = cap.cast::<PyCapsule>().map_err(|_| {
        PyTypeError::new_err(format!(
            "expected a PyCapsule named {:?}",
            name.to_string_lossy()
        ))
    })?;
    Ok(cap.pointer_checked(Some(name))?.as_ptr() as *mut T)
}

/// Reads every batch that `data` produces: an object with `__arrow_c_stream__` (a table, a
/// reader, a data frame) or with `__arrow_c_array__` (one record batch / struct array).
pub(crate) fn import(data: &Bound<'_, PyAny>) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
    if data.hasattr("__arrow_c_stream__")? {
        let cap = data.call_method0("__arrow_c_stream__")?;
        let p = capsule_ptr::<FFI_ArrowArrayStream>(&cap, STREAM)?;
        // SAFETY: the capsule holds a valid ArrowArrayStream (its producer's contract); from_raw
        // moves it out and leaves a released stream behind, so the capsule's destructor does
        // not release it again.
        let stream = unsafe { FFI_ArrowArrayStream::from_raw(p) };
        if stream.release().is_none() {
            return Err(PyValueError::new_err(
                "the Arrow stream was already consumed",
            ));
        }
        let reader = RecordBatchStreamReader::try_new(stream)
            .map_err(|e| to_py(Error::Arrow(format!("importing the stream: {e}"))))?;
        let schema = reader.schema();
        // Reading may run producer code that needs the GIL (a Python-backed stream): keep it.
        let batches = reader
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| to_py(Error::Arrow(format!("reading the input stream: {e}"))))?;
        return Ok((schema, batches));
    }
    if data.hasattr("__arrow_c_array__")? {
        let pair = data.call_method0("__arrow_c_array__")?;
        let pair = pair
            .cast::<PyTuple>()
            .map_err(|_| PyTypeError::new_err("__arrow_c_array__ must return a tuple"))?;
        if pair.len() != 2 {
            return Err(PyTypeError::new_err(
                "__arrow_c_array__ must return (schema capsule, array capsule)",
            ));
        }
        let sp = capsule_ptr::<FFI_ArrowSchema>(&pair.get_item(0)?, SCHEMA)?;
        let ap = capsule_ptr::<FFI_ArrowArray>(&pair.get_item(1)?, ARRAY)?;
        // SAFETY: valid C data interface structs per the producer's contract; the array is
        // moved out (FFI_ArrowArray::from_raw leaves a released one behind); the schema is only
        // borrowed and stays owned by its capsule.
        let (array, schema) = unsafe { (FFI_ArrowArray::from_raw(ap), &*sp) };
        // SAFETY: the array matches the schema it came with.
        let data = unsafe { from_ffi(array, schema) }
            .map_err(|e| to_py(Error::Arrow(format!("importing the array: {e}"))))?;
        let sa = StructArray::from(data);
        if sa.null_count() > 0 {
            return Err(to_py(Error::Arrow(
                "a record batch cannot have top-level nulls".into(),
            )));
        }
        let batch = RecordBatch::from(sa);
        return Ok((batch.schema(), vec![batch]));
    }
    Err(PyTypeError::new_err(format!(
        "expected an Arrow object (with __arrow_c_stream__ or __arrow_c_array__: a pyarrow \
         Table, RecordBatch or RecordBatchReader, a polars DataFrame, ...), not {}",
        data.get_type().name()?
    )))
}

/// Record batches read from cidcache, exported through the Arrow PyCapsule interface.
///
/// `pyarrow.table(s)`, `polars.DataFrame(s)`, `duckdb.from_arrow(s)` and any other consumer of
/// `__arrow_c_stream__` read it without copying: the buffers are the shared-memory object's,
/// and the object stays pinned while the stream, or any array imported from it, lives.
/// Exporting again gives another stream over the same buffers.
#[pyclass(module = "cidcache._native", name = "ArrowStream", frozen)]
pub(crate) struct ArrowStream {
    inner: Mutex<Option<(SchemaRef, Vec<RecordBatch>)>>,
}

impl ArrowStream {
    pub(crate) fn new(schema: SchemaRef, batches: Vec<RecordBatch>) -> ArrowStream {
        ArrowStream {
            inner: Mutex::new(Some((schema, batches))),
        }
    }

    fn get(&self) -> PyResult<(SchemaRef, Vec<RecordBatch>)> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| PyValueError::new_err("this ArrowStream was released"))
    }
}

#[pymethods]
impl ArrowStream {
    /// An `ArrowArrayStream` capsule over the batches (Arrow PyCapsule interface). The requested
    /// schema is not applied (allowed by the interface): the stored types are exported.
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let (schema, batches) = self.get()?;
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
        let stream = FFI_ArrowArrayStream::new(Box::new(reader));
        PyCapsule::new_with_value(py, stream, STREAM)
    }

    /// An `ArrowSchema` capsule of the batches' schema.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let (schema, _) = self.get()?;
        let s = FFI_ArrowSchema::try_from(schema.as_ref())
            .map_err(|e| to_py(Error::Arrow(e.to_string())))?;
        PyCapsule::new_with_value(py, s, SCHEMA)
    }

    /// Number of rows.
    #[getter]
    fn num_rows(&self) -> PyResult<usize> {
        Ok(self.get()?.1.iter().map(|b| b.num_rows()).sum())
    }

    /// Number of record batches.
    #[getter]
    fn num_batches(&self) -> PyResult<usize> {
        Ok(self.get()?.1.len())
    }

    /// Column names.
    #[getter]
    fn column_names(&self) -> PyResult<Vec<String>> {
        Ok(self
            .get()?
            .0
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect())
    }

    /// Drops this stream's reference to the batches (streams exported before keep theirs).
    fn release(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn __repr__(&self) -> String {
        match self.get() {
            Ok((s, b)) => format!(
                "<cidcache.ArrowStream {} columns, {} rows in {} batches>",
                s.fields().len(),
                b.iter().map(|b| b.num_rows()).sum::<usize>(),
                b.len()
            ),
            Err(_) => "<cidcache.ArrowStream (released)>".into(),
        }
    }
}

/// An empty schema (for results without batches).
pub(crate) fn empty_schema() -> SchemaRef {
    Arc::new(Schema::empty())
}
