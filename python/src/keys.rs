//! Keys from Python values, read as the command line reads them (`cidcache::cid::parse_key_arg`)
//! with one addition for names:
//! - `bytes` (or any bytes-like object): the key bytes as they are;
//! - `str` starting with `0x`: hexadecimal bytes;
//! - another `str` that parses as a CID (CIDv0 `Qm...`, CIDv1 in any multibase): its binary form;
//! - any other `str`: its UTF-8 bytes (a name such as `"model/weights"`).
//!
//! Keys are 1 to 63 bytes; anything else is `cidcache.InvalidKey`.

use crate::buffer::InBuffer;
use crate::errors::IntoPy;
use cidcache::Key;
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

/// The key of a `str`.
pub(crate) fn key_of_str(s: &str) -> cidcache::Result<Key> {
    if s.starts_with("0x") {
        return Key::new(&cidcache::cid::parse_key_arg(s)?);
    }
    if s.len() <= 2 * cidcache::key::MAX_KEY_LEN + 8 {
        if let Ok(b) = cidcache::cid::parse(s) {
            return Key::new(&b);
        }
    }
    Key::new(s.as_bytes())
}

/// The key of a Python value (see the module documentation).
#[inline]
pub(crate) fn key_of(obj: &Bound<'_, PyAny>) -> PyResult<Key> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Key::new(b.as_bytes()).py_err();
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return key_of_str(&s.to_cow()?).py_err();
    }
    match InBuffer::get(obj) {
        Ok(b) => Key::new(b.as_slice()).py_err(),
        Err(_) => Err(PyTypeError::new_err(format!(
            "a key is bytes, str or a CID string, not {}",
            obj.get_type().name()?
        ))),
    }
}

/// The text form of a key: the CID when it is one, else `0x` + hex.
pub(crate) fn display(key: &[u8]) -> String {
    cidcache::cid::format_key(key)
}
