//! The one path every channel takes to act on an alert (the JSON API, a Slack button,
//! an email link): validate the request, check that the person may act on the account
//! and that the alert exists, refuse a replayed request (its origin already in the
//! alert's history), append the action to the alert's history, write the new value to
//! the actions topic and wait for Kafka's acknowledgement, then apply it here and
//! count it (by kind, by channel, and the time from the alert to its first action).
//! A refused request writes nothing.

use std::time::Duration;

use axum::http::StatusCode;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::sync::Arc;

use super::metrics::{count, count_source, first_action};
use super::record::{validate, ActionRecord, ActionState, AlertActions, NewAction, Source};
use super::store::Actions;
use crate::accounts::Accounts;
use crate::inbox::model::{InboxView, Principal};
use crate::kafka::client::LogContext;
use crate::time::{parse_rfc3339, Millis};

/// How long Kafka has to acknowledge an action before the request fails.
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every channel needs to apply an action.
pub struct Applier {
    pub store: Arc<Actions>,
    pub producer: FutureProducer<LogContext>,
    pub topic: String,
    /// The furthest ahead `until` may be (`notify.max_silence`).
    pub horizon: Millis,
    /// Account metadata (owners); None: unknown here.
    pub owners: Option<Arc<Accounts>>,
    /// The inbox's view, to check that an alert exists and when it fired; None: alert
    /// ids are checked by shape only and the time to a first action is not known.
    pub view: Option<Arc<dyn InboxView>>,
    /// One write at a time per process, so two requests on one alert do not each
    /// append to the same history and lose the other's entry.
    pub writing: tokio::sync::Mutex<()>,
    /// How fast each person may act.
    pub rate: super::rate::PerPerson,
}

/// A request that was not applied: the status to answer, the metrics' bucket, and
/// what the person is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub status: StatusCode,
    pub bucket: &'static str,
    pub message: String,
    /// When to try again, in seconds (a `Retry-After`), for a request refused for
    /// coming too fast.
    pub retry_after_s: Option<u64>,
}

impl Refused {
    pub fn new(status: StatusCode, bucket: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            bucket,
            message: message.into(),
            retry_after_s: None,
        }
    }

    /// A refusal of `who`'s request for coming too fast (see [`super::rate`]).
    fn limited(why: super::rate::Limited) -> Refused {
        use super::rate::Limited;
        let (message, retry_ms) = match why {
            Limited::Person { retry_after_ms } => (
                "too many actions in a short time: wait a moment and try again".to_string(),
                retry_after_ms,
            ),
            Limited::Busy => (
                "too many people are acting at once: try again in a few seconds".to_string(),
                super::rate::EVERY,
            ),
        };
        Refused {
            status: StatusCode::TOO_MANY_REQUESTS,
            bucket: "rate_limited",
            message,
            retry_after_s: Some((retry_ms.max(0) as u64).div_ceil(1_000).max(1)),
        }
    }
}

/// An applied action: the record and the alert's state after it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub record: ActionRecord,
    pub state: Option<ActionState>,
}

impl Applier {
    /// The owner of `account_id` as this process knows it.
    pub fn owner(&self, account_id: &str) -> Option<String> {
        if let Some(o) = self
            .owners
            .as_ref()
            .and_then(|o| o.get(account_id))
            .and_then(|m| m.owner_email)
        {
            return Some(o);
        }
        self.view.as_ref()?.account(account_id)?.summary.owner_email
    }

    /// The owner's chat handle (a Slack member id) of `account_id`, from the metadata.
    pub fn owner_chat(&self, account_id: &str) -> Option<String> {
        self.owners
            .as_ref()?
            .get(account_id)?
            .owner_chat
            .filter(|c| !c.is_empty())
    }

    /// Whether `who` may act on (and see the actions of) `account_id`.
    pub fn may_act(&self, who: &Principal, account_id: &str) -> Result<(), String> {
        if who.sees_all() || who.may_see(self.owner(account_id).as_deref()) {
            Ok(())
        } else {
            Err(
                "that account is not yours (or its owner is unknown here): only its owner, \
                 a lead or an admin may act on it"
                    .into(),
            )
        }
    }

    /// Whether the alert exists: in the inbox view's firing alerts or history when a
    /// view is here (until it has caught up, an action is refused with 503 rather than
    /// taken unchecked); without a view its id's shape (already checked) is all.
    fn alert_known(&self, rec: &ActionRecord) -> Result<(), Refused> {
        let Some(view) = &self.view else {
            return Ok(());
        };
        if !view.status().caught_up {
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the inbox is still reading its topics and cannot check the alert yet; \
                 try again in a moment",
            ));
        }
        let unknown = |why: &str| Refused::new(StatusCode::NOT_FOUND, "unknown_alert", why);
        let Some(d) = view.account(&rec.account_id) else {
            return Err(unknown("no such account in the inbox"));
        };
        let id = rec.alert_id.as_str();
        if d.summary.firing.iter().any(|f| f.id == id) || d.history.iter().any(|h| h.id == id) {
            Ok(())
        } else {
            Err(unknown(
                "no such alert on that account (neither firing nor in its recent history)",
            ))
        }
    }

    /// When the alert was emitted (its firing transition in the view's history), else
    /// when it fired in event time (a firing alert's `since`); None when no view here
    /// knows it.
    pub fn fired_at(&self, account_id: &str, alert_id: &str) -> Option<Millis> {
        let d = self.view.as_ref()?.account(account_id)?;
        let emitted = d
            .history
            .iter()
            .filter(|h| h.id == alert_id && h.status == "firing")
            .filter_map(|h| parse_rfc3339(&h.emitted_at).ok())
            .min();
        emitted.or_else(|| {
            d.summary
                .firing
                .iter()
                .find(|f| f.id == alert_id)
                .and_then(|f| parse_rfc3339(&f.since).ok())
        })
    }

    /// Writes the alert's new value to the topic, waits for the broker's
    /// acknowledgement, then applies it here.
    async fn store_durably(&self, v: AlertActions) -> Result<(), String> {
        let value = serde_json::to_vec(&v).expect("actions serialize");
        self.producer
            .send(
                FutureRecord::to(&self.topic)
                    .key(&v.alert_id)
                    .payload(&value),
                STORE_TIMEOUT,
            )
            .await
            .map_err(|(e, _)| e.to_string())?;
        // Room was checked under the write lock; only a follower racing in new alerts
        // could fill the store meanwhile, and then the topic still has it.
        let _ = self.store.apply(v);
        super::metrics::ACTIONS.alerts.set(self.store.len() as i64);
        Ok(())
    }

    /// Applies `req` as `who` through `source`; `origin`: the id of the carrying
    /// request that may be used once (empty: none); `shown_at`: when the channel put the
    /// alert before the person (a Slack message's post time, an email link's issue
    /// time), the start of the time to a first action where no inbox view here knows
    /// when the alert was emitted. Counts the outcome either way.
    pub async fn apply(
        &self,
        who: &Principal,
        req: &NewAction,
        source: Source,
        origin: &str,
        shown_at: Option<Millis>,
    ) -> Result<Applied, Refused> {
        let r = self
            .apply_uncounted(who, req, source, origin, shown_at)
            .await;
        let kind = match &r {
            Ok(a) => a.record.action.as_str(),
            Err(_) => req.action.as_str(),
        };
        let outcome = match &r {
            Ok(_) => "accepted",
            Err(e) => e.bucket,
        };
        count(kind, outcome);
        count_source(source, outcome);
        r
    }

    async fn apply_uncounted(
        &self,
        who: &Principal,
        req: &NewAction,
        source: Source,
        origin: &str,
        shown_at: Option<Millis>,
    ) -> Result<Applied, Refused> {
        let now = self.store.now();
        let mut rec = validate(req, &who.email, now, self.horizon)
            .map_err(|r| Refused::new(StatusCode::BAD_REQUEST, r.bucket, r.message))?;
        rec.source = source;
        rec.origin = origin.to_string();
        self.may_act(who, &rec.account_id)
            .map_err(|why| Refused::new(StatusCode::FORBIDDEN, "forbidden", why))?;
        self.alert_known(&rec)?;
        // A replay costs no token (checked again under the lock, which decides).
        let replayed = |prev: Option<&AlertActions>| prev.is_some_and(|p| p.has_origin(origin));
        if replayed(self.store.get(&rec.alert_id).as_ref()) {
            return Err(replay_refused());
        }
        self.rate.take(&who.email, now).map_err(Refused::limited)?;
        let _guard = self.writing.lock().await;
        let prev = self.store.get(&rec.alert_id);
        if replayed(prev.as_ref()) {
            return Err(replay_refused());
        }
        let first = prev.is_none();
        rec.at_ms = AlertActions::time_after(prev.as_ref(), rec.at_ms);
        let v = AlertActions::with(prev, rec.clone());
        if !self.store.has_room_for(&v) {
            tracing::warn!("the actions store is full; refusing an action");
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_full",
                "too many actions are held; try again later or ask an administrator",
            ));
        }
        let state = v.state(now);
        if let Err(e) = self.store_durably(v).await {
            tracing::warn!(error = %e, "could not store an action");
            return Err(Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "could not store the action (Kafka did not acknowledge it); try again",
            ));
        }
        if first {
            let fired = self.fired_at(&rec.account_id, &rec.alert_id).or(shown_at);
            first_action(rec.action, source, fired, now);
        }
        Ok(Applied { record: rec, state })
    }
}

fn replay_refused() -> Refused {
    Refused::new(
        StatusCode::CONFLICT,
        "replayed",
        "this request was already used: the action it carries is recorded",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inbox::model::{
        AccountDetail, AccountSummary, ListQuery, Page, Role, TeamRow, ViewStatus,
    };
    use crate::inbox::pages::fixture::FixtureView;
    use crate::time::DAY;

    /// The fixture, still reading its topics.
    struct Loading(FixtureView);

    impl InboxView for Loading {
        fn list(&self, who: &Principal, q: &ListQuery) -> Page<AccountSummary> {
            self.0.list(who, q)
        }
        fn account(&self, account_id: &str) -> Option<AccountDetail> {
            self.0.account(account_id)
        }
        fn team(&self) -> Vec<TeamRow> {
            self.0.team()
        }
        fn status(&self) -> ViewStatus {
            ViewStatus {
                caught_up: false,
                ..self.0.status()
            }
        }
    }

    const NOW: Millis = 1_780_000_000_000;

    /// An applier over `view` whose Kafka producer points nowhere (nothing in these
    /// tests gets as far as storing), the first firing alert of `acme`, a team lead,
    /// and that lead's acknowledgement of the alert.
    fn setup(loading: bool) -> (Applier, Principal, NewAction) {
        let fixture = FixtureView::sample(NOW / DAY);
        let alert = fixture.account("acme").unwrap().summary.firing[0]
            .id
            .clone();
        let view: Arc<dyn InboxView> = if loading {
            Arc::new(Loading(fixture))
        } else {
            Arc::new(fixture)
        };
        let applier = Applier {
            store: Arc::new(Actions::new(10, Arc::new(|| NOW))),
            producer: rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .create_with_context(LogContext)
                .unwrap(),
            topic: "actions".into(),
            horizon: 90 * DAY,
            owners: None,
            view: Some(view),
            writing: tokio::sync::Mutex::new(()),
            rate: Default::default(),
        };
        let lead = Principal {
            email: "lee@example.com".into(),
            role: Role::Lead,
        };
        let req = NewAction {
            alert_id: alert,
            action: "acknowledge".into(),
            ..Default::default()
        };
        (applier, lead, req)
    }

    #[tokio::test]
    async fn a_view_still_loading_refuses_with_503_and_stores_nothing() {
        let (applier, lead, req) = setup(true);
        let r = applier
            .apply(&lead, &req, Source::Api, "", None)
            .await
            .unwrap_err();
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{r:?}");
        assert!(r.message.contains("still reading"), "{r:?}");
        assert!(applier.store.is_empty());
    }

    /// A request whose origin is recorded already (a Slack click or a link used
    /// again) is refused as replayed however often it comes, without costing its
    /// sender any of their rate.
    #[tokio::test]
    async fn a_replayed_request_is_refused_and_costs_no_rate() {
        let (applier, lead, req) = setup(false);
        let origin = "slack:1700000000.000100";
        let mut rec = validate(&req, &lead.email, NOW, 90 * DAY).unwrap();
        rec.origin = origin.into();
        applier.store.apply(AlertActions::with(None, rec)).unwrap();
        for _ in 0..2 * super::super::rate::BURST {
            let r = applier
                .apply(&lead, &req, Source::Slack, origin, None)
                .await
                .unwrap_err();
            assert_eq!(
                (r.status, r.bucket),
                (StatusCode::CONFLICT, "replayed"),
                "{r:?}"
            );
        }
        // The whole burst is still there.
        for _ in 0..super::super::rate::BURST {
            assert!(applier.rate.take(&lead.email, NOW).is_ok());
        }
    }
}
