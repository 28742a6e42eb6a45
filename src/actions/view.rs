//! The inbox's view with actions: [`WithActions`] answers as the view it wraps, and
//! adds to an account in full (`AccountDetail::actions`) the actions on its alerts, so
//! the account page and `GET /api/v1/accounts/{id}` show them, and each alert's state
//! (the list page's badges).

use std::sync::Arc;

use super::store::Actions;
use crate::inbox::model::{
    AccountDetail, AccountSummary, InboxView, ListQuery, Page, Principal, TeamRow, ViewStatus,
};

/// A view that adds actions to account details.
pub struct WithActions {
    pub view: Arc<dyn InboxView>,
    pub actions: Arc<Actions>,
}

impl InboxView for WithActions {
    fn list(&self, who: &Principal, q: &ListQuery) -> Page<AccountSummary> {
        self.view.list(who, q)
    }

    fn account(&self, account_id: &str) -> Option<AccountDetail> {
        let mut d = self.view.account(account_id)?;
        d.actions = Some(super::api::account_actions(&self.actions, account_id));
        Some(d)
    }

    fn team(&self) -> Vec<TeamRow> {
        self.view.team()
    }

    fn status(&self) -> ViewStatus {
        self.view.status()
    }

    /// The alert's own state, else the state of the action that quiets its account and
    /// kind (the list's badge then says snoozed or not a risk, as the notifier acts).
    fn alert_state(&self, alert_id: &str) -> Option<super::ActionState> {
        let now = self.actions.now();
        self.actions.state_at(alert_id, now).or_else(|| {
            let account = super::record::account_of(alert_id)?;
            let kind = alert_id.rsplit('/').nth(1)?;
            let mut quiet = self.actions.quiet_of_account(account, now);
            quiet.remove(kind).map(|(_, state)| state)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::record::{validate, AlertActions, NewAction};
    use crate::inbox::pages::fixture::FixtureView;
    use crate::time::{format_rfc3339, DAY};

    #[test]
    fn an_account_in_full_carries_its_actions() {
        let now = 1_780_000_000_000;
        let fixture = FixtureView::sample(now / DAY);
        let alert = fixture.account("acme").unwrap().summary.firing[0]
            .id
            .clone();
        let actions = Arc::new(Actions::new(10, Arc::new(move || now)));
        let req = NewAction {
            alert_id: alert.clone(),
            action: "snooze".into(),
            reason: "renewal call".into(),
            until: Some(format_rfc3339(now + DAY)),
        };
        let rec = validate(&req, "ana@example.com", now, 90 * DAY).unwrap();
        actions.apply(AlertActions::with(None, rec)).unwrap();
        let v = WithActions {
            view: Arc::new(fixture),
            actions,
        };
        let d = serde_json::to_value(v.account("acme").unwrap()).unwrap();
        assert_eq!(d["actions"]["actions"][0]["reason"], "renewal call");
        assert_eq!(d["actions"]["states"][&alert]["state"], "snoozed");
        let other = serde_json::to_value(v.account("globex").unwrap()).unwrap();
        assert_eq!(other["actions"]["actions"], serde_json::json!([]));
        // The wrapped view without actions: no field at all.
        assert!(matches!(
            v.alert_state(&alert),
            Some(crate::actions::ActionState::Snoozed { .. })
        ));
        assert_eq!(v.view.alert_state(&alert), None);
        // Another alert of that account and kind, open itself, is quiet through it.
        let (account, rest) = alert.split_once('/').unwrap();
        let sibling = format!("{account}/{}/another", rest.split('/').next().unwrap());
        assert!(matches!(
            v.alert_state(&sibling),
            Some(crate::actions::ActionState::Snoozed { .. })
        ));
        assert_eq!(
            d["actions"]["quiet"][rest.split('/').next().unwrap()]["alert_id"],
            alert
        );
        assert!(serde_json::to_value(v.view.account("acme").unwrap())
            .unwrap()
            .get("actions")
            .is_none());
    }
}
