//! See the crate documentation.
pub fn main() -> i32 { 0 }
