//! churnwatch: flags SaaS accounts at risk of churning from their product-usage events.
//!
//! Data flows `source` (files, Kafka) -> `engine` (pure state and rules) -> `sink`
//! (alert records, notifications).

pub mod accounts;
pub mod actions;
pub mod asof;
pub mod backtest;
pub mod config;
pub mod demo;
pub mod engine;
pub mod gen;
pub mod inbox;
pub mod kafka;
pub mod metrics;
pub mod notify;
pub mod priority;
pub mod record;
pub mod replay;
pub mod server;
pub mod sink;
pub mod source;
pub mod time;
