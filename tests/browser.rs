//! The backtest's HTML report in a real headless browser (Debian's `chromium`, driven
//! over WebDriver by `chromedriver`; `scripts/setup.sh` installs both): the page loads
//! with no console errors and nothing fetched from a network, the charts are there,
//! and a screenshot goes to `target/test-artifacts/`.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use common::{churnwatch, repo};

/// `chromedriver` on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (run scripts/setup.sh: apt chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromedriver's log endpoint (`POST /session/{id}/se/log`): the browser console.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"type": "browser"}).to_string()),
        )
    }
}

async fn connect(d: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": "/usr/bin/chromium",
               "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                        "--window-size=1200,2600"]}),
    );
    caps.insert("goog:loggingPrefs".into(), json!({"browser": "ALL"}));
    ClientBuilder::native()
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", d.port))
        .await
        .expect("WebDriver session")
}

/// Console messages at level SEVERE (errors) since the last call.
async fn console_errors(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.expect("browser log");
    log.as_array()
        .expect("log entries")
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_loads_cleanly_with_its_charts() {
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson.gz");
    let accounts = dir.path().join("accounts.csv");
    let report = artifacts.join("backtest-report.html");
    churnwatch(&[
        "gen",
        "--accounts=300",
        "--days=240",
        "--seed=7",
        "--output",
        events.to_str().unwrap(),
        "--accounts-file",
        accounts.to_str().unwrap(),
    ]);
    churnwatch(&[
        "backtest",
        "-q",
        "--input",
        events.to_str().unwrap(),
        "--accounts",
        accounts.to_str().unwrap(),
        "--set",
        "rules.inactive.after_days=7,14,21",
        "--set",
        "rules.activity_drop.alpha=0.0001,0.001",
        "--report",
        report.to_str().unwrap(),
    ]);
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://") && !html.contains("<script"));

    let driver = Driver::start();
    let c = connect(&driver).await;

    // The console check can fail: a page that logs an error is caught.
    let bad = dir.path().join("bad.html");
    std::fs::write(
        &bad,
        "<!DOCTYPE html><script>console.error('planted')</script>",
    )
    .unwrap();
    c.goto(&file_url(&bad)).await.unwrap();
    let planted = console_errors(&c).await;
    assert!(planted.iter().any(|m| m.contains("planted")), "{planted:?}");

    c.goto(&file_url(&report)).await.unwrap();
    assert_eq!(c.title().await.unwrap(), "churnwatch backtest");
    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let fetched: Value = c
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(fetched, json!([]), "the report fetched something");

    let charts = c.find_all(Locator::Css("svg.chart")).await.unwrap();
    assert_eq!(
        charts.len(),
        4,
        "trade-off, per-rule bars, lead times, weekly load"
    );
    let count = |sel: &'static str| {
        let c = c.clone();
        async move { c.find_all(Locator::Css(sel)).await.unwrap().len() }
    };
    // 6 runs: a precision and (with eligible churns) a recall point each.
    assert_eq!(count("svg.chart circle.point").await, 12);
    // The current config (after_days 14, alpha 0.001): its precision and recall points.
    assert_eq!(count("svg.chart circle.current").await, 2);
    assert!(count("svg.chart rect.bar").await >= 4);
    assert!(count("svg.chart polyline.series").await >= 1);
    assert!(
        count("svg.chart circle.lead").await >= 1,
        "no caught churn drawn"
    );
    // The charts are laid out (not zero-sized).
    let size: Value = c
        .execute(
            "const r = document.querySelector('svg.chart').getBoundingClientRect(); return [r.width, r.height]",
            vec![],
        )
        .await
        .unwrap();
    assert!(size[0].as_f64().unwrap() > 300.0 && size[1].as_f64().unwrap() > 100.0);

    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    std::fs::write(artifacts.join("backtest-report.png"), png).unwrap();
    c.close().await.unwrap();
}

/// A DevTools command through chromedriver (`POST /session/{id}/goog/cdp/execute`).
#[derive(Debug)]
struct Cdp(&'static str, Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({"cmd": self.0, "params": self.1}).to_string()),
        )
    }
}

/// Signs the browser in as `email` the way the authenticating proxy would: every
/// request from now on carries the proxy's header.
async fn sign_in_as(c: &Client, email: &str) {
    c.issue_cmd(Cdp("Network.enable", json!({})))
        .await
        .expect("Network.enable");
    c.issue_cmd(Cdp(
        "Network.setExtraHTTPHeaders",
        json!({"headers": {"X-Forwarded-Email": email}}),
    ))
    .await
    .expect("Network.setExtraHTTPHeaders");
}

/// The inbox in a real browser: a CSM signed in through the proxy header (the server
/// trusts 127.0.0.1 as its proxy) sees only their accounts, in priority order, with
/// sparklines; their account page has the activity chart and the evidence; no console
/// errors, nothing fetched from elsewhere; another CSM gets 403 on that account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_shows_a_csm_their_accounts_and_nobody_elses() {
    use churnwatch::inbox::pages::fixture::{FixtureView, ANA, BEN};
    use std::sync::Arc;

    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let today = churnwatch::time::wall_clock_ms().div_euclid(churnwatch::time::DAY);
    let auth = churnwatch::config::AuthConfig {
        trusted_proxies: vec!["127.0.0.1".into()],
        leads: vec!["lee@example.com".into()],
        ..Default::default()
    };
    let auth = Arc::new(churnwatch::server::auth::Authenticator::new(&auth, &[], None).unwrap());
    let pages = churnwatch::inbox::pages::router(Arc::new(FixtureView::sample(today)));
    let app = churnwatch::server::auth::with_auth(pages, auth);
    let addr = churnwatch::server::serve("127.0.0.1:0", app).await.unwrap();
    let base = format!("http://127.0.0.1:{}", addr.port());

    let driver = Driver::start();
    let c = connect(&driver).await;
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_as(&c, ANA).await;
    c.goto(&format!("{base}/inbox")).await.unwrap();
    assert_eq!(c.title().await.unwrap(), "My accounts at risk - churnwatch");
    let rows: Value = c
        .execute(
            "return [...document.querySelectorAll('tr.account')].map(r => r.dataset.href)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        json!([
            "/inbox/accounts/acme",
            "/inbox/accounts/umbrella",
            "/inbox/accounts/initech"
        ]),
        "Ana's accounts at risk, highest priority first, nobody else's"
    );
    let sparks = c
        .find_all(Locator::Css("tr.account svg.spark polyline"))
        .await
        .unwrap();
    assert_eq!(sparks.len(), 3);
    let who = c
        .find(Locator::Css("header .who"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(who.contains(ANA), "{who}");
    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    let fetched: Value = c
        .execute(
            "return performance.getEntriesByType('resource').map(e => e.name)",
            vec![],
        )
        .await
        .unwrap();
    let fetched = fetched.as_array().unwrap();
    assert!(
        fetched.len() >= 2
            && fetched
                .iter()
                .all(|u| u.as_str().unwrap().starts_with(&base)),
        "fetched from elsewhere (or nothing): {fetched:?}"
    );
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts.join("inbox-list.png"), png).unwrap();

    // The whole row opens the account (the enhancement script runs).
    c.find(Locator::Css("tr.account td.rank"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_url(&url::Url::parse(&format!("{base}/inbox/accounts/acme")).unwrap())
        .await
        .unwrap();
    assert_eq!(c.title().await.unwrap(), "Acme Corp - churnwatch");
    let count = |sel: &'static str| {
        let c = c.clone();
        async move { c.find_all(Locator::Css(sel)).await.unwrap().len() }
    };
    assert_eq!(
        count("svg.chart.activity rect.bar").await,
        56,
        "a bar per day"
    );
    assert_eq!(count("svg.chart.activity line.expected").await, 1);
    assert_eq!(count("article.alert.critical dl.evidence dt").await, 4);
    assert_eq!(count("ul.checklist li").await, 2);
    assert_eq!(count("a.crm[href^='https://']").await, 1);
    let size: Value = c
        .execute(
            "const r = document.querySelector('svg.chart.activity').getBoundingClientRect(); return [r.width, r.height]",
            vec![],
        )
        .await
        .unwrap();
    assert!(
        size[0].as_f64().unwrap() > 400.0 && size[1].as_f64().unwrap() > 100.0,
        "{size}"
    );
    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    c.set_window_size(1280, 1500).await.unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts.join("inbox-account.png"), png).unwrap();

    // Ben may not open Ana's account.
    sign_in_as(&c, BEN).await;
    c.goto(&format!("{base}/inbox/accounts/acme"))
        .await
        .unwrap();
    let h1 = c
        .find(Locator::Css("h1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(h1, "Not allowed");
    let body = c.source().await.unwrap();
    assert!(!body.contains("Acme Corp"), "the refusal shows the account");
    let status = reqwest::Client::new()
        .get(format!("{base}/inbox/accounts/acme"))
        .header("X-Forwarded-Email", BEN)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 403);

    // A lead sees the team: one line per CSM, the busiest first. (The log so far has
    // the 403 in it.)
    let _ = console_errors(&c).await;
    sign_in_as(&c, "lee@example.com").await;
    c.goto(&format!("{base}/inbox/team")).await.unwrap();
    let owners: Value = c
        .execute(
            "return [...document.querySelectorAll('table.team tbody tr td:first-child')].map(t => t.textContent)",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(owners, json!([ANA, BEN]));
    assert_eq!(count("table.team svg.load rect").await, 2);
    let errors = console_errors(&c).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    c.set_window_size(1280, 500).await.unwrap();
    let png = c.screenshot().await.unwrap();
    std::fs::write(artifacts.join("inbox-team.png"), png).unwrap();
    c.close().await.unwrap();
}
