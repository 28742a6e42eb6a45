//! `churnwatch backtest`: scores the alerts `replay` would write for an event history
//! against the churns that really happened (docs/backtest.md), for one config or a
//! sweep of settings. The history is parsed once (`history`, on several threads with
//! `parse`) and the order its events apply in is worked out once (`order`); each run
//! replays it through the engine and is scored (`score`); `sweep` expands `--set`
//! flags and runs them on all cores; `feedback` scores what CSMs did about the alerts
//! (an export of the actions topic, or the topic itself through `actions_topic`)
//! beside the outcomes; `output`, `table` and `report` present the result.

pub mod actions_topic;
pub mod churns;
pub mod cli;
pub mod feedback;
pub mod history;
pub mod order;
pub mod outcomes;
pub mod output;
mod parse;
pub mod report;
pub mod score;
pub mod svg;
pub mod sweep;
pub mod table;

use crate::config::Config;
use crate::engine::{AlertKind, Status};

use churns::Churns;
use history::History;
use order::{Order, OrderKey};
use score::{Firing, Owners, RunScore, Window};
use sweep::RunSpec;

/// What every run of a backtest shares.
pub struct Inputs<'a> {
    pub history: &'a History,
    pub churns: &'a Churns,
    pub owners: &'a Owners,
    pub window: Window,
    /// The actions on alerts, when given (`--actions`, `--actions-topic`).
    pub feedback: Option<&'a feedback::Feedback>,
}

/// One scored run.
pub struct Run {
    pub spec: RunSpec,
    pub score: RunScore,
}

/// The kinds a config enables, in config order.
pub fn kinds_enabled(cfg: &Config) -> Vec<AlertKind> {
    let r = &cfg.rules;
    AlertKind::ALL
        .into_iter()
        .filter(|k| match k {
            AlertKind::NotActivated => {
                r.not_activated.enabled && !r.not_activated.deadlines.is_empty()
            }
            AlertKind::Inactive => r.inactive.enabled,
            AlertKind::ActivityDrop => r.activity_drop.enabled,
        })
        .collect()
}

/// The firing records of one run of the history with `cfg`, its events in `order`
/// (worked out for `cfg`'s `OrderKey`).
pub fn firings(h: &History, order: &Order, cfg: &Config) -> Vec<Firing> {
    firings_with_ids(h, order, cfg, false).0
}

/// [`firings`], and with `ids` each one's alert id (as `replay` writes it).
fn firings_with_ids(
    h: &History,
    order: &Order,
    cfg: &Config,
    ids: bool,
) -> (Vec<Firing>, Vec<String>) {
    let mut out = Vec::new();
    let mut alert_ids = Vec::new();
    h.run_ordered(order, cfg, |a| {
        if a.status == Status::Firing {
            let account = h
                .account_index(&a.account_id)
                .expect("alerts come from the history's accounts");
            out.push(Firing {
                account,
                kind: a.kind,
                t: a.event_time,
            });
            if ids {
                alert_ids.push(a.id());
            }
        }
    });
    (out, alert_ids)
}

/// Runs and scores one config, its events in `order`.
pub fn run_one(inputs: &Inputs<'_>, order: &Order, cfg: &Config) -> RunScore {
    let (f, ids) = firings_with_ids(inputs.history, order, cfg, inputs.feedback.is_some());
    let kinds = kinds_enabled(cfg);
    let mut s = score::score(&f, inputs.churns, &inputs.window, &kinds, inputs.owners);
    if let Some(fb) = inputs.feedback {
        let (verdicts, matched) = feedback::match_ids(ids, fb);
        s.feedback = Some(feedback::score(
            &f,
            &verdicts,
            matched,
            fb,
            inputs.churns,
            &inputs.window,
            &kinds,
        ));
    }
    s
}

/// Runs every spec over the same inputs on `threads` threads, in spec order. The order
/// the events apply in is worked out once per distinct `OrderKey` (once, unless the
/// sweep changes the allowed lateness or the account limit).
pub fn run_all(
    inputs: &Inputs<'_>,
    specs: Vec<RunSpec>,
    threads: usize,
    on_done: impl Fn() + Sync,
) -> Vec<Run> {
    let mut orders: Vec<Order> = Vec::new();
    for s in &specs {
        let key = OrderKey::of(&s.config);
        if !orders.iter().any(|o| o.key == key) {
            orders.push(Order::new(inputs.history, key));
        }
    }
    let order_of = |cfg: &Config| {
        let key = OrderKey::of(cfg);
        orders
            .iter()
            .find(|o| o.key == key)
            .expect("worked out above")
    };
    let scores = sweep::run_parallel(
        &specs,
        threads,
        |s| run_one(inputs, order_of(&s.config), &s.config),
        on_done,
    );
    specs
        .into_iter()
        .zip(scores)
        .map(|(spec, score)| Run { spec, score })
        .collect()
}
