//! Rust errors to Python exceptions: each status code ([`cidcache::Code`]) has its own exception
//! class, defined in `cidcache/_errors.py` (so that they can also derive from the matching
//! built-in exceptions: `NotFound` is a `KeyError`, `Timeout` a `TimeoutError`, ...).

use cidcache::{Code, Error};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyType};

static CLASSES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

fn classes(py: Python<'_>) -> Option<&Bound<'_, PyDict>> {
    CLASSES
        .get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            let m = py.import("cidcache._errors")?;
            Ok(m.getattr("BY_CODE")?.cast_into::<PyDict>()?.unbind())
        })
        .ok()
        .map(|d| d.bind(py))
}

/// The exception class for `code` (`cidcache.Error` subclasses; `RuntimeError` if the Python
/// side of the package is missing).
pub(crate) fn class_of(py: Python<'_>, code: Code) -> Bound<'_, PyType> {
    classes(py)
        .and_then(|d| d.get_item(code as u16).ok().flatten())
        .and_then(|c| c.cast_into::<PyType>().ok())
        .unwrap_or_else(|| py.get_type::<PyRuntimeError>())
}

/// The Python exception for `e`: its class by code, its message, `code` set by the class.
pub(crate) fn to_py(e: Error) -> PyErr {
    Python::attach(|py| exception_of(py, &e))
}

pub(crate) fn exception_of(py: Python<'_>, e: &Error) -> PyErr {
    let cls = class_of(py, e.code());
    match cls.call1((e.message(),)) {
        Ok(inst) => PyErr::from_value(inst),
        Err(err) => err,
    }
}

/// An exception instance (not raised), for per-item results of batch calls.
pub(crate) fn instance(py: Python<'_>, e: &Error) -> Py<PyAny> {
    exception_of(py, e).into_value(py).into_any()
}

/// `Result<T, cidcache::Error>` into `PyResult<T>`.
pub(crate) trait IntoPy<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, Error> {
    #[inline]
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// The error a closed client gives.
pub(crate) fn closed() -> PyErr {
    to_py(Error::Disconnected(
        "this client is closed; create a new cidcache.Client".into(),
    ))
}
