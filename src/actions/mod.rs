//! Actions on alerts (issue 16): a person acknowledges an alert, snoozes it until a
//! time with a reason, marks it "not a risk" (feedback, with a reason; also quiet until
//! a time), or reopens it. Each action is stored in the compacted topic
//! `<notify.group_id>-actions` (key: the alert id; value: the alert's bounded action
//! history, the latest being its state) that every instance follows, like silences.
//!
//! - [`record`]: the record, the per-alert value, the state, request validation.
//! - [`store`]: the bounded in-memory store and [`Actions::state`], the query for the
//!   notifier and the inbox.
//! - [`apply`]: the one path every channel takes to apply an action.
//! - [`rate`]: how fast one person may act.
//! - [`api`]: `POST`/`GET /api/v1/actions`, behind the inbox's sign-in and roles.
//! - [`slack`]: `POST /api/v1/slack/interactions`, Slack's buttons (signed by Slack).
//! - [`email_link`]: signed, expiring one-click links in emails.
//! - [`follow`]: following the topic; [`start`] wires it all for a process.
//! - [`metrics`]: actions by kind and outcome.
//! - [`view`]: the inbox view with actions on the account page.

pub mod api;
pub mod apply;
pub mod email_link;
pub mod follow;
pub mod metrics;
pub mod rate;
pub mod record;
pub mod slack;
pub mod store;
pub mod view;

pub use follow::start;
pub use record::{ActionKind, ActionRecord, ActionState, AlertActions, Source};
pub use store::Actions;
