//! x
pub mod spool;
