//! Receivers that try to hurt the notifier: redirects, endless error answers with forged
//! log lines, receivers that never answer, and secret URLs in error messages.

mod common;

use std::time::{Duration, Instant};

use churnwatch::config::{Config, Severity};
use churnwatch::engine::Status;
use churnwatch::notify::deliver::{DeliveryError, Sender};
use churnwatch::notify::render::Notification;
use churnwatch::record::AlertRecord;
use common::http::http_server;

fn sender(toml: &str) -> Sender {
    Sender::new(
        &Config::from_toml_str(toml, std::iter::empty())
            .unwrap()
            .notify,
    )
    .unwrap()
}

fn hooks(urls: &[(&str, String)], extra: &str) -> String {
    let mut t = format!(
        "[notify]\nmax_attempts = 2\nretry_initial = \"10ms\"\ntimeout = \"20s\"\n{extra}\n"
    );
    for (name, url) in urls {
        t.push_str(&format!(
            "[[notify.receivers]]\nname = \"{name}\"\ntype = \"webhook\"\nurl = \"{url}\"\n"
        ));
    }
    t.push_str(&format!("[notify.route]\nreceiver = \"{}\"\n", urls[0].0));
    t
}

fn note(receiver: &str, owner: &str) -> Notification {
    Notification {
        receiver: receiver.into(),
        owner: owner.into(),
        owner_chat: None,
        alerts: vec![AlertRecord::sample(
            &format!("{owner}/inactive/2026-03-01"),
            Status::Firing,
            Severity::Warning,
        )],
        digest: false,
    }
}

#[test]
fn redirects_are_not_followed_and_error_answers_are_bounded_and_escaped() {
    let (http, rec) = http_server();
    let s = sender(&hooks(
        &[
            ("moved", format!("http://{http}/redirect")),
            ("huge", format!("http://{http}/huge")),
        ],
        "",
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt.block_on(s.deliver(&note("moved", "a"))).unwrap_err();
    assert!(
        matches!(&err, DeliveryError::Permanent(m) if m.starts_with("HTTP 302")),
        "{err}"
    );
    assert!(rec.reqs.lock().unwrap().iter().all(|r| r.path != "ok"));

    let started = Instant::now();
    let err = rt
        .block_on(s.deliver(&note("huge", "b")))
        .unwrap_err()
        .to_string();
    assert!(err.len() < 3000, "{} bytes of error", err.len());
    assert!(
        !err.contains('\n') && err.contains("line one\\nERROR forged"),
        "{err}"
    );
    // Reading 1 GiB on loopback would take seconds; the first 2 KiB take nothing.
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_receiver_that_never_answers_holds_up_no_one_past_the_deadline() {
    let (http, rec) = http_server();
    let s = sender(&hooks(
        &[
            ("stuck", format!("http://{http}/stall")),
            ("fine", format!("http://{http}/ok")),
        ],
        "delivery_deadline = \"2s\"",
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let notes = vec![
        note("stuck", "a"),
        note("stuck", "a2"),
        note("fine", "b"),
        note("fine", "c"),
    ];
    let started = Instant::now();
    let results = rt.block_on(s.deliver_all(&notes));
    let took = started.elapsed();
    assert_eq!(results[0], Err(DeliveryError::Deferred));
    assert_eq!(results[1], Err(DeliveryError::Deferred));
    assert!(results[2].is_ok() && results[3].is_ok(), "{results:?}");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(
        rec.reqs
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == "ok")
            .count(),
        2
    );
}

#[test]
fn errors_name_the_cause_and_never_the_secret_url() {
    // A port nothing listens on, behind a URL whose path is the secret.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::env::set_var(
        "CW_HOSTILE_SLACK_URL",
        format!("http://127.0.0.1:{port}/services/T000/B000/SECRETXYZ\n"),
    );
    let s = sender(
        "[notify]\nmax_attempts = 1\n[[notify.receivers]]\nname = \"team\"\ntype = \"slack\"\nurl_env = \"CW_HOSTILE_SLACK_URL\"\n[notify.route]\nreceiver = \"team\"\n",
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let err = rt
        .block_on(s.deliver(&note("team", "a")))
        .unwrap_err()
        .to_string();
    assert!(
        !err.contains("SECRETXYZ") && !err.contains("127.0.0.1"),
        "{err}"
    );
    assert!(
        err.contains("cannot connect") && err.to_lowercase().contains("refused"),
        "{err}"
    );
}

#[test]
fn weak_or_misplaced_secrets_are_refused_at_start() {
    std::env::set_var("CW_HOSTILE_SHORT_KEY", "short\n");
    std::env::set_var("CW_HOSTILE_PASS", "pw");
    for (toml, want) in [
        ("[notify]\n[[notify.receivers]]\nname = \"h\"\ntype = \"webhook\"\nurl = \"https://h.example/x\"\nhmac_key_env = \"CW_HOSTILE_SHORT_KEY\"\n[notify.route]\nreceiver = \"h\"\n", "at least 32"),
        ("[notify]\n[[notify.receivers]]\nname = \"m\"\ntype = \"email\"\nsmtp_host = \"mail.example\"\nsmtp_tls = \"none\"\nsmtp_username = \"u\"\nsmtp_password_env = \"CW_HOSTILE_PASS\"\nfrom = \"cw@example.com\"\n[notify.route]\nreceiver = \"m\"\n", "in clear"),
    ] {
        let cfg = Config::from_toml_str(toml, std::iter::empty()).unwrap();
        let err = Sender::new(&cfg.notify).err().expect("refused").to_string();
        assert!(err.contains(want), "{err}");
    }
    for (toml, want) in [
        ("[kafka.client]\n\"sasl.password\" = \"hunter2\"\n", "kafka.client_env"),
        ("[notify]\n[[notify.receivers]]\nname = \"s\"\ntype = \"slack\"\nurl = \"https://hooks.slack.com/services/T/B/X\"\n[notify.route]\nreceiver = \"s\"\n", "url_env"),
        ("[notify]\ncrm_url_template = \"javascript:alert(1)//{account_id}\"\n", "https"),
    ] {
        let err = Config::from_toml_str(toml, std::iter::empty()).unwrap_err().to_string();
        assert!(err.contains(want) && !err.contains("hunter2"), "{err}");
    }
}
