//! Python objects <-> payload bytes.
//!
//! Encoding walks the object once and writes compact JSON straight into a
//! byte buffer (no intermediate Python or serde tree): dict, list, tuple,
//! str, int, float, bool, None, dataclasses, pydantic v2 models, msgspec-like
//! structs, datetime/date/time, UUID, Decimal, Enum, set. Bytes-like objects
//! pass through untouched and str goes out as UTF-8 text; everything else
//! becomes JSON with `Content-Type: application/json`.
//!
//! Decoding builds Python objects directly from the JSON tokens.

use std::cell::Cell;

use bytes::Bytes;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyFrozenSet, PyInt, PyList, PyMemoryView, PySet,
    PyString, PyTuple, PyType,
};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use natsbus_core::{Error, ErrorKind};

/// The payload and whether it is JSON (so the caller sets Content-Type).
pub struct Encoded {
    pub payload: Bytes,
    pub is_json: bool,
}

const MAX_DEPTH: usize = 256;

/// Lazily imported types the encoder recognises without importing on every call.
struct Known {
    datetime: Py<PyType>,
    date: Py<PyType>,
    time: Py<PyType>,
    uuid: Py<PyType>,
    decimal: Py<PyType>,
    enum_: Py<PyType>,
}

static KNOWN: PyOnceLock<Known> = PyOnceLock::new();

fn known(py: Python<'_>) -> PyResult<&Known> {
    KNOWN.get_or_try_init(py, || {
        let dt = py.import("datetime")?;
        let ty = |m: &Bound<'_, PyModule>, n: &str| -> PyResult<Py<PyType>> {
            Ok(m.getattr(n)?.cast_into::<PyType>()?.unbind())
        };
        Ok(Known {
            datetime: ty(&dt, "datetime")?,
            date: ty(&dt, "date")?,
            time: ty(&dt, "time")?,
            uuid: ty(&py.import("uuid")?, "UUID")?,
            decimal: ty(&py.import("decimal")?, "Decimal")?,
            enum_: ty(&py.import("enum")?, "Enum")?,
        })
    })
}

/// An encoding failure; the path to the failing value is collected while
/// the error travels up (so a successful encode never formats a path).
struct EncodeFailure {
    path_rev: Vec<String>,
    message: String,
}

impl EncodeFailure {
    fn new(message: impl std::fmt::Display) -> Self {
        EncodeFailure {
            path_rev: Vec::new(),
            message: message.to_string(),
        }
    }

    fn at_key(mut self, key: &str) -> Self {
        self.path_rev.push(format!(
            "['{}']",
            key.replace('\\', "\\\\").replace('\'', "\\'")
        ));
        self
    }

    fn at_index(mut self, i: usize) -> Self {
        self.path_rev.push(format!("[{i}]"));
        self
    }

    fn at_attr(mut self, name: &str) -> Self {
        self.path_rev.push(format!(".{name}"));
        self
    }

    fn into_error(self) -> Error {
        let mut path = String::from("payload");
        for seg in self.path_rev.iter().rev() {
            path.push_str(seg);
        }
        Error::new(ErrorKind::Encode, format!("{path}: {}", self.message))
    }
}

type Enc<T = ()> = Result<T, EncodeFailure>;

/// The UTF-8 text of a str without copying it (CPython caches it in the object).
fn utf8<'a>(s: &'a Bound<'_, PyString>) -> Enc<&'a str> {
    let mut size: pyo3::ffi::Py_ssize_t = 0;
    // SAFETY: `s` is a live str object (we hold a reference through `'a`);
    // the returned buffer belongs to it and lives as long as it does.
    unsafe {
        let data = pyo3::ffi::PyUnicode_AsUTF8AndSize(s.as_ptr(), &mut size);
        if data.is_null() {
            let err = PyErr::fetch(s.py());
            return Err(EncodeFailure::new(err));
        }
        let bytes = std::slice::from_raw_parts(data.cast::<u8>(), size as usize);
        Ok(std::str::from_utf8_unchecked(bytes))
    }
}

/// Encode a payload for publish/request/reply.
pub fn encode(obj: &Bound<'_, PyAny>) -> Result<Encoded, Error> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(Encoded {
            payload: Bytes::copy_from_slice(b.as_bytes()),
            is_json: false,
        });
    }
    if let Ok(s) = obj.cast_exact::<PyString>() {
        let text = utf8(s).map_err(EncodeFailure::into_error)?;
        return Ok(Encoded {
            payload: Bytes::copy_from_slice(text.as_bytes()),
            is_json: false,
        });
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(Encoded {
            payload: Bytes::from(b.to_vec()),
            is_json: false,
        });
    }
    if obj.is_instance_of::<PyMemoryView>() {
        let bytes = obj
            .call_method0("tobytes")
            .and_then(|b| b.extract::<Vec<u8>>())
            .map_err(|e| EncodeFailure::new(e).into_error())?;
        return Ok(Encoded {
            payload: Bytes::from(bytes),
            is_json: false,
        });
    }
    // A pydantic model serialises itself, in Rust, faster than any walk.
    if is_pydantic_model(obj) {
        let dumped = obj
            .call_method0(pyo3::intern!(obj.py(), "model_dump_json"))
            .map_err(|e| EncodeFailure::new(e).into_error())?;
        let s = dumped
            .cast::<PyString>()
            .map_err(|e| EncodeFailure::new(e).into_error())?;
        let text = utf8(s).map_err(EncodeFailure::into_error)?;
        return Ok(Encoded {
            payload: Bytes::copy_from_slice(text.as_bytes()),
            is_json: true,
        });
    }
    let mut out = Vec::with_capacity(256);
    write_json(obj, &mut out, 0).map_err(EncodeFailure::into_error)?;
    Ok(Encoded {
        payload: Bytes::from(out),
        is_json: true,
    })
}

/// A pydantic v2 model instance (checked on the type: instance access to
/// `model_fields` is deprecated in pydantic).
fn is_pydantic_model(obj: &Bound<'_, PyAny>) -> bool {
    let py = obj.py();
    let ty = obj.get_type();
    !obj.is_instance_of::<PyType>()
        && ty
            .hasattr(pyo3::intern!(py, "model_fields"))
            .unwrap_or(false)
        && ty
            .hasattr(pyo3::intern!(py, "model_dump_json"))
            .unwrap_or(false)
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaper: same output as json.dumps(ensure_ascii=False).
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_json(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> Enc {
    if depth > MAX_DEPTH {
        return Err(EncodeFailure::new("nested too deeply (cycle?)"));
    }
    // The common JSON types first, by exact type (a pointer compare each).
    if let Ok(s) = obj.cast_exact::<PyString>() {
        write_str(out, utf8(s)?);
        return Ok(());
    }
    if let Ok(d) = obj.cast_exact::<PyDict>() {
        return write_dict(d, out, depth);
    }
    if obj.cast_exact::<PyInt>().is_ok() {
        return write_int(obj, out);
    }
    if let Ok(f) = obj.cast_exact::<PyFloat>() {
        return write_float(f.value(), out);
    }
    if let Ok(l) = obj.cast_exact::<PyList>() {
        return write_seq(l.iter(), out, depth);
    }
    if obj.is_none() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
        return Ok(());
    }
    write_other(obj, out, depth)
}

fn write_int(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> Enc {
    if let Ok(v) = obj.extract::<i64>() {
        out.extend_from_slice(v.to_string().as_bytes());
    } else if let Ok(v) = obj.extract::<u64>() {
        out.extend_from_slice(v.to_string().as_bytes());
    } else {
        // Arbitrary precision: Python's own decimal text is valid JSON.
        let s = obj.str().map_err(EncodeFailure::new)?;
        out.extend_from_slice(utf8(&s)?.as_bytes());
    }
    Ok(())
}

fn write_float(v: f64, out: &mut Vec<u8>) -> Enc {
    if !v.is_finite() {
        return Err(EncodeFailure::new(format!(
            "{v} is not valid JSON (NaN and infinity have no JSON form)"
        )));
    }
    let _ = serde_json::to_writer(&mut *out, &v);
    Ok(())
}

fn write_dict(d: &Bound<'_, PyDict>, out: &mut Vec<u8>, depth: usize) -> Enc {
    out.push(b'{');
    let mut first = true;
    for (k, v) in d.iter() {
        if !first {
            out.push(b',');
        }
        first = false;
        if let Ok(ks) = k.cast::<PyString>() {
            let key = utf8(ks)?;
            write_str(out, key);
            out.push(b':');
            write_json(&v, out, depth + 1).map_err(|e| e.at_key(key))?;
        } else {
            let key = dict_key(&k).ok_or_else(|| {
                EncodeFailure::new(format!(
                    "dict keys must be str, int, float, bool or None, not {}",
                    type_name(&k)
                ))
            })?;
            write_str(out, &key);
            out.push(b':');
            write_json(&v, out, depth + 1).map_err(|e| e.at_key(&key))?;
        }
    }
    out.push(b'}');
    Ok(())
}

/// Everything that is not a plain JSON type (subclasses included).
fn write_other(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>, depth: usize) -> Enc {
    let py = obj.py();
    if let Ok(s) = obj.cast::<PyString>() {
        write_str(out, utf8(s)?);
        return Ok(());
    }
    if obj.is_instance_of::<PyBool>() {
        let b = obj.is_truthy().map_err(EncodeFailure::new)?;
        out.extend_from_slice(if b { b"true" } else { b"false" });
        return Ok(());
    }
    let k = known(py).map_err(EncodeFailure::new)?;
    // Enums first: an IntEnum is also an int, a StrEnum also a str.
    if obj.is_instance(k.enum_.bind(py)).unwrap_or(false) {
        let v = obj.getattr("value").map_err(EncodeFailure::new)?;
        return write_json(&v, out, depth + 1);
    }
    if obj.is_instance_of::<PyInt>() {
        return write_int(obj, out);
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        return write_float(f.value(), out);
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return write_dict(d, out, depth);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return write_seq(l.iter(), out, depth);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return write_seq(t.iter(), out, depth);
    }
    if obj.is_instance(k.datetime.bind(py)).unwrap_or(false)
        || obj.is_instance(k.date.bind(py)).unwrap_or(false)
        || obj.is_instance(k.time.bind(py)).unwrap_or(false)
    {
        let s = obj.call_method0("isoformat").map_err(EncodeFailure::new)?;
        let s = s.cast::<PyString>().map_err(EncodeFailure::new)?;
        write_str(out, utf8(s)?);
        return Ok(());
    }
    if obj.is_instance(k.uuid.bind(py)).unwrap_or(false)
        || obj.is_instance(k.decimal.bind(py)).unwrap_or(false)
    {
        let s = obj.str().map_err(EncodeFailure::new)?;
        write_str(out, utf8(&s)?);
        return Ok(());
    }
    if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
        let items: Vec<Bound<'_, PyAny>> = obj
            .try_iter()
            .map_err(EncodeFailure::new)?
            .collect::<PyResult<_>>()
            .map_err(EncodeFailure::new)?;
        return write_seq(items.into_iter(), out, depth);
    }
    // pydantic v2 model nested in a container: dump to plain JSON types.
    if is_pydantic_model(obj) {
        let kwargs = PyDict::new(py);
        let _ = kwargs.set_item("mode", "json");
        let plain = obj
            .call_method(pyo3::intern!(py, "model_dump"), (), Some(&kwargs))
            .map_err(EncodeFailure::new)?;
        return write_json(&plain, out, depth + 1);
    }
    // dataclass instance (not the class itself)
    if !obj.is_instance_of::<PyType>() {
        if let Ok(fields) = obj.getattr(pyo3::intern!(py, "__dataclass_fields__")) {
            return write_fields(obj, &fields, out, depth, true);
        }
        // msgspec-style structs
        if let Ok(fields) = obj.getattr(pyo3::intern!(py, "__struct_fields__")) {
            return write_fields(obj, &fields, out, depth, false);
        }
    }
    Err(EncodeFailure::new(format!(
        "cannot encode an object of type {} as JSON: pass bytes, str, a dict/list, a dataclass or a pydantic model",
        type_name(obj)
    )))
}

fn write_fields(
    obj: &Bound<'_, PyAny>,
    fields: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
    depth: usize,
    dataclass: bool,
) -> Enc {
    let py = obj.py();
    let names: Vec<String> = if dataclass {
        // __dataclass_fields__ holds ClassVar/InitVar pseudo-fields too;
        // only real fields (_field_type is _FIELD) belong in the payload.
        let field_marker = py
            .import("dataclasses")
            .and_then(|m| m.getattr("_FIELD"))
            .map_err(EncodeFailure::new)?;
        let d = fields.cast::<PyDict>().map_err(EncodeFailure::new)?;
        let mut v = Vec::with_capacity(d.len());
        for (name, field) in d.iter() {
            let is_field = field
                .getattr("_field_type")
                .map(|t| t.is(&field_marker))
                .unwrap_or(true);
            if is_field {
                v.push(name.extract::<String>().map_err(EncodeFailure::new)?);
            }
        }
        v
    } else {
        fields
            .extract::<Vec<String>>()
            .map_err(EncodeFailure::new)?
    };
    out.push(b'{');
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let value = obj
            .getattr(name.as_str())
            .map_err(|e| EncodeFailure::new(e).at_attr(name))?;
        write_str(out, name);
        out.push(b':');
        write_json(&value, out, depth + 1).map_err(|e| e.at_attr(name))?;
    }
    out.push(b'}');
    Ok(())
}

fn write_seq<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    out: &mut Vec<u8>,
    depth: usize,
) -> Enc {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json(&item, out, depth + 1).map_err(|e| e.at_index(i))?;
    }
    out.push(b']');
    Ok(())
}

fn dict_key(k: &Bound<'_, PyAny>) -> Option<String> {
    if k.is_none() {
        return Some("null".into());
    }
    if let Ok(b) = k.cast::<PyBool>() {
        return Some(if b.is_true() { "true" } else { "false" }.into());
    }
    if k.is_instance_of::<PyInt>() || k.is_instance_of::<PyFloat>() {
        return k.str().ok().map(|s| s.to_string());
    }
    None
}

pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

// ---------------------------------------------------------------- decoding

/// Builds Python objects from JSON tokens. `inexact` is set when a number
/// may have lost digits (an integer literal beyond 64 bits arrives as a
/// float): the caller then decodes the payload again with `json.loads`.
struct PySeed<'a, 'py>(Python<'py>, &'a Cell<bool>);

impl<'de, 'py> DeserializeSeed<'de> for PySeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(PyVisitor(self.0, self.1))
    }
}

struct PyVisitor<'a, 'py>(Python<'py>, &'a Cell<bool>);

fn de_err<E: serde::de::Error>(e: PyErr) -> E {
    E::custom(e.to_string())
}

impl<'de, 'py> Visitor<'de> for PyVisitor<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0, v).to_owned().into_any())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into_pyobject(self.0).map_err(|e| match e {})?.into_any())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into_pyobject(self.0).map_err(|e| match e {})?.into_any())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        // An integral value beyond 64 bits may have been a longer integer
        // literal, which Python keeps exact.
        if v.fract() == 0.0 && v.abs() >= 18_446_744_073_709_551_616.0 {
            self.1.set(true);
        }
        Ok(PyFloat::new(self.0, v).into_any())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0, v).into_any())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.0.None().into_bound(self.0))
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(self.0.None().into_bound(self.0))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.0);
        while let Some(v) = seq.next_element_seed(PySeed(self.0, self.1))? {
            list.append(v).map_err(de_err)?;
        }
        Ok(list.into_any())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0);
        while let Some(k) = map.next_key_seed(KeySeed(self.0))? {
            let v = map.next_value_seed(PySeed(self.0, self.1))?;
            dict.set_item(k, v).map_err(de_err)?;
        }
        Ok(dict.into_any())
    }
}

struct KeySeed<'py>(Python<'py>);

impl<'de, 'py> DeserializeSeed<'de> for KeySeed<'py> {
    type Value = Bound<'py, PyString>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        struct V<'py>(Python<'py>);
        impl<'de, 'py> Visitor<'de> for V<'py> {
            type Value = Bound<'py, PyString>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(PyString::new(self.0, v))
            }
        }
        d.deserialize_str(V(self.0))
    }
}

/// Decode JSON bytes into Python objects. The error text is serde_json's
/// (line and column included).
///
/// The result is what `json.loads` gives: integers of any size stay exact,
/// and a number beyond a float's range is `inf` (serde_json would refuse
/// both); those rare payloads are decoded by `json.loads` itself.
pub fn decode_json<'py>(py: Python<'py>, bytes: &[u8]) -> Result<Bound<'py, PyAny>, String> {
    let inexact = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fast = PySeed(py, &inexact)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    match fast {
        Ok(v) if !inexact.get() => Ok(v),
        Err(e) if !e.to_string().contains("number out of range") => Err(e.to_string()),
        _ => py
            .import("json")
            .and_then(|json| json.call_method1("loads", (PyBytes::new(py, bytes),)))
            .map_err(|e| e.to_string()),
    }
}

/// A `serde_json::Value` as Python objects (plans, health, topology dicts).
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    PySeed(py, &Cell::new(false))
        .deserialize(v)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Python objects (dicts from users) as a `serde_json::Value`.
pub fn py_to_json(obj: &Bound<'_, PyAny>) -> Result<serde_json::Value, Error> {
    let mut out = Vec::with_capacity(512);
    write_json(obj, &mut out, 0).map_err(EncodeFailure::into_error)?;
    serde_json::from_slice(&out).map_err(|e| Error::invalid(e.to_string()))
}
