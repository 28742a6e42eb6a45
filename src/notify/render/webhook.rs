//! The generic webhook body: the alert records themselves, for machines. A body over
//! the receiver's `max_body_bytes` (default [`WEBHOOK_DEFAULT_MAX_BODY`]) is split into
//! parts, in order, each under the cap, each with its own idempotency key derived from
//! the batch's (`<key>.<part>`), so a receiver can drop a repeated part. Splitting, not
//! summarising: a machine needs every record; the notification counts as delivered
//! once every part was accepted.

use serde_json::{json, Value};

#[cfg(doc)]
use super::limits::WEBHOOK_DEFAULT_MAX_BODY;
use super::Notification;
use crate::record::AlertRecord;

/// One request of a webhook delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookPart {
    /// `Idempotency-Key` of this part.
    pub key: String,
    pub body: Vec<u8>,
}

fn body(n: &Notification, key: &str, alerts: &[AlertRecord], part: usize, parts: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": "1",
        "receiver": n.receiver,
        "owner": n.owner,
        "idempotency_key": key,
        "batch_key": n.idempotency_key(),
        "part": part,
        "parts": parts,
        "digest": n.digest,
        "alerts": alerts,
    }))
    .expect("JSON serializes")
}

/// The whole body as one JSON value (for dry runs and receivers without a cap).
pub fn webhook(n: &Notification) -> Value {
    serde_json::from_slice(&body(n, &n.idempotency_key(), &n.alerts, 1, 1)).expect("valid JSON")
}

/// The requests of one delivery, each body at most `max_body` bytes. An alert record
/// that alone does not fit is an error naming it.
pub fn webhook_parts(n: &Notification, max_body: usize) -> Result<Vec<WebhookPart>, String> {
    let key = n.idempotency_key();
    let whole = body(n, &key, &n.alerts, 1, 1);
    if whole.len() <= max_body {
        return Ok(vec![WebhookPart { key, body: whole }]);
    }
    // Greedy packing; the envelope is measured with the largest part numbers and key
    // it can carry, so renumbering never pushes a part over the cap.
    let envelope = body(
        n,
        &format!("{key}.{}", n.alerts.len()),
        &[],
        n.alerts.len(),
        n.alerts.len(),
    )
    .len();
    let mut groups: Vec<Vec<AlertRecord>> = Vec::new();
    let mut size = envelope;
    for a in &n.alerts {
        let len = serde_json::to_vec(a).expect("JSON serializes").len() + 1;
        if envelope + len > max_body {
            return Err(format!(
                "alert {} alone is {} bytes, over the receiver's max_body_bytes ({max_body})",
                a.id,
                envelope + len
            ));
        }
        if groups.is_empty() || size + len > max_body {
            groups.push(Vec::new());
            size = envelope;
        }
        size += len;
        groups.last_mut().expect("a group").push(a.clone());
    }
    let parts = groups.len();
    Ok(groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let k = format!("{key}.{}", i + 1);
            WebhookPart {
                body: body(n, &k, g, i + 1, parts),
                key: k,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn note(n: usize, pad: usize) -> Notification {
        Notification {
            receiver: "hook".into(),
            owner: "ana@example.com".into(),
            owner_chat: None,
            alerts: (0..n)
                .map(|i| {
                    let mut a = AlertRecord::sample(
                        &format!("a{i}/inactive/2026-03-01"),
                        crate::engine::Status::Firing,
                        crate::config::Severity::Warning,
                    );
                    a.account = Some(crate::accounts::AccountMeta {
                        name: Some("x".repeat(pad)),
                        ..Default::default()
                    });
                    a
                })
                .collect(),
            digest: false,
        }
    }

    #[test]
    fn a_small_batch_is_one_part_with_the_batch_key() {
        let n = note(3, 10);
        let parts = webhook_parts(&n, 1 << 20).unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].key, n.idempotency_key());
        assert_eq!(webhook(&n)["alerts"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn an_oversized_alert_is_refused_by_name() {
        let err = webhook_parts(&note(1, 5000), 1000).unwrap_err();
        assert!(err.contains("a0/inactive/2026-03-01"), "{err}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn parts_fit_keep_order_and_lose_nothing(n in 1usize..500, pad in 0usize..3000, cap in 4000usize..200_000) {
            let note = note(n, pad);
            let parts = webhook_parts(&note, cap).unwrap();
            let mut ids = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                prop_assert!(p.body.len() <= cap);
                let v: Value = serde_json::from_slice(&p.body).unwrap();
                prop_assert_eq!(v["part"].as_u64(), Some(i as u64 + 1));
                prop_assert_eq!(v["parts"].as_u64(), Some(parts.len() as u64));
                prop_assert_eq!(v["idempotency_key"].as_str(), Some(p.key.as_str()));
                for a in v["alerts"].as_array().unwrap() {
                    ids.push(a["id"].as_str().unwrap().to_string());
                }
            }
            let want: Vec<String> = note.alerts.iter().map(|a| a.id.clone()).collect();
            prop_assert_eq!(ids, want);
        }
    }
}
