//! Counting predicted labels: one histogram per row of a (rows, samples) label array.

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

use crate::error::{CoreError, CoreResult};
use crate::int_value::IntValue;
use crate::parallel;

/// counts[e, c] = #{j : labels[e, j] == c}. Labels outside [0, num_classes) are an error.
pub fn count_labels<T: IntValue>(labels: ArrayView2<T>, num_classes: usize, parallel: bool) -> CoreResult<Array2<i64>> {
    if num_classes < 1 {
        return Err(CoreError::value(format!("num_classes must be >= 1, got {num_classes}")));
    }
    let rows = labels.nrows();
    // A fallible allocation: a num_classes of 2**40 is an error to report, not an abort.
    let too_large = || {
        CoreError::value(format!(
            "num_classes = {num_classes} needs a {rows} x {num_classes} table of counts, more memory than can be allocated"
        ))
    };
    let size = rows.checked_mul(num_classes).filter(|&s| s <= isize::MAX as usize / 8).ok_or_else(too_large)?;
    let mut out: Vec<i64> = Vec::new();
    out.try_reserve_exact(size).map_err(|_| too_large())?;
    out.resize(size, 0);
    let count_row = |(e, hist): (usize, &mut [i64])| -> Result<(), (usize, CoreError)> {
        for &v in labels.row(e).iter() {
            let c = v.to_i128();
            if c < 0 || c >= num_classes as i128 {
                return Err((
                    e,
                    CoreError::value(format!(
                        "labels must be in [0, num_classes) = [0, {num_classes}), got {c} in row {e}"
                    )),
                ));
            }
            hist[c as usize] += 1;
        }
        Ok(())
    };
    // Counting a label is cheap: a row of a thousand labels is about one unit of work.
    let result: Vec<_> = if parallel::worth_it(parallel, rows * labels.ncols() / 1024) {
        out.par_chunks_mut(num_classes).enumerate().map(count_row).collect()
    } else {
        out.chunks_mut(num_classes).enumerate().map(count_row).collect()
    };
    if let Some((_, err)) = result.into_iter().filter_map(Result::err).min_by_key(|(e, _)| *e) {
        return Err(err);
    }
    Ok(Array2::from_shape_vec((rows, num_classes), out).expect("rows * num_classes elements"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn histograms_per_row() {
        let labels = array![[0u8, 2, 2, 1], [3, 3, 3, 3]];
        let got = count_labels(labels.view(), 4, true).unwrap();
        assert_eq!(got, array![[1i64, 1, 2, 0], [0, 0, 0, 4]]);
        assert!(count_labels(labels.view(), 3, false).unwrap_err().to_string().contains("row 1"));
        let neg = array![[0i32, -1]];
        assert!(count_labels(neg.view(), 3, false).is_err());
        let err = count_labels(labels.view(), usize::MAX / 2, false).unwrap_err().to_string();
        assert!(err.contains("more memory than can be allocated"), "{err}");
    }
}
