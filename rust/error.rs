//! One error type for the whole core; the bindings map each variant to a Python exception.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum CoreError {
    /// A value out of its allowed range (maps to `ValueError`).
    Value(String),
}

impl CoreError {
    pub fn value(msg: impl Into<String>) -> Self {
        CoreError::Value(msg.into())
    }
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Value(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for CoreError {}

pub type CoreResult<T> = Result<T, CoreError>;
