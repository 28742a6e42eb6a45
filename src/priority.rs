//! What is at stake: one score per alert (and per account) from its severity, the
//! account's revenue and the days left to its renewal. Messages, digests and the
//! inbox all order by it. Pure; the weights are `[priority]` in the config.
//!
//! ```text
//! score = severity weight                       (critical 3, warning 1, resolved 0)
//!       x (1 + ln(1 + ARR / revenue_unit))      (unknown revenue: ARR 0)
//!       x (1 + renewal_boost x max(0, 1 - days_to_renewal / renewal_horizon_days))
//! ```
//!
//! ARR is `arr`, else 12 x `mrr`. A renewal already past counts as due now; an unknown
//! renewal date adds nothing. With the defaults a critical alert on a $500k-ARR account
//! renewing in 30 days scores 3 x 4.9 x 2.3 = 34, the same alert on an unknown account
//! 3, a warning on a $20k account with no renewal in sight 2.1. An account's score is
//! the sum over its firing alerts.

use serde::Deserialize;

use crate::accounts::AccountMeta;
use crate::config::Severity;
use crate::record::AlertRecord;
use crate::time::{parse_date, Millis, DAY};

/// `[priority]`: the weights of the score.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriorityConfig {
    pub critical_weight: f64,
    pub warning_weight: f64,
    /// ARR at which revenue adds ln(2) ~ 0.7 to the revenue factor.
    pub revenue_unit: f64,
    /// How much a renewal due now multiplies the score by, on top of 1.
    pub renewal_boost: f64,
    /// Renewals further away than this add nothing.
    pub renewal_horizon_days: f64,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        PriorityConfig {
            critical_weight: 3.0,
            warning_weight: 1.0,
            revenue_unit: 10_000.0,
            renewal_boost: 2.0,
            renewal_horizon_days: 90.0,
        }
    }
}

impl PriorityConfig {
    /// Why the weights cannot be used, if they cannot.
    pub fn problem(&self) -> Option<String> {
        let all = [
            ("critical_weight", self.critical_weight),
            ("warning_weight", self.warning_weight),
            ("revenue_unit", self.revenue_unit),
            ("renewal_boost", self.renewal_boost),
            ("renewal_horizon_days", self.renewal_horizon_days),
        ];
        if let Some((name, x)) = all.iter().find(|(_, x)| !x.is_finite() || *x < 0.0) {
            return Some(format!(
                "{name} is {x}: every weight must be a finite number >= 0"
            ));
        }
        if self.revenue_unit == 0.0 || self.renewal_horizon_days == 0.0 {
            return Some("revenue_unit and renewal_horizon_days must be above 0".into());
        }
        None
    }

    /// The severity part of the score.
    pub fn severity_weight(&self, severity: Severity, firing: bool) -> f64 {
        match (firing, severity) {
            (false, _) => 0.0,
            (true, Severity::Critical) => self.critical_weight,
            (true, _) => self.warning_weight,
        }
    }

    /// The account part of the score (revenue and renewal) at `now`, from the
    /// account's metadata.
    pub fn account_factor(&self, account: Option<&AccountMeta>, now: Millis) -> f64 {
        let known = |x: Option<f64>| x.filter(|x| x.is_finite() && *x >= 0.0);
        let arr = known(account.and_then(|m| m.arr))
            .or_else(|| known(account.and_then(|m| m.mrr)).map(|m| m * 12.0));
        let renewal = account
            .and_then(|m| m.renewal_date.as_deref())
            .and_then(|d| parse_date(d).ok());
        self.factor(arr, renewal, now)
    }

    /// The account part of the score from its ARR and renewal time (both optional).
    pub fn factor(&self, arr: Option<f64>, renewal_at: Option<Millis>, now: Millis) -> f64 {
        let arr = arr.filter(|x| x.is_finite() && *x >= 0.0).unwrap_or(0.0);
        let revenue = 1.0 + (1.0 + arr / self.revenue_unit).ln();
        let renewal = renewal_at.map_or(1.0, |at| {
            let days = ((at - now) as f64 / DAY as f64).max(0.0);
            1.0 + self.renewal_boost * (1.0 - days / self.renewal_horizon_days).max(0.0)
        });
        revenue * renewal
    }

    /// The score of one alert record, with days to renewal counted from `now`.
    pub fn alert_score(&self, record: &AlertRecord, now: Millis) -> f64 {
        self.severity_weight(record.severity, record.is_firing())
            * self.account_factor(record.account.as_ref(), now)
    }

    /// The score of one alert record as of its own event time (deterministic: the same
    /// record always scores the same).
    pub fn alert_score_at_event(&self, record: &AlertRecord) -> f64 {
        self.alert_score(record, record.event_time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Status;
    use serde_json::json;

    fn alert(severity: Severity, account: serde_json::Value) -> AlertRecord {
        let mut a = AlertRecord::sample("a/inactive/1", Status::Firing, severity);
        a.event_time = crate::time::parse_rfc3339("2026-03-01T00:00:00Z").unwrap();
        let mut account = account;
        account["account_id"] = json!("a");
        a.account = Some(serde_json::from_value(account).unwrap());
        a
    }

    #[test]
    fn a_critical_alert_on_a_large_account_renewing_soon_comes_first() {
        let p = PriorityConfig::default();
        let big_soon = alert(
            Severity::Critical,
            json!({"arr": 500000, "renewal_date": "2026-03-31"}),
        );
        let big_later = alert(
            Severity::Critical,
            json!({"arr": 500000, "renewal_date": "2027-03-01"}),
        );
        let small_soon = alert(
            Severity::Critical,
            json!({"mrr": 100, "renewal_date": "2026-03-31"}),
        );
        let warning_big = alert(
            Severity::Warning,
            json!({"arr": 500000, "renewal_date": "2026-03-31"}),
        );
        let unknown = alert(Severity::Critical, json!({}));
        let scores: Vec<f64> = [&big_soon, &big_later, &small_soon, &warning_big, &unknown]
            .iter()
            .map(|a| p.alert_score_at_event(a))
            .collect();
        assert!((scores[0] - 3.0 * (1.0 + 51f64.ln()) * (1.0 + 2.0 * 60.0 / 90.0)).abs() < 1e-9);
        assert!(scores[0] > scores[1] && scores[1] > scores[2] && scores[0] > scores[3]);
        assert_eq!(scores[4], 3.0);
        let mut resolved = big_soon.clone();
        resolved.status = Status::Resolved;
        assert_eq!(p.alert_score_at_event(&resolved), 0.0);
        // A renewal in the past is due now.
        let overdue = alert(Severity::Warning, json!({"renewal_date": "2026-01-01"}));
        assert_eq!(p.alert_score_at_event(&overdue), 3.0);
    }

    #[test]
    fn bad_weights_are_named() {
        let bad = PriorityConfig {
            revenue_unit: 0.0,
            ..PriorityConfig::default()
        };
        assert!(bad.problem().is_some());
        assert!(PriorityConfig::default().problem().is_none());
        // Found by tests/fuzz.rs: the message names the weight at fault.
        let negative = PriorityConfig {
            warning_weight: -1.0,
            ..PriorityConfig::default()
        };
        let msg = negative.problem().unwrap();
        assert!(msg.starts_with("warning_weight is -1"), "{msg}");
    }
}
