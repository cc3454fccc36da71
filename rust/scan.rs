//! One pass over a row of counts: check every count, sum them, and keep the k largest
//! counts of the labels other than the certified one. At C = 1000 this reads 8 KB a row
//! and is most of the work, so the common case (a contiguous row, k <= 32) has a fast
//! path; everything else, and every row that needs an error message, takes the checked
//! path `scan_values`.

use ndarray::ArrayView1;

use crate::error::{CoreError, CoreResult};
use crate::int_value::IntValue;

/// What the radius needs of a row: the sample size, the label's count and the `k` largest
/// counts of the other labels, largest first (`top()`).
#[derive(Debug)]
pub struct RowScan {
    pub total: u64,
    pub label_count: u64,
    top: Top,
}

/// The fast path's counts stay on the stack: a heap allocation per row would cost as much
/// as a tenth of the row's work.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // the large variant is the common one
enum Top {
    Inline([u64; FAST_K], usize),
    Heap(Vec<u64>),
}

impl RowScan {
    pub fn top(&self) -> &[u64] {
        match &self.top {
            Top::Inline(buf, len) => &buf[..*len],
            Top::Heap(values) => values,
        }
    }
}

/// The largest k the fast path keeps in a stack buffer.
const FAST_K: usize = 32;

pub fn scan_row<T: IntValue>(row: ArrayView1<T>, e: usize, label: usize, k: usize) -> CoreResult<RowScan> {
    match row.as_slice() {
        Some(slice) if k <= FAST_K => scan_slice(slice, e, label, k),
        Some(slice) => scan_values(slice.iter().copied(), e, label, k),
        None => scan_values(row.iter().copied(), e, label, k),
    }
}

/// The fast path for a contiguous row: one pass whose loop body is a load, an add, an or
/// and one compare that rejects most counts (`TopK::insert`), with a prefetch a little
/// ahead. The label's own column is skipped by splitting the slice. `TopK` starts as k
/// zeros, which is right because there are at least k other labels (the caller's k < C)
/// and counts are >= 0. A row that might hold
/// a negative count or overflow the total (a count with a bit at or above 64 - log2(C))
/// goes to the checked path, which names the problem.
fn scan_slice<T: IntValue>(slice: &[T], e: usize, label: usize, k: usize) -> CoreResult<RowScan> {
    let mut top = TopK::new(k);
    let (mut total, mut bits) = (0u64, 0u64);
    let mut take = |c: u64| {
        total = total.wrapping_add(c);
        bits |= c;
        top.insert(c);
    };
    let (before, rest) = slice.split_at(label);
    let label_count = rest[0].to_u64();
    for part in [before, &rest[1..]] {
        let lines = part.chunks_exact(PER_LINE);
        let tail = lines.remainder();
        for line in lines {
            prefetch_ahead(line);
            line.iter().for_each(|&v| take(v.to_u64()));
        }
        tail.iter().for_each(|&v| take(v.to_u64()));
    }
    total = total.wrapping_add(label_count);
    bits |= label_count;
    let safe_bits = 64 - (usize::BITS - slice.len().leading_zeros());
    if bits >> safe_bits != 0 {
        return scan_values(slice.iter().copied(), e, label, k);
    }
    if total == 0 {
        return Err(zero_row(e));
    }
    Ok(RowScan { total, label_count, top: Top::Inline(top.buf, top.k) })
}

/// Counts a loop step covers: 64 bytes of i64, less of narrower types (one prefetch per
/// step is a little more than needed for those, never less).
const PER_LINE: usize = 8;
/// How far ahead of the scan to prefetch, in bytes.
const AHEAD: usize = 2048;

/// Asks for the memory `AHEAD` bytes past `at` (into the next row near the end of this
/// one, which is the row scanned next). The scan's compares mispredict now and then and
/// cut short the loads the core runs ahead with, so a row from memory would otherwise
/// be latency-bound. A hint only: it never faults and changes no result.
#[inline(always)]
fn prefetch_ahead<T>(at: &[T]) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching does not fault, whatever the address. SSE is part of x86-64.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((at.as_ptr() as *const i8).wrapping_add(AHEAD));
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

/// The k largest values offered so far, largest first, in a stack buffer (k <= FAST_K),
/// starting as k zeros. `floor` is the smallest kept value: most values fall below it
/// at one compare.
struct TopK {
    buf: [u64; FAST_K],
    k: usize,
    floor: u64,
}

impl TopK {
    fn new(k: usize) -> Self {
        debug_assert!((1..=FAST_K).contains(&k));
        TopK { buf: [0; FAST_K], k, floor: 0 }
    }

    /// Inserts c when it beats the smallest entry, dropping that entry. The shift is
    /// branch-free (each entry becomes max(itself, min(the entry above, c))): where a
    /// count lands differs from row to row, so a loop that stops at its place would be
    /// mispredicted on nearly every insert.
    #[inline(always)]
    fn insert(&mut self, c: u64) {
        if c > self.floor {
            let top = &mut self.buf[..self.k];
            for i in (1..top.len()).rev() {
                top[i] = top[i].max(top[i - 1].min(c));
            }
            top[0] = top[0].max(c);
            self.floor = top[top.len() - 1];
        }
    }
}

fn zero_row(e: usize) -> CoreError {
    CoreError::value(format!("row {e} of counts sums to 0: every row needs at least one sample"))
}

/// The checked path: any layout, any k, and the error messages that name the row and
/// column of a bad count.
pub fn scan_values<T: IntValue>(
    values: impl Iterator<Item = T>,
    e: usize,
    label: usize,
    k: usize,
) -> CoreResult<RowScan> {
    let mut total: u64 = 0;
    let mut label_count = 0;
    // Small k: the fast path's buffer. Large k: keep every other count and select
    // afterwards (the buffer's inserts would cost O(C k)).
    let mut small = (k <= FAST_K).then(|| TopK::new(k));
    let mut others: Vec<u64> = Vec::new();
    for (j, v) in values.enumerate() {
        let wide = v.to_i128();
        let c = match u64::try_from(wide) {
            Ok(c) => c,
            Err(_) => {
                return Err(CoreError::value(format!(
                    "counts must be non-negative integers, got {wide} at row {e}, column {j}"
                )))
            }
        };
        total = total.checked_add(c).ok_or_else(|| {
            CoreError::value(format!("counts in row {e} sum to more than 2**64 - 1; totals must fit in 64 bits"))
        })?;
        if j == label {
            label_count = c;
        } else if let Some(top) = small.as_mut() {
            top.insert(c);
        } else {
            others.push(c);
        }
    }
    if total == 0 {
        return Err(zero_row(e));
    }
    let top = match small {
        Some(top) => Top::Inline(top.buf, top.k),
        None => {
            others.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
            others.truncate(k);
            others.sort_unstable_by(|a, b| b.cmp(a));
            Top::Heap(others)
        }
    };
    Ok(RowScan { total, label_count, top })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference: sort the other labels' counts.
    fn expected_top(row: &[u64], label: usize, k: usize) -> Vec<u64> {
        let mut others: Vec<u64> = row.iter().enumerate().filter(|&(j, _)| j != label).map(|(_, &c)| c).collect();
        others.sort_unstable_by(|a, b| b.cmp(a));
        others.truncate(k);
        others
    }

    #[test]
    fn scan_keeps_the_largest_other_counts_and_the_total() {
        let row = ndarray::Array1::from_iter((0..100u64).map(|i| (i * 7919) % 113));
        for k in [1, 5, 16, 17, 32, 33, 40, 99] {
            let expect = expected_top(row.as_slice().unwrap(), 3, k);
            let scan = scan_row(row.view(), 0, 3, k).unwrap();
            assert_eq!(scan.top(), expect);
            assert_eq!(scan.total, row.sum());
            assert_eq!(scan.label_count, row[3]);
            // A strided view goes through the checked path to the same answer.
            let wide = ndarray::Array2::from_shape_fn((100, 2), |(i, j)| if j == 0 { row[i] } else { 7 });
            assert_eq!(scan_row(wide.column(0), 0, 3, k).unwrap().top(), expect);
        }
    }

    /// Every path (i64, u64 and i32 rows, the checked path) against the sort, on rows of
    /// every length around a loop step, labels at every position, ties, zeros and wide
    /// counts.
    #[test]
    fn fast_paths_agree_with_a_sort() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [2usize, 3, 15, 16, 17, 31, 32, 33, 47, 64, 100, 1000] {
            for trial in 0..40 {
                let row: Vec<u64> = (0..len)
                    .map(|_| match trial % 4 {
                        0 => next() % 4, // many ties
                        1 => match next() % 3 {
                            0 => next() % 100_000, // sparse
                            _ => 0,
                        },
                        2 => next() % (1 << 40), // wide
                        _ => next() % 1000,
                    })
                    .collect();
                let label = (next() as usize) % len;
                for k in [1usize, 2, 5, 16, 32].into_iter().filter(|&k| k < len) {
                    let expect = expected_top(&row, label, k);
                    let total: u64 = row.iter().sum();
                    if total == 0 {
                        continue;
                    }
                    let as_i64: Vec<i64> = row.iter().map(|&c| c as i64).collect();
                    let scan = scan_row(ArrayView1::from(&as_i64), 0, label, k).unwrap();
                    assert_eq!(
                        (scan.top().to_vec(), scan.total, scan.label_count),
                        (expect.clone(), total, row[label])
                    );
                    let scan = scan_row(ArrayView1::from(&row), 0, label, k).unwrap();
                    assert_eq!(scan.top(), expect, "u64 len {len} label {label} k {k}");
                    if row.iter().all(|&c| c < 1 << 31) {
                        let as_i32: Vec<i32> = row.iter().map(|&c| c as i32).collect();
                        assert_eq!(scan_row(ArrayView1::from(&as_i32), 0, label, k).unwrap().top(), expect);
                    }
                }
            }
        }
    }

    #[test]
    fn bad_counts_fall_back_to_the_checked_path() {
        // A negative count in a block, past the first block, as i64 and as i8.
        let mut row = vec![5i64; 40];
        row[37] = -2;
        let err = scan_row(ArrayView1::from(&row), 4, 0, 3).unwrap_err().to_string();
        assert!(err.contains("non-negative") && err.contains("row 4, column 37"), "{err}");
        let small: Vec<i8> = row.iter().map(|&c| c as i8).collect();
        assert!(scan_row(ArrayView1::from(&small), 4, 0, 3).is_err());
        // A total above 2**64 - 1 from counts that each fit.
        let big = vec![u64::MAX / 20; 40];
        let err = scan_row(ArrayView1::from(&big), 0, 1, 3).unwrap_err().to_string();
        assert!(err.contains("64 bits"), "{err}");
        // Counts near 2**63 whose sum still fits take the checked path and are right.
        let near = vec![1u64 << 62, 1 << 61, 0, 0];
        let scan = scan_row(ArrayView1::from(&near), 0, 0, 2).unwrap();
        assert_eq!((scan.top().to_vec(), scan.total), (vec![1 << 61, 0], (1 << 62) + (1 << 61)));
        let zeros = vec![0i64; 33];
        assert!(scan_row(ArrayView1::from(&zeros), 0, 0, 3).unwrap_err().to_string().contains("sums to 0"));
    }
}
