//! When to spread work over rayon's pool: waking its threads costs tens of microseconds, more
//! than a few hundred quantiles, so small calls (one row per look of an adaptive run, a batch's
//! labels) run on the calling thread. Results do not depend on the choice.

/// Items (rows, quantile pairs) below which the calling thread does the work itself.
pub const MIN_ITEMS: usize = 256;

/// Whether `items` units of work go to the pool, when the pool is `allowed` at all.
pub fn worth_it(allowed: bool, items: usize) -> bool {
    allowed && items >= MIN_ITEMS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_calls_stay_on_the_calling_thread() {
        assert!(!worth_it(true, MIN_ITEMS - 1));
        assert!(worth_it(true, MIN_ITEMS));
        assert!(!worth_it(false, 1 << 20));
    }
}
