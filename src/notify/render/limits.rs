//! The documented limits of the services churnwatch sends messages to, in one place.
//! Every renderer stays within them; the property tests in `slack.rs` and `email.rs`
//! hold the largest realistic batches to them.

/// Slack Block Kit, <https://api.slack.com/reference/block-kit/blocks>: a message
/// holds at most 50 blocks.
pub const SLACK_MAX_BLOCKS: usize = 50;
/// Block Kit section block: `text` at most 3,000 characters.
pub const SLACK_MAX_SECTION_TEXT: usize = 3_000;
/// Block Kit header block: `plain_text` at most 150 characters.
pub const SLACK_MAX_HEADER_TEXT: usize = 150;
/// Block Kit context block: at most 10 elements (each a text object, itself at most
/// 3,000 characters like every text object).
pub const SLACK_MAX_CONTEXT_ELEMENTS: usize = 10;
pub const SLACK_MAX_TEXT_OBJECT: usize = 3_000;
/// The top-level `text` of a message (the notification fallback): Slack truncates
/// messages over 40,000 characters and advises keeping it to a few thousand
/// (<https://api.slack.com/methods/chat.postMessage#truncating>); the same cap as a
/// section keeps it readable in a push notification.
pub const SLACK_MAX_FALLBACK_TEXT: usize = 3_000;

/// Alerts shown in full in one Slack message; the rest are summarised in one line.
/// Two blocks per alert (section + context) plus a header, an opening line and the
/// summary must fit in [`SLACK_MAX_BLOCKS`]; 20 also keeps a message readable and
/// leaves room for a row of buttons per alert later.
pub const SLACK_MAX_ALERTS: usize = 20;
const _: () = assert!(3 + 2 * SLACK_MAX_ALERTS <= SLACK_MAX_BLOCKS);
/// Alerts shown in full when each carries a row of buttons (an actions block): three
/// blocks per alert, plus a header, an opening line and the summary.
pub const SLACK_MAX_ALERTS_WITH_BUTTONS: usize = 15;
const _: () = assert!(3 + 3 * SLACK_MAX_ALERTS_WITH_BUTTONS <= SLACK_MAX_BLOCKS);
/// Block Kit actions block: at most 25 elements.
pub const SLACK_MAX_ACTIONS_ELEMENTS: usize = 25;
/// Block Kit button: `action_id` and `value` at most 2,000 characters (an alert id is
/// at most 300 bytes), its `plain_text` at most 75 characters.
pub const SLACK_MAX_BUTTON_VALUE: usize = 2_000;
pub const SLACK_MAX_BUTTON_TEXT: usize = 75;
/// Block Kit `block_id`: at most 255 characters.
pub const SLACK_MAX_BLOCK_ID: usize = 255;

/// Email subject: RFC 5322 advises lines of at most 78 characters; mail clients show
/// about that much. Longer subjects are cut with an ellipsis.
pub const EMAIL_MAX_SUBJECT: usize = 78;
/// Alerts shown in full in one email; the rest are summarised in one paragraph
/// (a 100-alert email is ~100 KiB of HTML, far below every provider's 10-25 MB cap,
/// and about what a person will scroll through).
pub const EMAIL_MAX_ALERTS: usize = 100;

/// A string from the CRM or an event (account name, plan, id) shown to a person is cut
/// to this many characters; full values stay in the alert record and the webhook body.
pub const MAX_SHOWN_FIELD: usize = 120;
/// Event names listed as "never used" in one alert, at most.
pub const MAX_SHOWN_MISSING_EVENTS: usize = 10;

/// Default cap of a generic webhook body (`max_body_bytes` of the receiver): bodies
/// that would be larger are split into parts, each under the cap.
pub const WEBHOOK_DEFAULT_MAX_BODY: usize = 1 << 20;
