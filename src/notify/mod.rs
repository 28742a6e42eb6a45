//! CSM notifications: account metadata, routing, rendering and delivery.

pub mod deliver;
pub mod group;
pub mod kafka;
pub mod render;
pub mod route;
pub mod silence;
pub mod silence_api;

use std::collections::HashSet;

use serde_json::Value;

use crate::accounts::AccountLookup;
use crate::config::NotifyConfig;
use render::Notification;

/// Routing labels of an alert record (its own fields and its `account` metadata).
impl route::Labels for Value {
    fn label(&self, key: &str) -> Option<String> {
        let from_record = |k: &str| self.get(k).and_then(Value::as_str).map(str::to_string);
        let from_account = |k: &str| {
            self.get("account")
                .and_then(|m| m.get(k))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
        };
        match key {
            "kind" | "severity" | "status" | "account_id" => from_record(key),
            "owner" => from_account("owner_email"),
            other => from_account(other),
        }
        .filter(|v| !v.is_empty())
    }
}

/// Sets the record's `account` to the account's current metadata, when it is known
/// (what the detector attached may be older); else leaves the record as it is.
pub fn attach_account(record: &mut Value, meta: &dyn AccountLookup) {
    let id = record
        .get("account_id")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if let Some(m) = meta.account_json(id) {
        record["account"] = m;
    }
}

/// Turns alert records (arriving together) into notifications: duplicates of an
/// (id, status) pair dropped, resolved notices dropped unless `send_resolved`, routed,
/// then batched per receiver and owner so that one CSM gets one message.
pub fn plan(
    cfg: &NotifyConfig,
    records: impl IntoIterator<Item = Value>,
    meta: &dyn AccountLookup,
) -> Vec<Notification> {
    let mut seen: HashSet<(String, String)> = HashSet::new();
    let mut out: Vec<Notification> = Vec::new();
    for mut r in records {
        let id = r
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let status = r
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if !seen.insert((id, status.clone())) || (status == "resolved" && !cfg.send_resolved) {
            continue;
        }
        attach_account(&mut r, meta);
        let owner = route::Labels::label(&r, "owner").unwrap_or_default();
        let owner_chat = route::Labels::label(&r, "owner_chat");
        for receiver in route::receivers(&cfg.route, &r) {
            match out
                .iter_mut()
                .find(|n| n.receiver == receiver && n.owner == owner)
            {
                Some(n) => n.alerts.push(r.clone()),
                None => out.push(Notification {
                    receiver,
                    owner: owner.clone(),
                    owner_chat: owner_chat.clone(),
                    alerts: vec![r.clone()],
                    digest: false,
                }),
            }
        }
    }
    out
}
