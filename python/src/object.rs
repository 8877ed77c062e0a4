//! `cidcache.Object`: a pinned object in shared memory that exports its bytes through the buffer
//! protocol, zero-copy.
//!
//! The type is built with `PyType_FromSpec` and raw slots rather than `#[pyclass]` because pyo3
//! offers buffer slots only for a 3.11 stable-ABI baseline (see `buffer.rs` for why the slots are
//! sound from 3.9 on). Lifetime: every buffer view (`memoryview`, a numpy array over it, ...)
//! holds a reference to the `Object` (`PyBuffer_FillInfo` sets `view.obj`), and the `Object`
//! owns the `ObjectRef`, whose drop unpins; so the pin lasts while the `Object` or any view of it
//! lives, and goes with the last of them. `release()` unpins early and refuses while views live.

use crate::buffer::{PyBufferRaw, PyBuffer_FillInfo, PY_BF_GETBUFFER, PY_BF_RELEASEBUFFER};
use cidcache::ObjectRef;
use pyo3::exceptions::{PyBufferError, PyTypeError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyType};
use std::ffi::{c_int, c_void, CStr};
use std::mem::ManuallyDrop;
use std::ptr;

/// The instance layout: the object header, then our fields (only touched with the GIL held).
#[repr(C)]
struct RawObject {
    ob_base: ffi::PyObject,
    obj: ManuallyDrop<Option<ObjectRef>>,
    exports: usize,
}

static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// The `Object` type (created once per interpreter).
pub(crate) fn object_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    TYPE.get_or_try_init(py, || make_type(py))
        .map(|t| t.bind(py))
}

/// A new Python `Object` owning `o`.
pub(crate) fn new_object(py: Python<'_>, o: ObjectRef) -> PyResult<Py<PyAny>> {
    let tp = object_type(py)?;
    // SAFETY: `tp` is our heap type (GenericAlloc zero-fills the instance and takes a reference
    // to the type, released in `dealloc`); the fields are then initialised before anything can
    // see the object.
    unsafe {
        let raw = ffi::PyType_GenericAlloc(tp.as_type_ptr(), 0);
        if raw.is_null() {
            return Err(PyErr::fetch(py));
        }
        let r = raw as *mut RawObject;
        ptr::addr_of_mut!((*r).obj).write(ManuallyDrop::new(Some(o)));
        ptr::addr_of_mut!((*r).exports).write(0);
        Ok(Bound::from_owned_ptr(py, raw).unbind())
    }
}

/// # Safety
/// `slf` must be a live instance of the Object type, with the GIL held.
unsafe fn fields<'a>(slf: *mut ffi::PyObject) -> &'a mut RawObject {
    // SAFETY: per the caller contract.
    unsafe { &mut *(slf as *mut RawObject) }
}

fn released() -> PyErr {
    PyValueError::new_err("this cidcache.Object was released")
}

/// Runs `f` with the GIL token and turns an error into a raised exception + `err` value.
fn wrap<T>(err: T, f: impl FnOnce(Python<'_>) -> PyResult<T>) -> T {
    // SAFETY: slot functions are called by the interpreter with the GIL held.
    let py = unsafe { Python::assume_attached() };
    match f(py) {
        Ok(v) => v,
        Err(e) => {
            e.restore(py);
            err
        }
    }
}

unsafe extern "C" fn getbuffer(
    slf: *mut ffi::PyObject,
    view: *mut PyBufferRaw,
    flags: c_int,
) -> c_int {
    wrap(-1, |py| {
        if view.is_null() {
            return Err(PyBufferError::new_err("NULL view"));
        }
        // SAFETY: slf is our instance (the slot is only installed on our type); GIL held.
        let f = unsafe { fields(slf) };
        let Some(o) = f.obj.as_ref() else {
            return Err(released());
        };
        let data = o.data();
        // SAFETY: `view` is the caller's Py_buffer; the bytes stay valid while `slf` lives
        // (FillInfo stores a new reference to `slf` in view.obj). Read-only: a writable request
        // is refused by FillInfo with BufferError.
        let rc = unsafe {
            PyBuffer_FillInfo(
                view,
                slf,
                data.as_ptr() as *mut c_void,
                data.len() as ffi::Py_ssize_t,
                1,
                flags,
            )
        };
        if rc != 0 {
            return Err(PyErr::fetch(py));
        }
        f.exports += 1;
        Ok(0)
    })
}

unsafe extern "C" fn releasebuffer(slf: *mut ffi::PyObject, _view: *mut PyBufferRaw) {
    // SAFETY: our instance, GIL held.
    let f = unsafe { fields(slf) };
    f.exports = f.exports.saturating_sub(1);
}

unsafe extern "C" fn dealloc(slf: *mut ffi::PyObject) {
    // SAFETY: our instance being destroyed (refcount 0), GIL held; fields dropped exactly once,
    // then the memory freed with the type's tp_free and the type reference taken by
    // GenericAlloc released.
    unsafe {
        let f = fields(slf);
        ManuallyDrop::drop(&mut f.obj);
        let tp = ffi::Py_TYPE(slf);
        let free = ffi::PyType_GetSlot(tp, ffi::Py_tp_free);
        if !free.is_null() {
            let free: ffi::freefunc = std::mem::transmute(free);
            free(slf as *mut c_void);
        }
        ffi::Py_DECREF(tp as *mut ffi::PyObject);
    }
}

unsafe extern "C" fn tp_new(
    _t: *mut ffi::PyTypeObject,
    _a: *mut ffi::PyObject,
    _k: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |_| {
        Err(PyTypeError::new_err(
            "cidcache.Object instances come from Client.get(); they cannot be created directly",
        ))
    })
}

unsafe extern "C" fn length(slf: *mut ffi::PyObject) -> ffi::Py_ssize_t {
    wrap(-1, |_| {
        // SAFETY: our instance, GIL held.
        let f = unsafe { fields(slf) };
        let o = f.obj.as_ref().ok_or_else(released)?;
        Ok(o.data().len() as ffi::Py_ssize_t)
    })
}

unsafe extern "C" fn repr(slf: *mut ffi::PyObject) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |py| {
        // SAFETY: our instance, GIL held.
        let f = unsafe { fields(slf) };
        let s = match f.obj.as_ref() {
            Some(o) => format!(
                "<cidcache.Object {} size={}{}>",
                crate::keys::display(o.key().as_bytes()),
                o.data().len(),
                if o.is_arrow() { " arrow" } else { "" }
            ),
            None => "<cidcache.Object (released)>".to_string(),
        };
        Ok(pyo3::types::PyString::new(py, &s).into_ptr())
    })
}

unsafe extern "C" fn get_key(slf: *mut ffi::PyObject, _c: *mut c_void) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |py| {
        // SAFETY: our instance, GIL held.
        let o = unsafe { fields(slf) }.obj.as_ref().ok_or_else(released)?;
        Ok(PyBytes::new(py, o.key().as_bytes()).into_ptr())
    })
}

unsafe extern "C" fn get_cid(slf: *mut ffi::PyObject, _c: *mut c_void) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |py| {
        // SAFETY: our instance, GIL held.
        let o = unsafe { fields(slf) }.obj.as_ref().ok_or_else(released)?;
        let s = crate::keys::display(o.key().as_bytes());
        Ok(pyo3::types::PyString::new(py, &s).into_ptr())
    })
}

unsafe extern "C" fn get_metadata(slf: *mut ffi::PyObject, _c: *mut c_void) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |py| {
        // SAFETY: our instance, GIL held.
        let o = unsafe { fields(slf) }.obj.as_ref().ok_or_else(released)?;
        Ok(PyBytes::new(py, o.metadata()).into_ptr())
    })
}

unsafe extern "C" fn get_is_arrow(slf: *mut ffi::PyObject, _c: *mut c_void) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |py| {
        // SAFETY: our instance, GIL held.
        let o = unsafe { fields(slf) }.obj.as_ref().ok_or_else(released)?;
        Ok(pyo3::types::PyBool::new(py, o.is_arrow())
            .to_owned()
            .into_any()
            .into_ptr())
    })
}

unsafe extern "C" fn get_released(slf: *mut ffi::PyObject, _c: *mut c_void) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |py| {
        // SAFETY: our instance, GIL held.
        let r = unsafe { fields(slf) }.obj.is_none();
        Ok(pyo3::types::PyBool::new(py, r)
            .to_owned()
            .into_any()
            .into_ptr())
    })
}

fn do_release(slf: *mut ffi::PyObject) -> PyResult<()> {
    // SAFETY: our instance, GIL held.
    let f = unsafe { fields(slf) };
    if f.exports > 0 {
        return Err(PyBufferError::new_err(format!(
            "{} buffer view(s) of this object are alive; release them before the object",
            f.exports
        )));
    }
    drop(f.obj.take());
    Ok(())
}

unsafe extern "C" fn m_release(
    slf: *mut ffi::PyObject,
    _a: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |py| {
        do_release(slf)?;
        Ok(py.None().into_ptr())
    })
}

unsafe extern "C" fn m_enter(
    slf: *mut ffi::PyObject,
    _a: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: returning a new reference to ourselves.
    unsafe { ffi::Py_INCREF(slf) };
    slf
}

unsafe extern "C" fn m_exit(slf: *mut ffi::PyObject, _a: *mut ffi::PyObject) -> *mut ffi::PyObject {
    wrap(ptr::null_mut(), |py| {
        do_release(slf)?;
        Ok(py.None().into_ptr())
    })
}

const DOC: &CStr = c"A pinned, sealed object in cidcache's shared memory.\n\n\
memoryview(obj), numpy.frombuffer(obj), bytes(obj): the object's bytes, zero-copy and read-only \
(bytes() copies). The object stays pinned, so its bytes stay valid and unchanged, while this \
Object or any view of it lives; the last one to go unpins it. release() (or leaving a `with` \
block) unpins at once when no view is alive.";

fn make_type(py: Python<'_>) -> PyResult<Py<PyType>> {
    // Leaked once per process: the tables must outlive the type, which lives as long as the
    // interpreter.
    let methods: &'static mut [ffi::PyMethodDef] = Box::leak(Box::new([
        ffi::PyMethodDef {
            ml_name: c"release".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: m_release },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: c"release()\n--\n\nUnpins now. Raises BufferError while buffer views of the object are alive.".as_ptr(),
        },
        ffi::PyMethodDef {
            ml_name: c"__enter__".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: m_enter },
            ml_flags: ffi::METH_NOARGS,
            ml_doc: ptr::null(),
        },
        ffi::PyMethodDef {
            ml_name: c"__exit__".as_ptr(),
            ml_meth: ffi::PyMethodDefPointer { PyCFunction: m_exit },
            ml_flags: ffi::METH_VARARGS,
            ml_doc: ptr::null(),
        },
        ffi::PyMethodDef::zeroed(),
    ]));
    let getset = |name: &'static CStr, get: ffi::getter, doc: &'static CStr| ffi::PyGetSetDef {
        name: name.as_ptr(),
        get: Some(get),
        set: None,
        doc: doc.as_ptr(),
        closure: ptr::null_mut(),
    };
    let getsets: &'static mut [ffi::PyGetSetDef] = Box::leak(Box::new([
        getset(c"key", get_key, c"The key (bytes)."),
        getset(c"cid", get_cid, c"The key as text: the CID, or 0x + hex."),
        getset(
            c"metadata",
            get_metadata,
            c"The object's metadata bytes (a copy).",
        ),
        getset(
            c"is_arrow",
            get_is_arrow,
            c"Whether the object was stored as Arrow.",
        ),
        getset(c"released", get_released, c"Whether release() was called."),
        ffi::PyGetSetDef::default(),
    ]));
    let slot = |slot: c_int, pfunc: *mut c_void| ffi::PyType_Slot { slot, pfunc };
    let slots: &'static mut [ffi::PyType_Slot] = Box::leak(Box::new([
        slot(ffi::Py_tp_dealloc, dealloc as *mut c_void),
        slot(ffi::Py_tp_new, tp_new as *mut c_void),
        slot(ffi::Py_tp_repr, repr as *mut c_void),
        slot(ffi::Py_tp_doc, DOC.as_ptr() as *mut c_void),
        slot(ffi::Py_tp_methods, methods.as_mut_ptr() as *mut c_void),
        slot(ffi::Py_tp_getset, getsets.as_mut_ptr() as *mut c_void),
        slot(ffi::Py_mp_length, length as *mut c_void),
        slot(ffi::Py_sq_length, length as *mut c_void),
        slot(PY_BF_GETBUFFER, getbuffer as *mut c_void),
        slot(PY_BF_RELEASEBUFFER, releasebuffer as *mut c_void),
        slot(0, ptr::null_mut()),
    ]));
    let spec: &'static mut ffi::PyType_Spec = Box::leak(Box::new(ffi::PyType_Spec {
        name: c"cidcache._native.Object".as_ptr(),
        basicsize: std::mem::size_of::<RawObject>() as c_int,
        itemsize: 0,
        flags: ffi::Py_TPFLAGS_DEFAULT as _,
        slots: slots.as_mut_ptr(),
    }));
    // SAFETY: a complete spec with 'static tables; returns a new reference or NULL + exception.
    let t = unsafe { ffi::PyType_FromSpec(spec) };
    if t.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a new, owned reference to a type object.
    let any = unsafe { Bound::from_owned_ptr(py, t) };
    Ok(any.cast_into::<PyType>()?.unbind())
}
