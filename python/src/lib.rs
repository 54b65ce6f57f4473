//! The `smartpipe` Python package: SmartPipe user stages written in Python, over the
//! Rust `stage` SDK (same bootstrap, loop, slot accounting and errors). Frames arrive
//! as read-only NumPy arrays viewing the shared-memory slot (no copy); `ctx.frame(w, h)`
//! gives a writable NumPy array over an output slot; tables come as `pyarrow` record
//! batches (`item.table()`) and a returned RecordBatch or Table is sent on as the item's
//! table; params come as a dict; an exception fails the stage with its traceback in the
//! stage log.
//!
//! ```python
//! import numpy as np, smartpipe
//!
//! def invert(ctx, item):
//!     frame = item.frame()                      # (h, w, 3) uint8, read-only view
//!     out = ctx.frame(frame.shape[1], frame.shape[0])
//!     np.subtract(255, frame, out=out)
//!     return out                                # or `return item` to pass it on
//!
//! smartpipe.run_body(invert, takes=["frame"], makes=["frame"])
//! ```

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{IntoPyDict, PyBytes, PyDict};
use stage::{Body, DType, Item, Kind, Output, Stage, StageError, Written};
use std::os::raw::c_char;

create_exception!(
    smartpipe,
    BadInput,
    PyException,
    "Raise it to drop the current item (counted as lost, bad input) and go on."
);

/// The item being processed (valid during the call that received it).
#[pyclass(unsendable)]
struct PyItem {
    inner: Option<Item>,
}

fn gone() -> PyErr {
    PyRuntimeError::new_err("this item is no longer held (its call has returned)")
}

/// A NumPy array viewing `len` bytes at `ptr` (no copy), of `dtype` and `shape`.
fn array_view<'py>(
    py: Python<'py>,
    ptr: *const u8,
    len: usize,
    (dtype, shape): (&str, Vec<u32>),
    writable: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let flags = if writable {
        pyo3::ffi::PyBUF_WRITE
    } else {
        pyo3::ffi::PyBUF_READ
    };
    // SAFETY: `ptr..ptr+len` lies in a shared-memory slot this process holds for the
    // current call (the pool stays mapped for the process's life); the memoryview does
    // not own it, and a NULL result is turned into the Python error it set.
    let view = unsafe {
        let raw = pyo3::ffi::PyMemoryView_FromMemory(ptr as *mut c_char, len as isize, flags);
        Bound::from_owned_ptr_or_err(py, raw)?
    };
    py.import("numpy")?
        .call_method1("frombuffer", (view, dtype))?
        .call_method1("reshape", (shape,))
}

#[pymethods]
impl PyItem {
    /// The head task the item came from.
    #[getter]
    fn source(&self) -> PyResult<String> {
        Ok(self.inner.as_ref().ok_or_else(gone)?.source().to_string())
    }

    /// Its sequence number at that head.
    #[getter]
    fn seq(&self) -> PyResult<u64> {
        Ok(self.inner.as_ref().ok_or_else(gone)?.seq())
    }

    /// The frame as a read-only `(height, width, 3)` uint8 array over the slot, or None.
    fn frame<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let item = self.inner.as_ref().ok_or_else(gone)?;
        let Some(f) = item.frame() else {
            return Ok(None);
        };
        let shape = ("uint8", vec![f.height, f.width, 3]);
        array_view(py, f.data.as_ptr(), f.data.len(), shape, false).map(Some)
    }

    /// The tensor as a read-only NumPy array over the slot (its dtype and shape), or None.
    fn tensor<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let item = self.inner.as_ref().ok_or_else(gone)?;
        let Some(t) = item.tensor() else {
            return Ok(None);
        };
        let (dtype, size) = match t.dtype {
            DType::U8 => ("uint8", 1),
            DType::F32 => ("float32", 4),
            DType::I64 => ("int64", 8),
        };
        let count: usize = t.shape.iter().map(|&d| d as usize).product();
        if count * size > t.data.len() {
            return Err(PyRuntimeError::new_err(format!(
                "tensor of shape {:?} needs {} bytes, its slot holds {}",
                t.shape,
                count * size,
                t.data.len()
            )));
        }
        array_view(
            py,
            t.data.as_ptr(),
            count * size,
            (dtype, t.shape.clone()),
            false,
        )
        .map(Some)
    }

    /// The item's table as Arrow IPC stream bytes (one record batch), or None:
    /// `pyarrow.ipc.open_stream(item.table_ipc()).read_all()` reads it.
    fn table_ipc<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let item = self.inner.as_ref().ok_or_else(gone)?;
        Ok(item.table_ipc().map(|b| PyBytes::new(py, b)))
    }

    /// The item's table as a `pyarrow.RecordBatch`, or None (needs pyarrow). It stays
    /// valid after the call: it reads a copy of the table, which travels in the message.
    fn table<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let Some(bytes) = self.table_ipc(py)? else {
            return Ok(None);
        };
        let pa = import_pyarrow(py)?;
        pa.getattr("ipc")?
            .call_method1("open_stream", (bytes,))?
            .call_method0("read_next_batch")
            .map(Some)
    }
}

fn import_pyarrow(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    py.import("pyarrow").map_err(|e| {
        pyo3::exceptions::PyImportError::new_err(format!(
            "tables as record batches need pyarrow (`pip install pyarrow`; `make test` installs it \
             into .smartpipe/venv), or use item.table_ipc(): {e}"
        ))
    })
}

/// `ret` as Arrow IPC stream bytes of one record batch, when it is a `pyarrow`
/// RecordBatch or Table (a table's chunks are combined first); None for anything else.
fn arrow_ipc(py: Python<'_>, ret: &Bound<'_, PyAny>) -> PyResult<Option<Vec<u8>>> {
    let Some(pa) = py.import("pyarrow").ok() else {
        return Ok(None);
    };
    let batch = if ret.is_instance(&pa.getattr("RecordBatch")?)? {
        ret.clone()
    } else if ret.is_instance(&pa.getattr("Table")?)? {
        let batches = ret
            .call_method0("combine_chunks")?
            .call_method0("to_batches")?;
        match batches.len()? {
            0 => pa.getattr("RecordBatch")?.call_method(
                "from_pylist",
                (Vec::<i32>::new(),),
                Some(&[("schema", ret.getattr("schema")?)].into_py_dict(py)?),
            )?,
            _ => batches.get_item(0)?,
        }
    } else {
        return Ok(None);
    };
    let sink = pa.call_method0("BufferOutputStream")?;
    let writer = pa
        .getattr("ipc")?
        .call_method1("new_stream", (sink.clone(), batch.getattr("schema")?))?;
    writer.call_method1("write_batch", (batch,))?;
    writer.call_method0("close")?;
    let bytes = sink.call_method0("getvalue")?.call_method0("to_pybytes")?;
    Ok(Some(bytes.extract()?))
}

/// The stage's context during one call: params, and output slots.
#[pyclass(unsendable)]
struct Ctx {
    /// The Body of the running call (its node borrow is erased to `'static`: the
    /// pointer is set and cleared around each call, never used outside it).
    body: *mut Body<'static>,
    pending: Option<Written>,
    shed: bool,
    params: Py<PyDict>,
}

#[pymethods]
impl Ctx {
    /// The task's params (a dict, as written in the app file).
    #[getter]
    fn params(&self, py: Python<'_>) -> Py<PyDict> {
        self.params.clone_ref(py)
    }

    /// A writable `(height, width, 3)` uint8 array over a fresh output slot; return it
    /// to send it. None when a best-effort app has no free slot (return None then).
    fn frame<'py>(
        &mut self,
        py: Python<'py>,
        width: u32,
        height: u32,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.body.is_null() {
            return Err(PyRuntimeError::new_err("ctx is used outside its call"));
        }
        // SAFETY: `body` points at the Body of the running loop, set just before this
        // call's Python function was entered and cleared right after it returned; the
        // loop does not touch the Body meanwhile (it waits for the function).
        let body = unsafe { &mut *self.body };
        let Some(mut written) = body.new_frame(width, height).map_err(stage_err)? else {
            self.shed = true;
            return Ok(None);
        };
        let bytes = written.bytes_mut().map_err(stage_err)?;
        let (ptr, len) = (bytes.as_ptr(), bytes.len());
        self.pending = Some(written);
        array_view(py, ptr, len, ("uint8", vec![height, width, 3]), true).map(Some)
    }
}

fn stage_err(e: StageError) -> PyErr {
    PyRuntimeError::new_err(e.to_string())
}

/// The exception with its traceback, as Python prints it.
fn traceback(py: Python<'_>, e: &PyErr) -> String {
    let formatted = py.import("traceback").and_then(|tb| {
        tb.call_method1(
            "format_exception",
            (e.get_type(py), e.value(py), e.traceback(py)),
        )?
        .extract::<Vec<String>>()
    });
    match formatted {
        Ok(lines) => lines.concat(),
        Err(_) => e.to_string(),
    }
}

fn kinds(names: &[String]) -> PyResult<Vec<Kind>> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "frame" => Ok(Kind::Frame),
            "tensor" => Ok(Kind::Tensor),
            "table" => Ok(Kind::Table),
            "any" => Ok(Kind::Any),
            other => Err(PyValueError::new_err(format!(
                "unknown payload kind '{other}' (frame, tensor, table or any)"
            ))),
        })
        .collect()
}

/// One call of the user's function, turned into what the loop sends.
fn call(
    py: Python<'_>,
    func: &Bound<'_, PyAny>,
    ctx: &Bound<'_, Ctx>,
    body: &mut Body<'_>,
    item: Item,
) -> Result<Output, StageError> {
    let py_item = Bound::new(py, PyItem { inner: Some(item) })
        .map_err(|e| StageError::Failed(e.to_string()))?;
    {
        let mut c = ctx.borrow_mut();
        c.body = (body as *mut Body<'_>).cast::<Body<'static>>();
        c.shed = false;
    }
    let result = func.call1((ctx.clone(), py_item.clone()));
    let (pending, shed) = {
        let mut c = ctx.borrow_mut();
        c.body = std::ptr::null_mut();
        (c.pending.take(), c.shed)
    };
    // Whatever Python keeps, the item is released now (unless it travels on).
    let item = py_item.borrow_mut().inner.take();
    let ret = match result {
        Ok(ret) => ret,
        Err(e) if e.is_instance_of::<BadInput>(py) => {
            return Err(StageError::BadInput(e.value(py).to_string()))
        }
        Err(e) => {
            return Err(StageError::Failed(format!(
                "the Python stage raised:\n{}",
                traceback(py, &e)
            )))
        }
    };
    if ret.is(&py_item) {
        return item
            .map(Output::Forward)
            .ok_or_else(|| StageError::Failed("the item was already released".into()));
    }
    if pending.is_none() {
        let ipc = arrow_ipc(py, &ret).map_err(|e| {
            StageError::Failed(format!(
                "the returned table could not be written:\n{}",
                traceback(py, &e)
            ))
        })?;
        if let Some(ipc) = ipc {
            return Ok(Output::Table(ipc));
        }
    }
    match (pending, shed) {
        (Some(w), _) => Ok(Output::Frame(w)),
        (None, true) => Ok(Output::Shed),
        (None, false) => Err(StageError::Failed(format!(
            "the stage function returned {}: return the item (to pass it on), the array from ctx.frame() or a pyarrow RecordBatch/Table",
            ret.repr().map_or("something else".into(), |r| r.to_string())
        ))),
    }
}

/// Run `func(ctx, item)` over every item of the stream; returns the exit status
/// (`sys.exit(smartpipe.run_body(...))`). With `--smartpipe-describe` it prints the
/// declaration and returns at once.
#[pyfunction]
#[pyo3(signature = (func, takes, makes, name = "python-stage"))]
fn run_body(
    py: Python<'_>,
    func: Bound<'_, PyAny>,
    takes: Vec<String>,
    makes: Vec<String>,
    name: &str,
) -> PyResult<u8> {
    let mut stage = Stage::new(name);
    for k in kinds(&takes)? {
        stage = stage.takes(k);
    }
    for k in kinds(&makes)? {
        stage = stage.makes(k);
    }
    let mut ctx: Option<Bound<'_, Ctx>> = None;
    Ok(stage.run_body_code(|body, item| {
        let ctx = match &ctx {
            Some(c) => c.clone(),
            None => {
                let params = pythonize_params(py, body.params())
                    .map_err(|e| StageError::Failed(format!("params: {e}")))?;
                let c = Bound::new(
                    py,
                    Ctx {
                        body: std::ptr::null_mut(),
                        pending: None,
                        shed: false,
                        params,
                    },
                )
                .map_err(|e| StageError::Failed(e.to_string()))?;
                ctx = Some(c.clone());
                c
            }
        };
        call(py, &func, &ctx, body, item)
    }))
}

/// The params as a Python dict (through JSON: numbers, strings, lists, objects).
fn pythonize_params(
    py: Python<'_>,
    params: &serde_json::Map<String, serde_json::Value>,
) -> PyResult<Py<PyDict>> {
    let text = serde_json::Value::Object(params.clone()).to_string();
    let value = py.import("json")?.call_method1("loads", (text,))?;
    Ok(value.cast_into::<PyDict>()?.unbind())
}

#[pymodule]
fn smartpipe(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run_body, m)?)?;
    m.add("BadInput", m.py().get_type::<BadInput>())?;
    m.add("PROTOCOL_VERSION", stage::PROTOCOL_VERSION)?;
    Ok(())
}
