//! The notifier honours actions on alerts (issue 16), against a real broker and a real
//! webhook receiver on loopback:
//!
//! - an acknowledgement posted to one process (`serve`, the inbox) applies on another
//!   (`notify`): no more repeats of that alert, its resolution still goes out;
//! - a snooze quiets its account and kind (a new episode too) but not another kind,
//!   and ends on time (the notifier in this process with an injected clock, following
//!   the real actions topic);
//! - `kill -9` of the process that took the action and of the notifier loses nothing:
//!   the restarted notifier still honours it.
//!
//! Absence is asserted by awaiting a later marker message (another alert in the same
//! batch, or its repeat), never by sleeping.

mod common;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::actions::{token_entry, write_config, Setup};
use common::broker::Broker;
use common::http::{http_server, Recorder};
use common::proc::Proc;
use common::wait_for;
use serde_json::{json, Value};

const ANA: &str = "ana@example.com";
const ANA_TOKEN: &str = "cw_ana_0123456789abcdef0123456789abcdef";
const WAIT: Duration = Duration::from_secs(90);

/// A request with a JSON body and Ana's bearer token: (status, body as JSON).
fn call(addr: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    common::actions::call(addr, method, path, ANA_TOKEN, body)
}

/// The (id, status) pairs of each webhook message received, in arrival order.
fn messages(rec: &Recorder) -> Vec<Vec<(String, String)>> {
    rec.reqs
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.path == "hook")
        .map(|r| common::webhook_ids(&r.body))
        .collect()
}

fn has(msg: &[(String, String)], id: &str, status: &str) -> bool {
    msg.iter().any(|(i, s)| i == id && s == status)
}

/// Messages holding (id, status).
fn count(rec: &Recorder, id: &str, status: &str) -> usize {
    messages(rec).iter().filter(|m| has(m, id, status)).count()
}

/// One test's topics, files and receiving server.
struct World {
    broker: &'static Broker,
    dir: tempfile::TempDir,
    name: String,
    alerts: String,
    config: std::path::PathBuf,
    rec: Arc<Recorder>,
}

impl World {
    /// Ana owns acme and globex; the notifier waits `wait` (group_wait and
    /// group_interval) and repeats every `repeat`.
    fn new(tag: &str, wait: &str, repeat: &str) -> World {
        let Setup {
            broker,
            name,
            dir,
            alerts,
        } = Setup::new(&format!("actnotify-{tag}"));
        broker.create_topic(&format!("{name}-group-changelog"), 1);
        let (http, rec) = http_server();
        let config = write_config(
            dir.path(),
            &format!("account_id,owner_email\nacme,{ANA}\nglobex,{ANA}\n"),
            |accounts| {
                format!(
                    "[kafka]\nbrokers = \"{}\"\nalerts_topic = \"{alerts}\"\ngroup_id = \"{name}-group\"\n\
                     [kafka.client]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n\
                     [notify]\ngroup_id = \"{name}-notifier\"\naccounts_file = \"{}\"\n\
                     group_wait = \"{wait}\"\ngroup_interval = \"{wait}\"\nrepeat_interval = \"{repeat}\"\n\
                     [[notify.receivers]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{http}/hook\"\n\
                     [notify.route]\nreceiver = \"hook\"\n\
                     {}",
                    broker.bootstrap,
                    accounts.display(),
                    token_entry(ANA_TOKEN, ANA, "csm"),
                )
            },
        );
        World {
            broker,
            dir,
            name,
            alerts,
            config,
            rec,
        }
    }

    /// Produces alert records (`id`, `status`) to the alerts topic, in order.
    fn produce(&self, records: &[(&str, &str)]) {
        let text: String = records
            .iter()
            .map(|(id, status)| {
                common::alert_line(id, status, "warning", "2026-03-15T10:00:00Z", None)
            })
            .collect();
        let f = self.dir.path().join(format!(
            "alerts-{}.ndjson",
            self.rec.reqs.lock().unwrap().len()
        ));
        std::fs::write(&f, text).unwrap();
        self.broker.produce_ok(&f, &["--topic", &self.alerts]);
    }

    /// `churnwatch <cmd>` on this world's config, logging to `<label>.log`.
    fn spawn(&self, cmd: &str, label: &str) -> Proc {
        Proc::spawn(
            &[cmd, "--config", self.config.to_str().unwrap()],
            self.dir.path().join(format!("{label}.log")),
            |_| {},
        )
    }

    /// Waits for `serve` at `addr` to be ready and to hold `alert` in its view.
    fn await_view(&self, addr: &str, account: &str, alert: &str) {
        wait_for("the inbox view to hold the alert", WAIT, || {
            let (code, v) = call(addr, "GET", &format!("/api/v1/accounts/{account}"), "");
            code == 200
                && v["firing"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|a| a["id"] == alert))
                && common::http::get(addr, "/readyz").0 == 200
        });
    }

    fn config(&self) -> churnwatch::config::Config {
        churnwatch::config::Config::from_toml_str(
            &std::fs::read_to_string(&self.config).unwrap(),
            [],
        )
        .unwrap()
    }
}

/// Waits until `want` messages hold (id, status).
fn await_count(rec: &Recorder, id: &str, status: &str, want: usize) {
    wait_for(
        &format!("{want} message(s) with {id} {status}"),
        WAIT,
        || count(rec, id, status) >= want,
    );
}

#[test]
fn an_acknowledgement_taken_on_serve_stops_the_notifiers_repeats_but_not_the_resolution() {
    let w = World::new("ack", "200ms", "1s");
    let (acme, globex) = ("acme/inactive/2026-03-01", "globex/inactive/2026-03-01");
    w.produce(&[(acme, "firing"), (globex, "firing")]);
    let notifier = w.spawn("notify", "notify");
    let serve = w.spawn("serve", "serve");
    let (n_addr, s_addr) = (notifier.addr_within(WAIT), serve.addr_within(WAIT));
    // Before any action, both alerts repeat (in one message: one owner).
    await_count(&w.rec, acme, "firing", 2);
    w.await_view(&s_addr, "acme", acme);
    let ack = json!({"alert_id": acme, "action": "acknowledge"}).to_string();
    let (code, body) = call(&s_addr, "POST", "/api/v1/actions", &ack);
    assert_eq!(code, 201, "{body}");
    // The notifier process follows the topic: it lists the action...
    wait_for("the notifier to know the acknowledgement", WAIT, || {
        call(&n_addr, "GET", "/api/v1/actions?account_id=acme", "").1["states"][acme]["state"]
            == "acknowledged"
    });
    // ...and honours it: globex goes on repeating, acme does not. A message already
    // on its way when the store applied the action may still carry acme; none after.
    let before = messages(&w.rec).len();
    let globex_then = count(&w.rec, globex, "firing");
    await_count(&w.rec, globex, "firing", globex_then + 3);
    let after = messages(&w.rec);
    let late: Vec<_> = after[before..]
        .iter()
        .skip(1)
        .filter(|m| has(m, acme, "firing"))
        .collect();
    assert!(
        late.is_empty(),
        "acme repeated after its acknowledgement: {after:?}"
    );
    assert!(
        after[before + 1..].iter().any(|m| has(m, globex, "firing")),
        "the marker repeats: {after:?}"
    );
    // The alert resolves: its resolution goes out.
    w.produce(&[(acme, "resolved")]);
    await_count(&w.rec, acme, "resolved", 1);
    let (_, metrics) = common::http::get(&n_addr, "/metrics");
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("churnwatch_notifications") && l.contains("acme")),
        "metrics never name an account"
    );
    drop((notifier, serve));
}

/// The notifier in this process, following the real actions topic, with a clock the
/// test sets.
struct InProcess {
    stop: Arc<AtomicBool>,
    actions: Arc<churnwatch::actions::Actions>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    fn start(cfg: churnwatch::config::Config, clock: Arc<AtomicI64>) -> InProcess {
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(churnwatch::server::Health::default());
        let (actions, _) = churnwatch::actions::start(&cfg, stop.clone(), health.clone(), None)
            .expect("the actions follower");
        let (s2, a2) = (stop.clone(), actions.clone());
        let thread = std::thread::spawn(move || {
            churnwatch::notify::kafka::run_honouring(
                Arc::new(cfg),
                s2,
                Arc::new(churnwatch::notify::silence::Silences::default()),
                Some(a2),
                Arc::new(move || clock.load(Ordering::SeqCst)),
                health,
                Arc::default(),
            )
        });
        InProcess {
            stop,
            actions,
            thread: Some(thread),
        }
    }

    fn assert_running(&self) {
        assert!(
            !self.thread.as_ref().unwrap().is_finished(),
            "the notifier stopped"
        );
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap().unwrap();
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Writes one action to the actions topic as the API would (its whole value).
fn write_action(w: &World, alert: &str, kind: &str, at: i64, until: Option<i64>) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let record = churnwatch::actions::ActionRecord {
        alert_id: alert.into(),
        account_id: alert.split('/').next().unwrap().into(),
        action: churnwatch::actions::ActionKind::parse(kind).unwrap(),
        by: ANA.into(),
        at_ms: at,
        reason: "renewal call on Friday".into(),
        until_ms: until,
        source: Default::default(),
        origin: String::new(),
    };
    let value = churnwatch::actions::AlertActions::with(None, record);
    let p: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &w.broker.bootstrap)
        .create()
        .unwrap();
    let body = serde_json::to_vec(&value).unwrap();
    let topic = format!("{}-notifier-actions", w.name);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(p.send(
            FutureRecord::to(&topic).key(alert).payload(&body),
            Duration::from_secs(30),
        ))
        .unwrap();
}

#[test]
fn a_snooze_quiets_its_account_and_kind_and_ends_on_the_injected_clock() {
    const HOUR: i64 = 3_600_000;
    // The clock only moves when the test moves it: batches leave at once.
    let w = World::new("snooze", "0s", "1h");
    let t0 = churnwatch::time::wall_clock_ms();
    let until = t0 + 10 * HOUR;
    let snoozed = "acme/inactive/2026-03-01";
    // The topic must exist before the action is written: the follower creates it.
    let clock = Arc::new(AtomicI64::new(t0));
    let notifier = InProcess::start(w.config(), clock.clone());
    write_action(&w, snoozed, "snooze", t0, Some(until));
    // Another episode of the snoozed account and kind, another kind of that account,
    // and another account, all Ana's: one message, without the quiet ones.
    let episode = "acme/inactive/2026-04-01";
    let (other_kind, other_account) = (
        "acme/activity_drop/2026-04-01",
        "globex/inactive/2026-04-01",
    );
    // Produced once the follower applied the action, so the grouper sees it.
    wait_for("the follower to apply the snooze", WAIT, || {
        notifier.actions.get(snoozed).is_some()
    });
    w.produce(&[
        (snoozed, "firing"),
        (episode, "firing"),
        (other_kind, "firing"),
        (other_account, "firing"),
    ]);
    await_count(&w.rec, other_account, "firing", 1);
    await_count(&w.rec, other_kind, "firing", 1);
    notifier.assert_running();
    let first = messages(&w.rec);
    for quiet in [snoozed, episode] {
        assert_eq!(
            count(&w.rec, quiet, "firing"),
            0,
            "{quiet} is snoozed: {first:?}"
        );
    }
    // Hours pass, still within the snooze: the others repeat, the quiet ones do not.
    clock.store(t0 + 2 * HOUR, Ordering::SeqCst);
    await_count(&w.rec, other_account, "firing", 2);
    clock.store(until - 1, Ordering::SeqCst);
    await_count(&w.rec, other_account, "firing", 3);
    assert_eq!(count(&w.rec, snoozed, "firing"), 0);
    assert_eq!(count(&w.rec, episode, "firing"), 0);
    // The snooze ends: both quiet alerts, never told, go out at once.
    clock.store(until, Ordering::SeqCst);
    await_count(&w.rec, snoozed, "firing", 1);
    await_count(&w.rec, episode, "firing", 1);
    let last = messages(&w.rec);
    let m = last.iter().find(|m| has(m, snoozed, "firing")).unwrap();
    assert!(has(m, episode, "firing"), "{last:?}");
    notifier.stop();
}

#[test]
fn kill_9_of_the_acting_process_and_of_the_notifier_loses_no_action() {
    let w = World::new("kill", "200ms", "1s");
    let (acme, globex) = ("acme/inactive/2026-03-01", "globex/inactive/2026-03-01");
    w.produce(&[(acme, "firing"), (globex, "firing")]);
    let notifier = w.spawn("notify", "notify-1");
    let serve = w.spawn("serve", "serve");
    let s_addr = serve.addr_within(WAIT);
    await_count(&w.rec, acme, "firing", 1);
    w.await_view(&s_addr, "acme", acme);
    let until =
        churnwatch::time::format_rfc3339(churnwatch::time::wall_clock_ms() + 7 * 86_400_000);
    let snooze = json!({"alert_id": acme, "action": "snooze", "reason": "renewal call on Friday", "until": until})
        .to_string();
    let (code, body) = call(&s_addr, "POST", "/api/v1/actions", &snooze);
    assert_eq!(code, 201, "{body}");
    // 201 means the broker has it: both sides die at once.
    serve.kill9();
    notifier.kill9();
    let notifier = w.spawn("notify", "notify-2");
    let n_addr = notifier.addr_within(WAIT);
    // A new episode of the snoozed account and kind, and a marker of another kind of
    // the same account: they travel in one message, so the marker's message shows
    // whether the new episode was honoured as quiet.
    let episode = "acme/inactive/2026-04-01";
    let marker = "acme/activity_drop/2026-04-01";
    w.produce(&[(episode, "firing"), (marker, "firing")]);
    await_count(&w.rec, marker, "firing", 2);
    assert_eq!(
        count(&w.rec, episode, "firing"),
        0,
        "the snooze was lost: {:?}",
        messages(&w.rec)
    );
    // The restarted notifier answers for the action it read back.
    let l = call(&n_addr, "GET", "/api/v1/actions?account_id=acme", "").1;
    assert_eq!(l["states"][acme]["state"], "snoozed", "{l}");
    let (_, m) = common::http::get(&n_addr, "/metrics");
    assert!(
        m.lines()
            .any(|l| l.starts_with("churnwatch_notifications_total")
                && l.contains("outcome=\"withheld\"")),
        "{m}"
    );
    let (_, health) = common::http::get(&n_addr, "/healthz");
    assert!(health.contains("actions follower"), "{health}");
    drop(notifier);
}
