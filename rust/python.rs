//! The Python bindings (`topk_certify._core`): convert arguments, release the GIL, call
//! the core, map errors. No math here; the Python wrappers in `stats.py` do the
//! argument normalisation (broadcasting, nested lists, float counts).

use std::sync::atomic::{AtomicBool, Ordering};

use ndarray::ArrayView2;
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use crate::certify::{self, Bound as BoundKind, Params};
use crate::error::CoreError;
use crate::int_value::IntValue;
use crate::{bounds, count, predict};

/// Set in a forked child (os.register_at_fork): rayon's pool does not survive fork(),
/// so a child of a process that used it (a DataLoader worker, say) runs sequentially.
static FORKED: AtomicBool = AtomicBool::new(false);

fn parallel() -> bool {
    !FORKED.load(Ordering::Relaxed)
}

impl From<CoreError> for PyErr {
    fn from(err: CoreError) -> PyErr {
        match err {
            CoreError::Value(m) => PyValueError::new_err(m),
        }
    }
}

#[pyfunction]
fn _mark_forked() {
    FORKED.store(true, Ordering::Relaxed);
}

/// Calls `$body` with `$view` bound to a zero-copy `ArrayView2` of `$array`, whatever
/// its integer dtype and strides.
macro_rules! with_int_view2 {
    ($array:expr, $name:literal, |$view:ident| $body:expr) => {{
        let array = $array;
        with_int_view2!(@try array, $view, $body, i64, i32, u8, u16, u32, u64, i16, i8);
        Err(PyTypeError::new_err(concat!($name, " must be a 2-D integer numpy array")))
    }};
    (@try $array:ident, $view:ident, $body:expr, $($t:ty),*) => {$(
        if let Ok(typed) = $array.cast::<PyArray2<$t>>() {
            let guard = typed.try_readonly()?;
            let $view: ArrayView2<$t> = guard.as_array();
            return $body;
        }
    )*};
}

fn generic_certify<'py, T: IntValue>(
    py: Python<'py>,
    view: ArrayView2<T>,
    labels: &[i64],
    params: &Params,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let rows = view.nrows();
    let width = params.ks.len();
    let flat = py.detach(|| certify::certify_batch(view, labels, params, parallel()))?;
    let out = ndarray::Array2::from_shape_vec((rows, width), flat).expect("rows * len(ks) radii");
    Ok(out.into_pyarray(py))
}

/// certify_counts(counts, labels, ks, sigma, alpha, bound) -> float64 (E, len(ks))
#[pyfunction]
fn certify_counts<'py>(
    py: Python<'py>,
    counts: &Bound<'py, PyAny>,
    labels: PyReadonlyArray1<'py, i64>,
    ks: Vec<usize>,
    sigma: f64,
    alpha: f64,
    bound: &str,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let params = Params { ks, sigma, alpha, bound: BoundKind::parse(bound)? };
    let labels = labels.as_slice().map_err(|_| PyValueError::new_err("labels must be contiguous"))?;
    with_int_view2!(counts, "counts", |view| generic_certify(py, view, labels, &params))
}

fn generic_count<'py, T: IntValue>(
    py: Python<'py>,
    view: ArrayView2<T>,
    num_classes: usize,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let out = py.detach(|| count::count_labels(view, num_classes, parallel()))?;
    Ok(out.into_pyarray(py))
}

/// count_labels(labels, num_classes) -> int64 (E, num_classes) for labels (E, n)
#[pyfunction]
fn count_labels<'py>(
    py: Python<'py>,
    labels: &Bound<'py, PyAny>,
    num_classes: usize,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    with_int_view2!(labels, "labels", |view| generic_count(py, view, num_classes))
}

fn generic_predict<'py, T: IntValue>(
    py: Python<'py>,
    view: ArrayView2<T>,
    k: usize,
    alpha: f64,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let rows = view.nrows();
    let flat = py.detach(|| predict::predict_batch(view, k, alpha, parallel()))?;
    let out = ndarray::Array2::from_shape_vec((rows, k), flat).expect("rows * k labels");
    Ok(out.into_pyarray(py))
}

/// predict_counts(counts, k, alpha) -> int64 (E, k): each row's top-k labels by count, or
/// a row of -1 where the test abstains
#[pyfunction]
fn predict_counts<'py>(
    py: Python<'py>,
    counts: &Bound<'py, PyAny>,
    k: usize,
    alpha: f64,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    with_int_view2!(counts, "counts", |view| generic_predict(py, view, k, alpha))
}

/// The (lower, upper) arrays `clopper_pearson` returns.
type LowerUpper<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// clopper_pearson(successes, trials, alpha) on equal-length 1-D arrays -> (lower, upper)
#[pyfunction]
fn clopper_pearson<'py>(
    py: Python<'py>,
    successes: PyReadonlyArray1<'py, i64>,
    trials: PyReadonlyArray1<'py, i64>,
    alpha: PyReadonlyArray1<'py, f64>,
) -> PyResult<LowerUpper<'py>> {
    let (x, n, a) = (successes.as_array(), trials.as_array(), alpha.as_array());
    let (lower, upper) = py.detach(|| bounds::clopper_pearson(x, n, a, parallel()))?;
    Ok((lower.into_pyarray(py), upper.into_pyarray(py)))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(certify_counts, m)?)?;
    m.add_function(wrap_pyfunction!(count_labels, m)?)?;
    m.add_function(wrap_pyfunction!(clopper_pearson, m)?)?;
    m.add_function(wrap_pyfunction!(predict_counts, m)?)?;
    m.add_function(wrap_pyfunction!(_mark_forked, m)?)?;
    Ok(())
}
