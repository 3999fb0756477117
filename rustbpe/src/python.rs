//! Python bindings (the `nanochat_rustbpe._rustbpe` extension module).

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedStr;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};
use rayon::prelude::*;
use std::sync::mpsc::TryRecvError;
use std::time::{Duration, Instant};

use crate::error::BpeError;
use crate::persist;
use crate::pretok::{Splitter, DEFAULT_PATTERN};
use crate::tokenizer::{Allowed, Tokenizer as Core, MAX_VOCAB_SIZE};
use crate::train::{learn_merges, ChunkCounter};

/// Turns a crate error into the Python exception a caller can act on.
fn to_py(err: BpeError) -> PyErr {
    match err {
        BpeError::Io(e) => PyOSError::new_err(e.to_string()),
        other => PyValueError::new_err(other.to_string()),
    }
}

/// Like [`to_py`], but names the file involved.
fn file_err(path: &std::path::Path, err: BpeError) -> PyErr {
    let p = path.display();
    match err {
        BpeError::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(format!("{p}: no such file"))
        }
        BpeError::Io(e) => PyOSError::new_err(format!("{p}: {e}")),
        other => PyValueError::new_err(format!("{p}: {other}")),
    }
}

/// Reads `allowed_special`: None, "all", or a collection of special-token names.
fn parse_allowed(arg: Option<&Bound<'_, PyAny>>) -> PyResult<Allowed> {
    let Some(arg) = arg else {
        return Ok(Allowed::None);
    };
    if arg.is_none() {
        return Ok(Allowed::None);
    }
    if let Ok(s) = arg.downcast::<PyString>() {
        return match s.to_str()? {
            "all" => Ok(Allowed::All),
            "none" => Ok(Allowed::None),
            other => Err(PyValueError::new_err(format!(
                "allowed_special must be \"all\", None or a set of special-token names, not {other:?}"
            ))),
        };
    }
    let names = arg
        .try_iter()?
        .map(|item| item?.extract::<String>())
        .collect::<PyResult<Vec<String>>>()?;
    Ok(if names.is_empty() {
        Allowed::None
    } else {
        Allowed::Some(names)
    })
}

/// A byte-level BPE tokenizer trained and run in Rust.
#[pyclass(module = "nanochat_rustbpe", name = "Tokenizer", frozen)]
pub struct PyTokenizer {
    inner: Arc<Core>,
}

#[pymethods]
impl PyTokenizer {
    /// Trains a tokenizer from an iterable of texts.
    #[staticmethod]
    #[pyo3(signature = (texts, vocab_size, pattern=None, special_tokens=Vec::new(), progress=None, batch_size=None))]
    fn train(
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        vocab_size: &Bound<'_, PyAny>,
        pattern: Option<&str>,
        special_tokens: Vec<String>,
        progress: Option<PyObject>,
        batch_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        guard(|| {
            Self::train_inner(
                py,
                texts,
                vocab_size,
                pattern,
                special_tokens,
                progress,
                batch_size,
            )
        })
    }

    /// Number of ids: 256 bytes + merges + special tokens.
    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    /// The split pattern.
    #[getter]
    fn pattern(&self) -> &str {
        self.inner.pattern()
    }

    /// Special-token names mapped to their ids.
    #[getter]
    fn special_tokens<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for s in self.inner.specials() {
            d.set_item(s, self.inner.special_id(s))?;
        }
        Ok(d)
    }

    /// Encodes one text; special tokens become ids only when named in `allowed_special`.
    #[pyo3(signature = (text, allowed_special=None))]
    fn encode(
        &self,
        py: Python<'_>,
        text: &str,
        allowed_special: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<u32>> {
        guard(|| {
            let allowed = parse_allowed(allowed_special)?;
            let inner = &self.inner;
            if text.len() < 4096 {
                return inner.encode(text, &allowed).map_err(to_py);
            }
            py.allow_threads(|| inner.encode(text, &allowed))
                .map_err(to_py)
        })
    }

    /// Encodes many texts in parallel on all cores.
    ///
    /// Worker threads encode without the GIL while this thread turns finished results into
    /// Python lists, so the conversion overlaps with encoding.
    #[pyo3(signature = (texts, allowed_special=None))]
    fn encode_batch<'py>(
        &self,
        py: Python<'py>,
        texts: Vec<PyBackedStr>,
        allowed_special: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        guard(|| {
            let allowed = parse_allowed(allowed_special)?;
            let inner = &self.inner;
            // Fail early on unknown special-token names, before starting any thread.
            inner.encode("", &allowed).map_err(to_py)?;
            let out = PyList::new(py, texts.iter().map(|_| py.None()))?;
            let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<Vec<u32>, BpeError>)>();
            std::thread::scope(|scope| -> PyResult<()> {
                let (texts, allowed) = (&texts, &allowed);
                scope.spawn(move || {
                    texts
                        .par_iter()
                        .enumerate()
                        .for_each_with(tx, |tx, (i, t)| {
                            let _ = tx.send((i, inner.encode(t, allowed)));
                        });
                });
                let mut rx = rx;
                loop {
                    let received = match rx.try_recv() {
                        Ok(item) => Some(item),
                        Err(TryRecvError::Empty) => {
                            // Wait without the GIL; the receiver travels into the closure and back.
                            let (item, back) = py.allow_threads(move || (rx.recv().ok(), rx));
                            rx = back;
                            item
                        }
                        Err(TryRecvError::Disconnected) => None,
                    };
                    let Some((i, ids)) = received else {
                        break;
                    };
                    out.set_item(i, PyList::new(py, ids.map_err(to_py)?)?)?;
                }
                Ok(())
            })?;
            Ok(out)
        })
    }

    /// Decodes ids to text; invalid UTF-8 becomes U+FFFD.
    fn decode(&self, ids: Vec<u32>) -> PyResult<String> {
        guard(|| self.inner.decode(&ids).map_err(to_py))
    }

    /// Decodes ids to the exact bytes they stand for.
    fn decode_bytes<'py>(&self, py: Python<'py>, ids: Vec<u32>) -> PyResult<Bound<'py, PyBytes>> {
        guard(|| {
            let bytes = self.inner.decode_bytes(&ids).map_err(to_py)?;
            Ok(PyBytes::new(py, &bytes))
        })
    }

    /// Byte length of every id, 0 for special tokens.
    fn token_bytes(&self) -> Vec<u32> {
        self.inner.token_bytes()
    }

    /// The bytes of one id (a special token's bytes are its name).
    fn id_to_bytes<'py>(&self, py: Python<'py>, id: u32) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = self.inner.id_to_bytes(id).map_err(to_py)?;
        Ok(PyBytes::new(py, bytes))
    }

    /// The merges in order; merge `i` made token `256 + i`.
    fn merges(&self) -> Vec<(u32, u32)> {
        self.inner.merges().to_vec()
    }

    /// Writes the tokenizer to `path` in the nanochat-rustbpe format.
    fn save(&self, path: PathBuf) -> PyResult<()> {
        guard(|| persist::save(&self.inner, &path).map_err(|e| file_err(&path, e)))
    }

    /// Reads a tokenizer written by `save`.
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        guard(|| {
            let core = persist::load(&path).map_err(|e| file_err(&path, e))?;
            Ok(Self {
                inner: Arc::new(core),
            })
        })
    }

    /// Token bytes mapped to ranks (= ids), for `tiktoken.Encoding(mergeable_ranks=...)`.
    fn to_tiktoken_ranks<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        guard(|| {
            let d = PyDict::new(py);
            for (id, bytes) in self.inner.vocab().iter().enumerate().rev() {
                d.set_item(PyBytes::new(py, bytes), id)?;
            }
            Ok(d)
        })
    }

    /// Writes a HF `tokenizers` `tokenizer.json` that encodes identically.
    fn save_hf_json(&self, path: PathBuf) -> PyResult<()> {
        guard(|| {
            std::fs::write(&path, persist::to_hf_json(&self.inner))
                .map_err(|e| file_err(&path, BpeError::Io(e)))
        })
    }

    /// Rebuilds a tokenizer from the text `save` writes (used by pickle).
    #[staticmethod]
    fn _from_json(text: &str) -> PyResult<Self> {
        guard(|| {
            let core = persist::from_json(text.as_bytes()).map_err(to_py)?;
            Ok(Self {
                inner: Arc::new(core),
            })
        })
    }

    /// Pickle support: a tokenizer pickles as its saved form.
    fn __reduce__<'py>(&self, py: Python<'py>) -> PyResult<(Bound<'py, PyAny>, (String,))> {
        let rebuild = py.get_type::<Self>().getattr("_from_json")?;
        Ok((rebuild, (persist::to_json(&self.inner),)))
    }

    fn __repr__(&self) -> String {
        format!(
            "Tokenizer(vocab_size={}, merges={}, special_tokens={})",
            self.inner.vocab_size(),
            self.inner.merges().len(),
            self.inner.specials().len()
        )
    }
}

/// Reads an integer argument that must lie in `lo..=hi`; any other value (a negative number, a
/// number too large for any machine word, a float, ...) is a ValueError naming the argument
/// and its range, raised before anything is allocated for it.
fn bounded_int(name: &str, value: &Bound<'_, PyAny>, lo: usize, hi: usize) -> PyResult<usize> {
    let out_of_range = || {
        let shown = value
            .repr()
            .map_or_else(|_| "?".to_string(), |r| r.to_string());
        PyValueError::new_err(format!(
            "{name} must be an integer from {lo} to {hi}, got {shown}"
        ))
    };
    if value.is_instance_of::<pyo3::types::PyBool>() {
        return Err(out_of_range());
    }
    let n: i128 = match value.extract::<i64>() {
        Ok(n) => i128::from(n),
        Err(_) if value.is_instance_of::<pyo3::types::PyInt>() => return Err(out_of_range()),
        Err(_) => {
            return Err(PyTypeError::new_err(format!(
                "{name} must be an integer, got {}",
                value
                    .get_type()
                    .name()
                    .map_or("?".into(), |n| n.to_string())
            )))
        }
    };
    if n < lo as i128 || n > hi as i128 {
        return Err(out_of_range());
    }
    Ok(n as usize)
}

/// Runs `f`, turning a Rust panic into a Python RuntimeError so that no `PanicException`
/// ever reaches a caller (a panic would be a bug in this crate; the message says so).
fn guard<T>(f: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(PyRuntimeError::new_err(format!(
                "internal error in nanochat_rustbpe (please report it): {msg}"
            )))
        }
    }
}

/// How often training looks for a pending Ctrl-C (or other signal) while it runs.
const SIGNAL_CHECK_EVERY: Duration = Duration::from_millis(50);

impl PyTokenizer {
    #[allow(clippy::too_many_arguments)]
    fn train_inner(
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        vocab_size: &Bound<'_, PyAny>,
        pattern: Option<&str>,
        special_tokens: Vec<String>,
        progress: Option<PyObject>,
        batch_size: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let pattern = pattern.unwrap_or(DEFAULT_PATTERN);
        let floor = 256 + special_tokens.len();
        if floor > MAX_VOCAB_SIZE {
            return Err(PyValueError::new_err(format!(
                "{} special tokens is more than a vocabulary of at most {MAX_VOCAB_SIZE} ids holds",
                special_tokens.len()
            )));
        }
        let vocab_size =
            bounded_int("vocab_size", vocab_size, floor, MAX_VOCAB_SIZE).map_err(|e| {
                if floor > 256 {
                    PyValueError::new_err(format!(
                        "{} (at least 256 + {} special tokens)",
                        e.value(py),
                        special_tokens.len()
                    ))
                } else {
                    e
                }
            })?;
        let batch_size = match batch_size {
            Some(b) if !b.is_none() => bounded_int("batch_size", b, 1, MAX_BATCH_SIZE)?,
            _ => DEFAULT_BATCH_SIZE,
        };
        let num_merges = vocab_size - floor;
        let splitter = Splitter::new(pattern).map_err(to_py)?;
        let mut counter = ChunkCounter::new();
        let mut batch: Vec<String> = Vec::with_capacity(batch_size.min(1024));
        let single;
        let iter = if texts.is_instance_of::<PyString>() {
            single = pyo3::types::PyTuple::new(py, [texts])?;
            single.as_any().try_iter()?
        } else {
            texts
                .try_iter()
                .map_err(|_| PyTypeError::new_err("texts must be an iterable of str"))?
        };
        let mut batch_bytes = 0usize;
        for item in iter {
            let item = item?;
            let text: String = item.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "texts must yield str, got {}",
                    item.get_type().name().map_or("?".into(), |n| n.to_string())
                ))
            })?;
            if text.len() > HUGE_TEXT {
                // One huge text: split it in parts of bounded time, looking for Ctrl-C between
                // them (a single text cannot be split in parallel anyway).
                let mut from = 0;
                while from < text.len() {
                    py.check_signals()?;
                    from = py.allow_threads(|| counter.add_part(&splitter, &text, from, HUGE_TEXT));
                }
                continue;
            }
            batch_bytes += text.len();
            batch.push(text);
            // Count a batch when it is full by number or by size (so that Ctrl-C is seen
            // between batches of bounded work).
            if batch.len() >= batch_size || batch_bytes >= MAX_BATCH_BYTES {
                py.check_signals()?;
                py.allow_threads(|| counter.add_batch(&splitter, &batch));
                batch.clear();
                batch_bytes = 0;
            }
        }
        py.check_signals()?;
        py.allow_threads(|| counter.add_batch(&splitter, &batch));
        drop(batch);
        py.check_signals()?;
        let merges = py.allow_threads(|| {
            let (words, counts) = counter.into_words();
            let every = (num_merges / 200).max(1);
            let mut report = |done: usize, total: usize| -> PyResult<()> {
                match &progress {
                    Some(cb) => Python::with_gil(|py| cb.call1(py, (done, total)).map(|_| ())),
                    None => Ok(()),
                }
            };
            let mut last_check = Instant::now();
            let mut tick = || -> PyResult<()> {
                if last_check.elapsed() < SIGNAL_CHECK_EVERY {
                    return Ok(());
                }
                last_check = Instant::now();
                Python::with_gil(|py| py.check_signals())
            };
            learn_merges(words, counts, num_merges, every, &mut report, &mut tick)
        })?;
        py.check_signals()?;
        let core = py
            .allow_threads(|| Core::new(pattern, merges, special_tokens))
            .map_err(to_py)?;
        Ok(Self {
            inner: Arc::new(core),
        })
    }
}

/// `batch_size` of `train` when none is given.
const DEFAULT_BATCH_SIZE: usize = 8192;
/// Largest `batch_size` accepted by `train`.
const MAX_BATCH_SIZE: usize = 1 << 20;
/// Texts longer than this are split in parts of this many bytes, checking for Ctrl-C between
/// (4 MiB: about 0.3 s for a `fancy_regex` pattern on one core, 20 ms for the default one).
const HUGE_TEXT: usize = 4 << 20;
/// A batch of texts is counted once it holds this many bytes, whatever `batch_size` says.
const MAX_BATCH_BYTES: usize = 32 << 20;

/// The extension module.
#[pymodule]
#[pyo3(name = "_rustbpe")]
fn rustbpe_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTokenizer>()?;
    m.add("DEFAULT_PATTERN", DEFAULT_PATTERN)?;
    m.add("MAX_VOCAB_SIZE", MAX_VOCAB_SIZE)?;
    Ok(())
}
