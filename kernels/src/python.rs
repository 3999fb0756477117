//! Python bindings (the `nanochat_kernels._kernels` extension module).

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::attention::{self, Heads};
use crate::linear::{self, Rows, PANEL};

/// A buffer's shape and strides in floats, checked: `ndim` dimensions, non-negative strides
/// that are whole floats, the last dimension contiguous.
fn layout(buf: &PyBuffer<f32>, name: &str, ndim: usize) -> PyResult<(Vec<usize>, Vec<usize>)> {
    if buf.dimensions() != ndim {
        return Err(PyValueError::new_err(format!(
            "{name} must have {ndim} dimensions, not {}",
            buf.dimensions()
        )));
    }
    let item = std::mem::size_of::<f32>() as isize;
    let mut strides = Vec::with_capacity(ndim);
    for &s in buf.strides() {
        if s < 0 || s % item != 0 {
            return Err(PyValueError::new_err(format!(
                "{name} has a stride of {s} bytes (not a non-negative multiple of 4)"
            )));
        }
        strides.push((s / item) as usize);
    }
    if strides[ndim - 1] != 1 && buf.shape()[ndim - 1] > 1 {
        return Err(PyValueError::new_err(format!(
            "{name}'s last dimension must be contiguous"
        )));
    }
    Ok((buf.shape().to_vec(), strides))
}

/// `obj` as a float32 buffer, or a TypeError naming the argument.
fn float_buffer(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<PyBuffer<f32>> {
    PyBuffer::<f32>::get(obj)
        .map_err(|e| PyTypeError::new_err(format!("{name} must be a float32 buffer: {e}")))
}

/// A ValueError unless the output buffer `out` shares no float with any input (its first
/// float and the number of floats its view spans).
fn check_apart(out: &PyBuffer<f32>, inputs: &[(&PyBuffer<f32>, usize)]) -> PyResult<()> {
    let item = std::mem::size_of::<f32>();
    let (start, end) = (
        out.buf_ptr() as usize,
        out.buf_ptr() as usize + out.item_count() * item,
    );
    for (buf, extent) in inputs {
        let first = buf.buf_ptr() as usize;
        if first < end && start < first + extent * item {
            return Err(PyValueError::new_err("out overlaps an input"));
        }
    }
    Ok(())
}

/// The floats a buffer's view spans, from its first element.
///
/// # Safety
/// The buffer must describe memory that holds every element of its shape at its strides
/// (what the buffer protocol promises); the slice covers exactly those elements' span.
unsafe fn span(buf: &PyBuffer<f32>, extent: usize) -> &[f32] {
    std::slice::from_raw_parts(buf.buf_ptr() as *const f32, extent)
}

/// Single-token attention over cached keys and values, written into `out`.
///
/// `q`: `(rows, heads, dim)`; `k`, `v`: `(rows, kv_heads, len, dim)`; `out`: a writable
/// C-contiguous `(rows, heads, dim)` buffer, not overlapping the inputs. Row `r` attends to
/// keys `spans[r][0] <= j < spans[r][1]`. float32 buffers only (numpy arrays, or torch CPU
/// tensors through `.numpy()`); the GIL is released while it runs.
#[pyfunction]
#[pyo3(signature = (q, k, v, out, spans, scale, threads = 1))]
#[allow(clippy::too_many_arguments)]
fn decode_attention(
    py: Python<'_>,
    q: &Bound<'_, PyAny>,
    k: &Bound<'_, PyAny>,
    v: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    spans: Vec<(usize, usize)>,
    scale: f32,
    threads: usize,
) -> PyResult<()> {
    let (qb, kb, vb, ob) = (
        float_buffer(q, "q")?,
        float_buffer(k, "k")?,
        float_buffer(v, "v")?,
        float_buffer(out, "out")?,
    );
    let (qs, qst) = layout(&qb, "q", 3)?;
    let (ks, kst) = layout(&kb, "k", 4)?;
    let (vs, vst) = layout(&vb, "v", 4)?;
    let (os, _) = layout(&ob, "out", 3)?;
    if ob.readonly() || !ob.is_c_contiguous() || os != qs {
        return Err(PyValueError::new_err(
            "out must be a writable C-contiguous buffer of the queries' shape",
        ));
    }
    let heads3 = |s: &[usize], st: &[usize], one: bool| {
        let shape = [s[0], s[1], if one { 1 } else { s[2] }];
        let strides = [st[0], st[1], if one { 0 } else { st[2] }];
        (shape, strides, *s.last().unwrap_or(&0))
    };
    let (q3, k3, v3) = (
        heads3(&qs, &qst, true),
        heads3(&ks, &kst, false),
        heads3(&vs, &vst, false),
    );
    let extent = |h: ([usize; 3], [usize; 3], usize), name: &str| {
        Heads::extent(h.0, h.1, h.2)
            .filter(|_| !h.0.contains(&0) && h.2 > 0)
            .ok_or_else(|| PyValueError::new_err(format!("{name} is empty")))
    };
    let (qe, ke, ve) = (extent(q3, "q")?, extent(k3, "k")?, extent(v3, "v")?);
    check_apart(&ob, &[(&qb, qe), (&kb, ke), (&vb, ve)])?;
    let on = ob.item_count();
    py.allow_threads(|| {
        // SAFETY: each span covers its buffer's elements (shape, strides, first element), and
        // the buffers stay alive (held by this frame) while the GIL is released; out is
        // contiguous, writable and overlaps no input.
        let (qd, kd, vd) = unsafe { (span(&qb, qe), span(&kb, ke), span(&vb, ve)) };
        let od = unsafe { std::slice::from_raw_parts_mut(ob.buf_ptr() as *mut f32, on) };
        let qh = Heads::new(qd, q3.0, q3.1, q3.2)?;
        let kh = Heads::new(kd, k3.0, k3.1, k3.2)?;
        let vh = Heads::new(vd, v3.0, v3.1, v3.2)?;
        attention::decode_attention(&qh, &kh, &vh, od, &spans, scale, threads)
    })
    .map_err(|e| PyValueError::new_err(e.0))
}

/// `out = x · W` for a few rows `x` (`(rows, inner)`, rows any non-negative stride apart, each
/// contiguous) and `W` (`inner x cols`) in column panels: `panels` is a C-contiguous
/// `(cols / 16, inner, 16)` buffer. `out`: a writable C-contiguous `(rows, cols)` buffer apart
/// from the inputs. The panels are split over `threads` threads of the process's OpenMP team;
/// the GIL is released while it runs.
#[pyfunction]
#[pyo3(signature = (x, panels, out, threads = 1))]
fn panel_matmul(
    py: Python<'_>,
    x: &Bound<'_, PyAny>,
    panels: &Bound<'_, PyAny>,
    out: &Bound<'_, PyAny>,
    threads: usize,
) -> PyResult<()> {
    let (xb, pb, ob) = (
        float_buffer(x, "x")?,
        float_buffer(panels, "panels")?,
        float_buffer(out, "out")?,
    );
    let (xs, xst) = layout(&xb, "x", 2)?;
    let (ps, _) = layout(&pb, "panels", 3)?;
    let (os, _) = layout(&ob, "out", 2)?;
    if !pb.is_c_contiguous() || ps[1] != xs[1] || ps[2] != PANEL {
        return Err(PyValueError::new_err(format!(
            "panels must be a C-contiguous (cols / {PANEL}, {}, {PANEL}) buffer, not {ps:?}",
            xs[1]
        )));
    }
    if ob.readonly() || !ob.is_c_contiguous() || os != [xs[0], ps[0] * PANEL] {
        return Err(PyValueError::new_err(format!(
            "out must be a writable C-contiguous ({}, {}) buffer",
            xs[0],
            ps[0] * PANEL
        )));
    }
    let (rows, inner) = (xs[0], xs[1]);
    if rows == 0 || inner == 0 || ps[0] == 0 {
        return Err(PyValueError::new_err("empty product"));
    }
    let x_extent = (rows - 1) * xst[0] + inner;
    check_apart(&ob, &[(&xb, x_extent), (&pb, pb.item_count())])?;
    let on = ob.item_count();
    py.allow_threads(|| {
        // SAFETY: as in `decode_attention`: spans within the buffers, alive while the GIL is
        // released, out contiguous, writable and apart from the inputs.
        let xd = unsafe { span(&xb, x_extent) };
        let pd = unsafe { span(&pb, pb.item_count()) };
        let od = unsafe { std::slice::from_raw_parts_mut(ob.buf_ptr() as *mut f32, on) };
        linear::panel_matmul(&Rows::new(xd, rows, inner, xst[0])?, pd, od, threads)
    })
    .map_err(|e| PyValueError::new_err(e.0))
}

/// The extension module.
#[pymodule]
fn _kernels(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(decode_attention, m)?)?;
    m.add_function(wrap_pyfunction!(panel_matmul, m)?)?;
    m.add("PANEL", PANEL)?;
    Ok(())
}
