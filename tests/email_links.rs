//! One-click links in emails, end to end over real servers on loopback: the notifier
//! mails an owner (a real SMTP server) an alert with Acknowledge and Snooze 7 days
//! links; a `notify` process following the actions topic on a real broker serves
//! them. GET shows a confirmation and changes nothing; the POST of its form applies
//! the action as the owner, once; a reused, tampered, expired or foreign link is
//! refused and writes nothing. In-process: the first action on an alert the inbox
//! view knows is timed from the alert (the histogram), a later one is not.

mod common;

use std::path::Path;
use std::sync::Arc;

use churnwatch::actions::email_link::{Claims, LinkKey};
use churnwatch::actions::ActionKind;
use churnwatch::time::{wall_clock_ms, DAY};
use common::actions::{notifier, token_entry, write_config, written, Setup};
use common::broker::Broker;
use common::churnwatch_env;
use common::http::request;
use common::smtp::Smtp;
use serde_json::{json, Value};

const SECRET: &str = "email-link-key-of-the-test-0123456789abcdef";
const LEE_TOKEN: &str = "cw_lee_0123456789abcdef0123456789abcdef";
const ACME_ALERT: &str = "acme/inactive/2026-03-01";

fn config(dir: &Path, name: &str, smtp_port: u16) -> std::path::PathBuf {
    write_config(
        dir,
        "account_id,owner_email\nacme,ana@example.com\nglobex,ben@example.com\n",
        |accounts| {
            format!(
                "{}\
                 [notify]\ngroup_id = \"{name}-notifier\"\naccounts_file = \"{}\"\n\
                 inbox_url = \"https://cw.example/inbox\"\n\
                 [notify.email_links]\nenabled = true\nsecret_env = \"CW_TEST_LINK_KEY\"\n\
                 [[notify.receivers]]\nname = \"mail\"\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\n\
                 smtp_port = {smtp_port}\nsmtp_tls = \"none\"\nfrom = \"churnwatch@example.com\"\n\
                 [[notify.receivers]]\nname = \"team\"\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\n\
                 smtp_port = {smtp_port}\nsmtp_tls = \"none\"\nfrom = \"churnwatch@example.com\"\n\
                 to = \"cs-team@example.com\"\n\
                 [notify.route]\nreceiver = \"mail\"\n\
                 [[notify.route.routes]]\nmatch = {{ owner = \"*\" }}\nreceiver = \"team\"\ncontinue = true\n\
                 [[notify.route.routes]]\nmatch = {{ owner = \"*\" }}\nreceiver = \"mail\"\n",
                token_entry(LEE_TOKEN, "lee@example.com", "lead"),
                accounts.display(),
            )
        },
    )
}

/// Quoted-printable as far as a mail of ASCII text needs: soft breaks and `=XX`.
fn unquote(s: &str) -> String {
    let s = s.replace("=\r\n", "").replace("=\n", "");
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'='
            && i + 2 < b.len()
            && b[i + 1].is_ascii_hexdigit()
            && b[i + 2].is_ascii_hexdigit()
        {
            out.push(
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap(),
            );
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

/// The path and query of the link labelled `label` in the mail's text part.
fn link(mail: &str, label: &str) -> String {
    let text = unquote(mail);
    let url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{label}: ")))
        .unwrap_or_else(|| panic!("no {label} link in the mail:\n{text}"))
        .trim()
        .to_string();
    url.strip_prefix("https://cw.example")
        .unwrap_or_else(|| panic!("{url} is not under the inbox"))
        .to_string()
}

/// A form POST of `t=token` to the links' path: (status, headers and body).
fn post_token(addr: &str, token: &str) -> (u16, String) {
    let body = format!(
        "t={}",
        percent_encoding::utf8_percent_encode(token, percent_encoding::NON_ALPHANUMERIC)
    );
    request(
        addr,
        "POST",
        "/inbox/actions/email",
        "application/x-www-form-urlencoded",
        &[],
        &body,
    )
}

fn token_of(path: &str) -> String {
    let q = path.split_once("?t=").unwrap().1;
    percent_encoding::percent_decode_str(q)
        .decode_utf8()
        .unwrap()
        .into_owned()
}

fn listed(addr: &str, account: &str) -> Value {
    common::actions::listed(addr, account, LEE_TOKEN)
}

#[test]
fn a_mailed_link_works_once_and_tampered_expired_or_foreign_links_do_nothing() {
    let Setup {
        broker,
        name,
        dir,
        alerts: alerts_topic,
    } = Setup::new("mail");
    let smtp = Smtp::start();
    let cfg = config(dir.path(), &name, smtp.port);

    // The notifier mails Ana her alert, with links.
    let alerts = dir.path().join("alerts.ndjson");
    let account = json!({"name": "Acme", "owner_email": "ana@example.com"});
    std::fs::write(
        &alerts,
        common::alert_line(
            ACME_ALERT,
            "firing",
            "warning",
            "2026-03-15T10:00:00Z",
            Some(account),
        ),
    )
    .unwrap();
    churnwatch_env(
        &[
            "notify",
            "--config",
            cfg.to_str().unwrap(),
            "--input",
            alerts.to_str().unwrap(),
        ],
        [("CW_TEST_LINK_KEY", SECRET)],
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 2);
    let to = |who: &str| {
        mails
            .iter()
            .find(|m| m.lines().any(|l| l.starts_with("To:") && l.contains(who)))
            .unwrap_or_else(|| panic!("no mail to {who}"))
    };
    // The copy to a shared mailbox (a fixed `to`) carries no links: they act as Ana.
    assert!(to("cs-team@example.com").contains(ACME_ALERT));
    assert!(!unquote(to("cs-team@example.com")).contains("/actions/email"));
    let mail = to("ana@example.com");
    let ack = link(mail, "Acknowledge");
    let snooze = link(mail, "Snooze 7 days");
    assert!(ack.starts_with("/inbox/actions/email?t=v1."), "{ack}");
    assert_ne!(token_of(&ack), token_of(&snooze));
    assert!(
        unquote(mail).contains(">Snooze 7 days</a>"),
        "the HTML part links too"
    );

    // A notifier following the actions topic serves the links.
    let log = dir.path().join("notify.log");
    let server = notifier(
        broker,
        &cfg,
        &alerts_topic,
        log,
        &[("CW_TEST_LINK_KEY", SECRET)],
    );
    let addr = server.addr();
    let topic = format!("{name}-notifier-actions");

    // GET (what a mail scanner does): a confirmation page, nothing recorded.
    let (code, page) = common::http::get(&addr, &ack);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("Acknowledge the alert acme/inactive/2026-03-01"),
        "{page}"
    );
    assert!(
        page.contains("<form method=\"post\" action=\"email\">"),
        "{page}"
    );
    assert_eq!(written(broker, &topic), 0, "a GET changes nothing");

    // The form's POST acts as Ana; the same link again is refused.
    let (code, resp) = post_token(&addr, &token_of(&ack));
    assert_eq!(code, 200, "{resp}");
    assert!(resp
        .to_ascii_lowercase()
        .contains("referrer-policy: no-referrer"));
    assert!(resp
        .to_ascii_lowercase()
        .contains("cache-control: no-store"));
    let l = listed(&addr, "acme");
    assert_eq!(l["actions"][0]["action"], "acknowledge", "{l}");
    assert_eq!(l["actions"][0]["by"], "ana@example.com");
    assert_eq!(l["actions"][0]["source"], "email");
    assert_eq!(written(broker, &topic), 1);
    let (code, resp) = post_token(&addr, &token_of(&ack));
    assert_eq!(code, 409, "{resp}");
    let (code, page) = common::http::get(&addr, &ack);
    assert_eq!((code, page.contains("already used")), (409, true), "{page}");
    assert_eq!(written(broker, &topic), 1);

    // Refused, nothing recorded: altered, expired, not ours, for another owner's
    // account, not a token at all.
    let key = LinkKey::new(SECRET.as_bytes()).unwrap();
    let now = wall_clock_ms();
    let claims = |a: &str, o: &str, e: i64, n: &str| Claims {
        a: a.into(),
        k: ActionKind::Acknowledge,
        o: o.into(),
        e,
        n: n.repeat(32),
    };
    let t = token_of(&snooze);
    let (head, tag) = t.rsplit_once('.').unwrap();
    let altered = format!(
        "{}{}.{tag}",
        &head[..head.len() - 1],
        if head.ends_with('A') { "B" } else { "A" }
    );
    let other_key = LinkKey::new(b"another key of at least thirty-two bytes").unwrap();
    let cases = [
        ("altered", altered, 403),
        (
            "expired",
            key.sign(&claims(ACME_ALERT, "ana@example.com", now - 1000, "1")),
            410,
        ),
        (
            "another key",
            other_key.sign(&claims(ACME_ALERT, "ana@example.com", now + DAY, "2")),
            403,
        ),
        (
            "another owner's account",
            key.sign(&claims(
                "globex/inactive/2026-03-01",
                "ana@example.com",
                now + DAY,
                "3",
            )),
            403,
        ),
        ("not a token", "garbage".to_string(), 400),
    ];
    for (what, token, want) in &cases {
        let (code, resp) = post_token(&addr, token);
        assert_eq!(code, *want, "{what}: {resp}");
        assert!(resp.contains("Not done"), "{what}: {resp}");
    }
    let (code, _) = common::http::get(&addr, &format!("/inbox/actions/email?t={}", cases[1].1));
    assert_eq!(code, 410);
    assert_eq!(written(broker, &topic), 1, "refusals wrote nothing");

    // A hostile alert id in a (validly signed) link is shown as text.
    let hostile = key.sign(&claims(
        "<script>x</script>/inactive/1",
        "ana@example.com",
        now + DAY,
        "4",
    ));
    let (code, page) = common::http::get(&addr, &format!("/inbox/actions/email?t={hostile}"));
    assert_eq!(code, 200);
    assert!(
        !page.contains("<script>") && page.contains("&lt;script&gt;"),
        "{page}"
    );

    // The snooze link still works: a week, with its fixed reason.
    let (code, resp) = post_token(&addr, &token_of(&snooze));
    assert_eq!(code, 200, "{resp}");
    let l = listed(&addr, "acme");
    assert_eq!(l["actions"][0]["action"], "snooze", "{l}");
    assert_eq!(
        l["actions"][0]["reason"],
        "snoozed for 7 days from an email link"
    );
    assert_eq!(l["states"][ACME_ALERT]["state"], "snoozed");
    assert_eq!(written(broker, &topic), 2);
    let (_, m) = common::http::get(&addr, "/metrics");
    assert!(
        m.contains("churnwatch_action_requests_total{outcome=\"accepted\",source=\"email\"} 2"),
        "{m}"
    );
    assert!(m.contains("churnwatch_action_requests_total{outcome=\"expired\",source=\"email\"} 1"));
    assert!(
        m.contains("churnwatch_action_requests_total{outcome=\"bad_token\",source=\"email\"} 2")
    );
    assert!(!std::fs::read_to_string(&server.log)
        .unwrap()
        .contains(SECRET));
    drop(server);
}

/// Through the links' router in-process, with the inbox fixture as the view: the first
/// action on an alert is observed in the histogram as the time since the alert fired;
/// a second one is not.
#[test]
fn the_first_action_is_timed_from_the_alert() {
    let broker = Broker::shared();
    let topic = format!("first-{}-actions", std::process::id());
    broker.create_topic(&topic, 1);
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(first_action_timed(broker, topic));
}

async fn first_action_timed(broker: &Broker, topic: String) {
    use churnwatch::actions::apply::Applier;
    use churnwatch::actions::email_link::{self, EmailLinks};
    use churnwatch::actions::Actions;
    use churnwatch::inbox::model::{InboxView, Role};
    use churnwatch::inbox::pages::fixture::FixtureView;

    let view = FixtureView::sample(wall_clock_ms().div_euclid(DAY));
    let firing = view.account("acme").unwrap().summary.firing[0].clone();
    let owner = view
        .account("acme")
        .unwrap()
        .summary
        .owner_email
        .clone()
        .unwrap();
    let fired = churnwatch::time::parse_rfc3339(&firing.since).unwrap();
    let producer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create_with_context(churnwatch::kafka::client::LogContext)
        .unwrap();
    let applier = Arc::new(Applier {
        store: Arc::new(Actions::new(10, Arc::new(wall_clock_ms))),
        producer,
        topic,
        horizon: 90 * DAY,
        owners: None,
        view: Some(Arc::new(view)),
        writing: tokio::sync::Mutex::new(()),
        rate: Default::default(),
    });
    let key = LinkKey::new(SECRET.as_bytes()).unwrap();
    let app = email_link::router(Arc::new(EmailLinks {
        applier,
        key: key.clone(),
        role_of: Arc::new(|_: &str| Role::Csm),
        ttl: DAY,
    }));
    let addr = churnwatch::server::serve_with("127.0.0.1:0", app, None)
        .await
        .unwrap()
        .to_string();
    let histogram = || {
        let m = churnwatch::metrics::METRICS.render();
        let get = |name: &str| {
            m.lines()
                .find(|l| {
                    l.starts_with(name) && l.contains("action=\"acknowledge\",source=\"email\"")
                })
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse::<f64>().ok())
        };
        (
            get("churnwatch_actions_first_action_seconds_count").unwrap_or(0.0),
            get("churnwatch_actions_first_action_seconds_sum").unwrap_or(0.0),
        )
    };
    for nonce in ["a", "b"] {
        let t = key.sign(&Claims {
            a: firing.id.clone(),
            k: ActionKind::Acknowledge,
            o: owner.clone(),
            e: wall_clock_ms() + DAY,
            n: nonce.repeat(32),
        });
        let a = addr.clone();
        let (code, resp) = tokio::task::spawn_blocking(move || post_token(&a, &t))
            .await
            .unwrap();
        assert_eq!(code, 200, "{resp}");
    }
    let (count, sum) = histogram();
    assert_eq!(count, 1.0, "observed once, at the first action");
    let want = (wall_clock_ms() - fired) as f64 / 1000.0;
    assert!((sum - want).abs() < 60.0, "{sum} vs {want}");
}
