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

use std::fmt::Write as _;

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

fn encode_error(path: &str, msg: impl std::fmt::Display) -> Error {
    let at = if path.is_empty() {
        "payload".to_string()
    } else {
        format!("payload{path}")
    };
    Error::new(ErrorKind::Encode, format!("{at}: {msg}"))
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
        let text = s.to_cow().map_err(|e| encode_error("", e))?;
        return Ok(Encoded {
            payload: Bytes::from(text.into_owned()),
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
            .map_err(|e| encode_error("", e))?;
        return Ok(Encoded {
            payload: Bytes::from(bytes),
            is_json: false,
        });
    }
    // A pydantic model serialises itself, in Rust, faster than any walk.
    if is_pydantic_model(obj) {
        if let Ok(dump) = obj.getattr(pyo3::intern!(obj.py(), "model_dump_json")) {
            let s = dump.call0().map_err(|e| encode_error("", e))?;
            let text: String = s.extract().map_err(|e| encode_error("", e))?;
            return Ok(Encoded {
                payload: Bytes::from(text),
                is_json: true,
            });
        }
    }
    let mut out = Vec::with_capacity(256);
    let mut path = String::new();
    write_json(obj, &mut out, &mut path, 0)?;
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

fn write_json(
    obj: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
    path: &mut String,
    depth: usize,
) -> Result<(), Error> {
    if depth > MAX_DEPTH {
        return Err(encode_error(path, "nested too deeply (cycle?)"));
    }
    let py = obj.py();
    if obj.is_none() {
        out.extend_from_slice(b"null");
        return Ok(());
    }
    if let Ok(s) = obj.cast::<PyString>() {
        write_str(out, &s.to_cow().map_err(|e| encode_error(path, e))?);
        return Ok(());
    }
    if let Ok(b) = obj.cast_exact::<PyBool>() {
        out.extend_from_slice(if b.is_true() { b"true" } else { b"false" });
        return Ok(());
    }
    if obj.is_instance_of::<PyInt>() && !obj.is_instance_of::<PyBool>() {
        if let Ok(v) = obj.extract::<i64>() {
            let mut buf = itoa_buf(v);
            out.append(&mut buf);
        } else if let Ok(v) = obj.extract::<u64>() {
            out.extend_from_slice(v.to_string().as_bytes());
        } else {
            // Arbitrary precision: Python's own decimal text is valid JSON.
            let s = obj.str().map_err(|e| encode_error(path, e))?;
            out.extend_from_slice(s.to_cow().map_err(|e| encode_error(path, e))?.as_bytes());
        }
        return Ok(());
    }
    if obj.is_instance_of::<PyBool>() {
        let b = obj.is_truthy().map_err(|e| encode_error(path, e))?;
        out.extend_from_slice(if b { b"true" } else { b"false" });
        return Ok(());
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        if !v.is_finite() {
            return Err(encode_error(
                path,
                format!("{v} is not valid JSON (NaN and infinity have no JSON form)"),
            ));
        }
        let _ = serde_json::to_writer(&mut *out, &v);
        return Ok(());
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        out.push(b'{');
        let mut first = true;
        for (k, v) in d.iter() {
            if !first {
                out.push(b',');
            }
            first = false;
            let key = dict_key(&k).ok_or_else(|| {
                encode_error(
                    path,
                    format!(
                        "dict keys must be str, int, float, bool or None, not {}",
                        type_name(&k)
                    ),
                )
            })?;
            write_str(out, &key);
            out.push(b':');
            let len = path.len();
            let _ = write!(
                path,
                "['{}']",
                key.replace('\\', "\\\\").replace('\'', "\\'")
            );
            write_json(&v, out, path, depth + 1)?;
            path.truncate(len);
        }
        out.push(b'}');
        return Ok(());
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return write_seq(l.iter(), out, path, depth);
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        return write_seq(t.iter(), out, path, depth);
    }
    let k = known(py).map_err(|e| encode_error(path, e))?;
    if obj.is_instance(k.datetime.bind(py)).unwrap_or(false)
        || obj.is_instance(k.date.bind(py)).unwrap_or(false)
        || obj.is_instance(k.time.bind(py)).unwrap_or(false)
    {
        let s = obj
            .call_method0("isoformat")
            .map_err(|e| encode_error(path, e))?;
        write_str(
            out,
            &s.cast::<PyString>()
                .map_err(|e| encode_error(path, e))?
                .to_cow()
                .map_err(|e| encode_error(path, e))?,
        );
        return Ok(());
    }
    if obj.is_instance(k.uuid.bind(py)).unwrap_or(false)
        || obj.is_instance(k.decimal.bind(py)).unwrap_or(false)
    {
        let s = obj.str().map_err(|e| encode_error(path, e))?;
        write_str(out, &s.to_cow().map_err(|e| encode_error(path, e))?);
        return Ok(());
    }
    if obj.is_instance(k.enum_.bind(py)).unwrap_or(false) {
        let v = obj.getattr("value").map_err(|e| encode_error(path, e))?;
        return write_json(&v, out, path, depth + 1);
    }
    if obj.is_instance_of::<PySet>() || obj.is_instance_of::<PyFrozenSet>() {
        let items: Vec<Bound<'_, PyAny>> = obj
            .try_iter()
            .map_err(|e| encode_error(path, e))?
            .collect::<PyResult<_>>()
            .map_err(|e| encode_error(path, e))?;
        return write_seq(items.into_iter(), out, path, depth);
    }
    // pydantic v2 model nested in a container: dump to plain JSON types.
    if is_pydantic_model(obj) {
        if let Ok(dump) = obj.getattr(pyo3::intern!(py, "model_dump")) {
            let kwargs = PyDict::new(py);
            let _ = kwargs.set_item("mode", "json");
            let plain = dump
                .call((), Some(&kwargs))
                .map_err(|e| encode_error(path, e))?;
            return write_json(&plain, out, path, depth + 1);
        }
    }
    // dataclass instance (not the class itself)
    if !obj.is_instance_of::<PyType>() {
        if let Ok(fields) = obj.getattr(pyo3::intern!(py, "__dataclass_fields__")) {
            return write_fields(obj, &fields, out, path, depth, true);
        }
        // msgspec-style structs
        if let Ok(fields) = obj.getattr(pyo3::intern!(py, "__struct_fields__")) {
            return write_fields(obj, &fields, out, path, depth, false);
        }
    }
    Err(encode_error(
        path,
        format!(
            "cannot encode an object of type {} as JSON: pass bytes, str, a dict/list, a dataclass or a pydantic model",
            type_name(obj)
        ),
    ))
}

fn write_fields(
    obj: &Bound<'_, PyAny>,
    fields: &Bound<'_, PyAny>,
    out: &mut Vec<u8>,
    path: &mut String,
    depth: usize,
    dataclass: bool,
) -> Result<(), Error> {
    let py = obj.py();
    out.push(b'{');
    let mut first = true;
    let names: Vec<String> = if dataclass {
        // __dataclass_fields__ holds ClassVar/InitVar pseudo-fields too;
        // only real fields (_field_type is _FIELD) belong in the payload.
        let field_marker = py
            .import("dataclasses")
            .and_then(|m| m.getattr("_FIELD"))
            .map_err(|e| encode_error(path, e))?;
        let d = fields.cast::<PyDict>().map_err(|e| encode_error(path, e))?;
        let mut v = Vec::with_capacity(d.len());
        for (name, field) in d.iter() {
            let is_field = field
                .getattr("_field_type")
                .map(|t| t.is(&field_marker))
                .unwrap_or(true);
            if is_field {
                v.push(
                    name.extract::<String>()
                        .map_err(|e| encode_error(path, e))?,
                );
            }
        }
        v
    } else {
        fields
            .extract::<Vec<String>>()
            .map_err(|e| encode_error(path, e))?
    };
    for name in names {
        let value = obj
            .getattr(name.as_str())
            .map_err(|e| encode_error(path, e))?;
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, &name);
        out.push(b':');
        let len = path.len();
        let _ = write!(path, ".{name}");
        write_json(&value, out, path, depth + 1)?;
        path.truncate(len);
    }
    out.push(b'}');
    Ok(())
}

fn write_seq<'py>(
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    out: &mut Vec<u8>,
    path: &mut String,
    depth: usize,
) -> Result<(), Error> {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let len = path.len();
        let _ = write!(path, "[{i}]");
        write_json(&item, out, path, depth + 1)?;
        path.truncate(len);
    }
    out.push(b']');
    Ok(())
}

fn itoa_buf(v: i64) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn dict_key(k: &Bound<'_, PyAny>) -> Option<String> {
    if let Ok(s) = k.cast::<PyString>() {
        return s.to_cow().ok().map(|c| c.into_owned());
    }
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

struct PySeed<'py>(Python<'py>);

impl<'de, 'py> DeserializeSeed<'de> for PySeed<'py> {
    type Value = Bound<'py, PyAny>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(PyVisitor(self.0))
    }
}

struct PyVisitor<'py>(Python<'py>);

fn de_err<E: serde::de::Error>(e: PyErr) -> E {
    E::custom(e.to_string())
}

impl<'de, 'py> Visitor<'de> for PyVisitor<'py> {
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
        while let Some(v) = seq.next_element_seed(PySeed(self.0))? {
            list.append(v).map_err(de_err)?;
        }
        Ok(list.into_any())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0);
        while let Some(k) = map.next_key_seed(KeySeed(self.0))? {
            let v = map.next_value_seed(PySeed(self.0))?;
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
pub fn decode_json<'py>(py: Python<'py>, bytes: &[u8]) -> Result<Bound<'py, PyAny>, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let v = PySeed(py).deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

/// A `serde_json::Value` as Python objects (plans, health, topology dicts).
pub fn json_to_py<'py>(py: Python<'py>, v: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    PySeed(py)
        .deserialize(v)
        .map_err(|e| PyValueError::new_err(e.to_string()))
}

/// Python objects (dicts from users) as a `serde_json::Value`.
pub fn py_to_json(obj: &Bound<'_, PyAny>) -> Result<serde_json::Value, Error> {
    let mut out = Vec::with_capacity(512);
    let mut path = String::new();
    write_json(obj, &mut out, &mut path, 0)?;
    serde_json::from_slice(&out).map_err(|e| Error::invalid(e.to_string()))
}
