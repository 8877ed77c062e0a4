//! The compiled part of the `cidcache` Python package (`cidcache._native`), built by maturin
//! with PyO3 on the Rust client. The Python package (`python/cidcache/`) wraps it: see
//! `docs/python.md`.

mod aio;
mod arrow;
mod buffer;
mod client;
mod errors;
mod keys;
mod object;

use pyo3::prelude::*;

/// The binary form of a key given as bytes, a CID string, `0x` hex, or a name.
#[pyfunction]
fn parse_key(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<pyo3::types::PyBytes>> {
    let k = keys::key_of(key)?;
    Ok(pyo3::types::PyBytes::new(py, k.as_bytes()).unbind())
}

/// The text form of a key: its CID when it is one, else `0x` + hex.
#[pyfunction]
fn format_key(key: &Bound<'_, PyAny>) -> PyResult<String> {
    let k = keys::key_of(key)?;
    Ok(keys::display(k.as_bytes()))
}

/// The CIDv1 (raw codec, sha2-256) of `data`, as text.
#[pyfunction]
fn cid_of(data: &Bound<'_, PyAny>) -> PyResult<String> {
    let b = buffer::InBuffer::get(data)?;
    Ok(keys::display(&cidcache::cid::cid_v1_raw(b.as_slice())))
}

/// `(cid_version, multihash_type)` of a key that is a CID (as the catalog records them), else
/// `None`.
#[pyfunction]
fn cid_info(key: &Bound<'_, PyAny>) -> PyResult<Option<(u8, String)>> {
    let k = keys::key_of(key)?;
    let e = cidcache::tier::catalog::CatalogEntry::new(k, 0, 0);
    Ok(e.cid_version.zip(e.multihash_type))
}

/// The exception instance cidcache raises for status code `code` (tests check the mapping of
/// every code through this, the same conversion every call uses).
#[pyfunction]
fn _error_for_code(py: Python<'_>, code: u16, message: String) -> Py<PyAny> {
    errors::instance(
        py,
        &cidcache::Error::from_code(cidcache::Code::from_u16(code), message),
    )
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<client::PyClient>()?;
    m.add_class::<arrow::ArrowStream>()?;
    m.add_class::<aio::Poller>()?;
    m.add_class::<aio::Op>()?;
    m.add("Object", object::object_type(m.py())?)?;
    m.add_function(wrap_pyfunction!(parse_key, m)?)?;
    m.add_function(wrap_pyfunction!(format_key, m)?)?;
    m.add_function(wrap_pyfunction!(cid_of, m)?)?;
    m.add_function(wrap_pyfunction!(cid_info, m)?)?;
    m.add_function(wrap_pyfunction!(_error_for_code, m)?)?;
    Ok(())
}
