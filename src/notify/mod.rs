//! CSM notifications: account metadata, routing, rendering and delivery.

pub mod deliver;
pub mod group;
pub mod honour;
pub mod kafka;
pub mod render;
pub mod route;
pub mod silence;
pub mod silence_api;

use std::collections::HashSet;

use crate::accounts::AccountLookup;
use crate::config::NotifyConfig;
use crate::engine::Status;
use crate::record::AlertRecord;
use render::Notification;

/// Routing labels of an alert record (its own fields and its `account` metadata).
/// Numbers read as the record writes them (`mrr` 1200 is `1200.0`).
impl route::Labels for AlertRecord {
    fn label(&self, key: &str) -> Option<String> {
        let json_number = |x: f64| serde_json::Number::from_f64(x).map(|n| n.to_string());
        match key {
            "kind" => Some(self.kind.as_str().to_string()),
            "severity" => Some(self.severity.as_str().to_string()),
            "status" => Some(self.status.as_str().to_string()),
            "account_id" => Some(self.account_id.clone()),
            _ => {
                let m = self.account.as_ref()?;
                match key {
                    "owner" | "owner_email" => m.owner_email.clone(),
                    "mrr" => m.mrr.and_then(json_number),
                    "arr" => m.arr.and_then(json_number),
                    "crm_url" => m.crm_url.clone(),
                    other => m.label(other),
                }
            }
        }
        .filter(|v| !v.is_empty())
    }
}

/// Sets the record's `account` to the account's current metadata, when it is known
/// (what the detector attached may be older); else leaves the record as it is.
pub fn attach_account(record: &mut AlertRecord, meta: &dyn AccountLookup) {
    if let Some(m) = meta.account(&record.account_id) {
        record.account = Some(m);
    }
}

/// Turns alert records (arriving together) into notifications: duplicates of an
/// (id, status) pair dropped, resolved notices dropped unless `send_resolved`, routed,
/// then batched per receiver and owner so that one CSM gets one message.
pub fn plan(
    cfg: &NotifyConfig,
    records: impl IntoIterator<Item = AlertRecord>,
    meta: &dyn AccountLookup,
) -> Vec<Notification> {
    let mut seen: HashSet<(String, Status)> = HashSet::new();
    let mut out: Vec<Notification> = Vec::new();
    for mut r in records {
        if !seen.insert((r.id.clone(), r.status))
            || (r.status == Status::Resolved && !cfg.send_resolved)
        {
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
