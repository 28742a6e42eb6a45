//! Inputs: parsing of event messages, and NDJSON files.

pub mod event;
pub mod file;
pub mod json;
