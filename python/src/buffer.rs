//! The CPython buffer protocol, declared here because the stable ABI that this module targets
//! (abi3, CPython >= 3.9) formally gained `Py_buffer` and its functions only in 3.11, so pyo3
//! leaves them out for a 3.9 baseline.
//!
//! Why this is sound on 3.9 and 3.10 too: `Py_buffer`'s layout and the functions below have not
//! changed since CPython 3.3 (3.11 added them to the limited API as they were), the two type
//! slots `Py_bf_getbuffer` = 1 and `Py_bf_releasebuffer` = 2 have been accepted by
//! `PyType_FromSpec` at run time since 3.3 (numbered in `typeslots.h`, only hidden from limited
//! API headers before 3.11), and every CPython exports these symbols. PyPy and free-threaded
//! builds are not targets of the abi3 wheel.

use pyo3::ffi;
use pyo3::prelude::*;
use std::ffi::{c_char, c_int, c_void};

/// `Py_buffer` as CPython declares it (identical on every CPython >= 3.3).
#[repr(C)]
pub(crate) struct PyBufferRaw {
    pub buf: *mut c_void,
    pub obj: *mut ffi::PyObject,
    pub len: ffi::Py_ssize_t,
    pub itemsize: ffi::Py_ssize_t,
    pub readonly: c_int,
    pub ndim: c_int,
    pub format: *mut c_char,
    pub shape: *mut ffi::Py_ssize_t,
    pub strides: *mut ffi::Py_ssize_t,
    pub suboffsets: *mut ffi::Py_ssize_t,
    pub internal: *mut c_void,
}

/// Type slot numbers of the buffer procedures (stable ABI values).
pub(crate) const PY_BF_GETBUFFER: c_int = 1;
pub(crate) const PY_BF_RELEASEBUFFER: c_int = 2;
/// `PyBUF_SIMPLE`: a contiguous block of bytes, no format.
const PYBUF_SIMPLE: c_int = 0;

extern "C" {
    pub(crate) fn PyBuffer_FillInfo(
        view: *mut PyBufferRaw,
        o: *mut ffi::PyObject,
        buf: *mut c_void,
        len: ffi::Py_ssize_t,
        readonly: c_int,
        flags: c_int,
    ) -> c_int;
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut PyBufferRaw, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut PyBufferRaw);
}

/// A contiguous read-only view of any object with the buffer protocol (`bytes`, `bytearray`,
/// `memoryview`, numpy arrays, `mmap`, a cidcache `Object`, ...), released on drop.
///
/// The exporter keeps the bytes alive and unmoved while the view exists (that is the protocol's
/// contract); the view holds a reference to the exporter. Dropping needs the GIL (it calls
/// `PyBuffer_Release`): drop it on a thread attached to Python.
pub(crate) struct InBuffer {
    view: PyBufferRaw,
}

// SAFETY: the bytes are readable from any thread while the exporter holds them (the buffer
// protocol's guarantee); the release happens where the owner drops it, with the GIL (documented).
unsafe impl Send for InBuffer {}
// SAFETY: only shared reads of the bytes are handed out.
unsafe impl Sync for InBuffer {}

impl InBuffer {
    /// Acquires a simple (contiguous, byte-addressed) view of `obj`. A `TypeError` when `obj`
    /// has no buffer protocol, a `BufferError` when it cannot give a contiguous one.
    pub(crate) fn get(obj: &Bound<'_, PyAny>) -> PyResult<InBuffer> {
        let mut view = std::mem::MaybeUninit::<PyBufferRaw>::zeroed();
        // SAFETY: `obj` is a live object (we hold the GIL through `Bound`); `view` is writable
        // memory of Py_buffer's layout; on success CPython fills it and we own the release.
        let rc = unsafe { PyObject_GetBuffer(obj.as_ptr(), view.as_mut_ptr(), PYBUF_SIMPLE) };
        if rc != 0 {
            return Err(PyErr::fetch(obj.py()));
        }
        // SAFETY: initialised by the successful call above.
        Ok(InBuffer {
            view: unsafe { view.assume_init() },
        })
    }

    /// The bytes.
    pub(crate) fn as_slice(&self) -> &[u8] {
        if self.view.len <= 0 || self.view.buf.is_null() {
            return &[];
        }
        // SAFETY: a PyBUF_SIMPLE view is `len` contiguous bytes at `buf`, valid until release.
        unsafe { std::slice::from_raw_parts(self.view.buf as *const u8, self.view.len as usize) }
    }
}

impl Drop for InBuffer {
    fn drop(&mut self) {
        // SAFETY: the view came from a successful PyObject_GetBuffer and is released once. The
        // owner drops it with the GIL held (see the type's documentation); to be safe when that
        // is not so, attach first.
        Python::attach(|_| unsafe { PyBuffer_Release(&mut self.view) });
    }
}
