//! The integer element types a counts or labels array may have, behind one trait.

/// An integer element of a counts or labels array, whatever its numpy dtype.
pub trait IntValue: Copy + Send + Sync {
    fn to_i128(self) -> i128;
    /// The value as u64 (meaningful when it is not negative).
    fn to_u64(self) -> u64;
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl IntValue for $t {
            #[inline]
            fn to_i128(self) -> i128 { self as i128 }
            #[inline]
            fn to_u64(self) -> u64 { self as u64 }
        }
    )*};
}
int_value!(i8, i16, i32, i64, u8, u16, u32, u64);
