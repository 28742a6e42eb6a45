//! Outputs: alert records and dead letters.

pub mod record;
pub mod reject;
