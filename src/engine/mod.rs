//! The detection engine: pure code, no I/O, no clock. Drivers (replay, demo, the Kafka
//! daemon) hand a `Shard` events and watermark advances and drain its alerts. A driver
//! that replays one history many times (the backtest's sweeps) may hand events with
//! their strings resolved once (`Shard::push_resolved`), or in the order the reorder
//! buffer would apply them, worked out once (`Shard::apply_in_order`).
//!
//! `shard` is the time loop, `rules/` the three rules, `idle` the live-mode watermark
//! of a quiet partition (when the wall clock may move it, how far, and when the input
//! counts as stalled), `config` the engine's view of the configuration.

pub mod account;
pub mod alert;
pub mod config;
pub mod idle;
pub mod limits;
mod pending;
pub mod ring;
mod rules;
pub mod shard;
pub mod snapshot;
pub mod stats;

pub use alert::{Alert, AlertKind, Evidence, ResolveReason, Status};
pub use config::EngineConfig;
pub use idle::{IdleAdvance, IdlePolicy, IdleWatch};
pub use limits::Admit;
pub use shard::{Shard, ShardStats};
