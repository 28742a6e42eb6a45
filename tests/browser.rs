//! The backtest's HTML report in a real headless browser (Debian's `chromium`, driven
//! over WebDriver by `chromedriver`; `scripts/setup.sh` installs both): the page loads
//! with no console errors and nothing fetched from a network, the charts are there,
//! and a screenshot goes to `target/test-artifacts/`. The CSM inbox the same way: on an
//! in-memory fixture (every page, including the team page) and on the real binary
//! (`serve --events` over a generated population, checked against its own API); and
//! acting on an alert from the account page (`serve` on a real broker).

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use common::proc::Proc;
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
/// The open account page's activity chart is laid out at a readable size and the page
/// logged no console error; a full-page screenshot goes to `png`.
async fn account_page_drawn(c: &Client, png: &std::path::Path) {
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
    assert_no_console_errors(c).await;
    c.set_window_size(1280, 1500).await.unwrap();
    screenshot(c, png).await;
}

async fn console_errors(c: &Client) -> Vec<String> {
    let log = c.issue_cmd(BrowserLog).await.expect("browser log");
    log.as_array()
        .expect("log entries")
        .iter()
        .filter(|e| e["level"] == "SEVERE")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Asserts the page logged no console error since the last look.
async fn assert_no_console_errors(c: &Client) {
    let errors = console_errors(c).await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
}

/// Saves a screenshot of the window to `png`.
async fn screenshot(c: &Client, png: &Path) {
    std::fs::write(png, c.screenshot().await.unwrap()).unwrap();
}

/// How many elements match the CSS selector `sel`.
async fn count(c: &Client, sel: &str) -> usize {
    c.find_all(Locator::Css(sel)).await.unwrap().len()
}

/// The first element matching `sel`.
async fn first(c: &Client, sel: &str) -> Element {
    c.find(Locator::Css(sel)).await.unwrap()
}

/// The text of the first element matching `sel`.
async fn text(c: &Client, sel: &str) -> String {
    first(c, sel).await.text().await.unwrap()
}

/// Clicks the first element matching `sel`.
async fn click(c: &Client, sel: &str) {
    first(c, sel).await.click().await.unwrap()
}

/// Whether the first element matching `sel` is displayed.
async fn shown(c: &Client, sel: &str) -> bool {
    first(c, sel).await.is_displayed().await.unwrap()
}

/// Waits until an element matches `sel`.
async fn wait_for_element(c: &Client, sel: &str) {
    c.wait().for_element(Locator::Css(sel)).await.unwrap();
}

/// `email`'s inbox list at `base` in a new session of `driver`: signed in, the page
/// open and titled as the list. Returns the session and the rows' links, in order.
async fn open_inbox(driver: &Driver, base: &str, email: &str) -> (Client, Value) {
    let c = connect(driver).await;
    c.set_window_size(1280, 900).await.unwrap();
    sign_in_as(&c, email).await;
    c.goto(&format!("{base}/inbox")).await.unwrap();
    assert_eq!(c.title().await.unwrap(), "My accounts at risk - churnwatch");
    let rows: Value = c
        .execute(
            "return [...document.querySelectorAll('tr.account')].map(r => r.dataset.href)",
            vec![],
        )
        .await
        .unwrap();
    (c, rows)
}

/// Clicks the first row of the list and waits for `url` (its account page).
async fn open_first_row(c: &Client, url: &str) {
    click(c, "tr.account td.rank").await;
    c.wait()
        .for_url(&url::Url::parse(url).unwrap())
        .await
        .unwrap();
}

/// The status of a GET of `url` as `email` through the proxy header.
async fn status_as(url: &str, email: &str) -> u16 {
    reqwest::Client::new()
        .get(url)
        .header("X-Forwarded-Email", email)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The URLs the page has fetched (its resource timing entries).
async fn fetched(c: &Client) -> Value {
    c.execute(
        "return performance.getEntriesByType('resource').map(e => e.name)",
        vec![],
    )
    .await
    .unwrap()
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
    assert_no_console_errors(&c).await;
    let fetched = fetched(&c).await;
    assert_eq!(fetched, json!([]), "the report fetched something");

    let charts = c.find_all(Locator::Css("svg.chart")).await.unwrap();
    assert_eq!(
        charts.len(),
        4,
        "trade-off, per-rule bars, lead times, weekly load"
    );
    // 6 runs: a precision and (with eligible churns) a recall point each.
    assert_eq!(count(&c, "svg.chart circle.point").await, 12);
    // The current config (after_days 14, alpha 0.001): its precision and recall points.
    assert_eq!(count(&c, "svg.chart circle.current").await, 2);
    assert!(count(&c, "svg.chart rect.bar").await >= 4);
    assert!(count(&c, "svg.chart polyline.series").await >= 1);
    assert!(
        count(&c, "svg.chart circle.lead").await >= 1,
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
    let (c, rows) = open_inbox(&driver, &base, ANA).await;
    assert_eq!(
        rows,
        json!([
            "/inbox/accounts/acme",
            "/inbox/accounts/umbrella",
            "/inbox/accounts/initech"
        ]),
        "Ana's accounts at risk, highest priority first, nobody else's"
    );
    assert_eq!(count(&c, "tr.account svg.spark polyline").await, 3);
    let who = text(&c, "header .who").await;
    assert!(who.contains(ANA), "{who}");
    assert_no_console_errors(&c).await;
    let fetched = fetched(&c).await;
    let fetched = fetched.as_array().unwrap();
    assert!(
        fetched.len() >= 2
            && fetched
                .iter()
                .all(|u| u.as_str().unwrap().starts_with(&base)),
        "fetched from elsewhere (or nothing): {fetched:?}"
    );
    screenshot(&c, &artifacts.join("inbox-list.png")).await;

    // The whole row opens the account (the enhancement script runs).
    open_first_row(&c, &format!("{base}/inbox/accounts/acme")).await;
    assert_eq!(c.title().await.unwrap(), "Acme Corp - churnwatch");
    assert_eq!(
        count(&c, "svg.chart.activity rect.bar").await,
        56,
        "a bar per day"
    );
    assert_eq!(count(&c, "svg.chart.activity line.expected").await, 1);
    assert_eq!(count(&c, "article.alert.critical dl.evidence dt").await, 4);
    assert_eq!(count(&c, "ul.checklist li").await, 2);
    assert_eq!(count(&c, "a.crm[href^='https://']").await, 1);
    account_page_drawn(&c, &artifacts.join("inbox-account.png")).await;

    // Ben may not open Ana's account.
    sign_in_as(&c, BEN).await;
    c.goto(&format!("{base}/inbox/accounts/acme"))
        .await
        .unwrap();
    assert_eq!(text(&c, "h1").await, "Not allowed");
    let body = c.source().await.unwrap();
    assert!(!body.contains("Acme Corp"), "the refusal shows the account");
    assert_eq!(
        status_as(&format!("{base}/inbox/accounts/acme"), BEN).await,
        403
    );

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
    assert_eq!(count(&c, "table.team svg.load rect").await, 2);
    assert_no_console_errors(&c).await;
    c.set_window_size(1280, 500).await.unwrap();
    screenshot(&c, &artifacts.join("inbox-team.png")).await;
    c.close().await.unwrap();
}

/// `churnwatch serve` with `args` (in the environment `configure` adds), logging at
/// info to `log`, once it listens; killed on drop.
struct Serve {
    _proc: Proc,
    base: String,
}

impl Serve {
    fn start(args: &[&str], log: &Path, configure: impl FnOnce(&mut Command)) -> Serve {
        let args: Vec<&str> = ["serve"].iter().chain(args).copied().collect();
        let proc = Proc::spawn(&args, log.to_path_buf(), |c| {
            c.env("RUST_LOG", "info");
            configure(c);
        });
        let base = format!("http://{}", proc.addr_within(Duration::from_secs(120)));
        Serve { _proc: proc, base }
    }
}

/// A GET as `email` through the proxy header: (status, JSON body or `null`).
async fn get_as(base: &str, path: &str, email: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .get(format!("{base}{path}"))
        .header("X-Forwarded-Email", email)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The inbox of the real binary on real data: `serve --events` builds the view of a
/// generated population (ending today, with its owners from the accounts file) and
/// trusts 127.0.0.1 as its proxy. The busiest CSM sees exactly the at-risk accounts the
/// API lists for them, in the API's priority order; their top account's page has the
/// activity chart (a bar per day of the series) and each firing alert's evidence; no
/// console errors; another CSM gets 403 on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_of_the_real_view_shows_a_csm_their_accounts_in_priority_order() {
    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let accounts = dir.path().join("accounts.csv");
    let days = 120;
    let today = churnwatch::time::wall_clock_ms().div_euclid(churnwatch::time::DAY);
    let start = churnwatch::time::format_day(today - days);
    churnwatch(&[
        "gen",
        "--accounts=400",
        &format!("--days={days}"),
        "--seed=11",
        "--start",
        &start,
        "--output",
        events.to_str().unwrap(),
        "--accounts-file",
        accounts.to_str().unwrap(),
    ]);
    let cfg = dir.path().join("serve.toml");
    std::fs::write(
        &cfg,
        r#"
[server]
listen = "127.0.0.1:0"
[server.auth]
trusted_proxies = ["127.0.0.1/32"]
leads = ["lee@example.com"]
"#,
    )
    .unwrap();
    let serve = Serve::start(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--accounts",
            accounts.to_str().unwrap(),
        ],
        &dir.path().join("serve.log"),
        |_| {},
    );
    let base = serve.base.clone();

    // The lead's team view names the CSMs; the busiest one signs in, another is refused.
    let (code, team) = get_as(&base, "/api/v1/team", "lee@example.com").await;
    assert_eq!(code, 200, "{team}");
    let mut owners: Vec<(u64, String)> = team["owners"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| {
            Some((
                r["at_risk"].as_u64()?,
                r["owner_email"].as_str()?.to_string(),
            ))
        })
        .collect();
    owners.sort_by(|a, b| b.cmp(a));
    assert!(owners.len() >= 2 && owners[0].0 >= 3, "{team}");
    let csm = owners[0].1.clone();
    let other = owners[1].1.clone();

    let (code, listed) = get_as(&base, "/api/v1/accounts?limit=200", &csm).await;
    assert_eq!(code, 200, "{listed}");
    let items = listed["items"].as_array().unwrap();
    assert_eq!(
        items.len() as u64,
        owners[0].0,
        "the API lists their at-risk accounts"
    );
    assert!(items.iter().all(|a| a["owner_email"] == csm.as_str()));
    let want: Vec<String> = items
        .iter()
        .map(|a| churnwatch::inbox::pages::account_path(a["account_id"].as_str().unwrap()))
        .collect();
    let scores: Vec<f64> = items
        .iter()
        .map(|a| a["priority"].as_f64().unwrap())
        .collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "priority order: {scores:?}"
    );

    let driver = Driver::start();
    let (c, rows) = open_inbox(&driver, &base, &csm).await;
    assert_eq!(
        rows,
        json!(want),
        "the page lists what the API lists, in order"
    );
    assert_eq!(count(&c, "tr.account svg.spark polyline").await, want.len());
    assert_no_console_errors(&c).await;
    screenshot(&c, &artifacts.join("inbox-real-list.png")).await;

    // The top account opens from its row.
    open_first_row(&c, &format!("{base}{}", want[0])).await;
    let top = items[0]["account_id"].as_str().unwrap();
    let (code, detail) = get_as(
        &base,
        &format!(
            "/api/v1/accounts/{}",
            churnwatch::notify::render::escape::url_component(top)
        ),
        &csm,
    )
    .await;
    assert_eq!(code, 200, "{detail}");
    let series = detail["series"].as_array().unwrap().len();
    assert!(series >= 28, "{series} days kept");
    assert_eq!(
        count(&c, "svg.chart.activity rect.bar").await,
        series,
        "a bar per day"
    );
    let firing = detail["firing"].as_array().unwrap().len();
    assert!(firing >= 1);
    assert_eq!(count(&c, "section.firing article.alert").await, firing);
    assert_eq!(
        count(&c, "section.firing article.alert .evidence").await,
        firing,
        "each firing alert's evidence"
    );
    account_page_drawn(&c, &artifacts.join("inbox-real-account.png")).await;

    // Another CSM may not open it, in the browser or through the API.
    sign_in_as(&c, &other).await;
    c.goto(&format!("{base}{}", want[0])).await.unwrap();
    assert_eq!(text(&c, "h1").await, "Not allowed");
    assert_eq!(status_as(&format!("{base}{}", want[0]), &other).await, 403);
    let (code, _) = get_as(
        &base,
        &format!(
            "/api/v1/accounts/{}",
            churnwatch::notify::render::escape::url_component(top)
        ),
        &other,
    )
    .await;
    assert_eq!(code, 403);
    c.close().await.unwrap();
}

/// Acting on an alert from the account page, on the real binary: `serve` following a
/// real broker (the actions are stored in Kafka) with one firing alert on Ana's
/// account. In the browser Ana gets the API's own error for a date in the past, then
/// snoozes the alert with a reason: the page shows it snoozed until that date with the
/// reason, at once and after a reload (rendered by the server), the list page marks
/// the account's row snoozed, and the API lists the action; Reopen and Acknowledge
/// work the same way. Ben, another CSM, gets no page and no button for that account, and his
/// direct POST is refused (403) and writes nothing to the actions topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csm_snoozes_an_alert_from_the_account_page_and_another_csm_cannot() {
    use common::actions::Setup;
    const ANA: &str = "ana@example.com";
    const BEN: &str = "ben@example.com";
    const ALERT: &str = "acme/inactive/2026-03-01";

    let artifacts = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    // The broker helpers block (they run their own runtime).
    let Setup {
        broker,
        name,
        dir,
        alerts,
    } = tokio::task::block_in_place(|| Setup::new("bract"));
    let lines = dir.path().join("alerts.ndjson");
    std::fs::write(
        &lines,
        common::alert_line(ALERT, "firing", "warning", "2026-03-15T10:00:00Z", None),
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        broker.create_topic(&format!("{name}-group-changelog"), 1);
        broker.produce_ok(&lines, &["--topic", &alerts]);
    });
    let accounts = dir.path().join("accounts.csv");
    std::fs::write(
        &accounts,
        format!("account_id,name,owner_email\nacme,Acme Corp,{ANA}\nglobex,Globex,{BEN}\n"),
    )
    .unwrap();
    let cfg = dir.path().join("serve.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.auth]\ntrusted_proxies = [\"127.0.0.1/32\"]\n\
             [notify]\ngroup_id = \"{name}-notifier\"\naccounts_file = \"{}\"\n",
            accounts.display()
        ),
    )
    .unwrap();
    let serve = Serve::start(
        &["--config", cfg.to_str().unwrap()],
        &dir.path().join("serve.log"),
        |c| {
            c.env("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)
                .env("CHURNWATCH_KAFKA__GROUP_ID", format!("{name}-group"))
                .env("CHURNWATCH_KAFKA__ALERTS_TOPIC", &alerts);
        },
    );
    let base = serve.base.clone();
    let topic = format!("{name}-notifier-actions");
    let written = || common::actions::written(broker, &topic);
    // The view holds the alert and has caught up (the API then checks alerts).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, v) = get_as(&base, "/api/v1/accounts/acme", ANA).await;
        let ready = reqwest::get(format!("{base}/readyz"))
            .await
            .unwrap()
            .status()
            == 200;
        if ready && code == 200 && v["firing"][0]["id"] == ALERT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view never held the alert: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let driver = Driver::start();
    let c = connect(&driver).await;
    c.set_window_size(1280, 1400).await.unwrap();
    sign_in_as(&c, ANA).await;
    let page = format!("{base}/inbox/accounts/acme");
    c.goto(&page).await.unwrap();
    let state = text(&c, "article.alert .action-state").await;
    assert!(state.starts_with("Open"), "{state}");
    let box_sel = "article.alert div.act[data-alert-id='acme/inactive/2026-03-01']";
    assert_eq!(count(&c, box_sel).await, 1);
    let error_shown = |needle: &'static str| {
        let c = c.clone();
        async move {
            let e = c.find(Locator::Css("div.act .act-error")).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let t = e.text().await.unwrap();
                if t.contains(needle) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "error shown: {t:?}, wanted {needle:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    // No reason: refused before anything is sent.
    click(&c, "div.act button[data-action='snooze']").await;
    error_shown("reason is required").await;
    // A date in the past: the API's own refusal, shown as it words it.
    let reason = first(&c, "div.act input[name=reason]").await;
    reason.send_keys("renewal call on Friday").await.unwrap();
    let default_until: Value = c
        .execute(
            "const i = document.querySelector('div.act input[name=until]'); const v = i.value; i.value = '2001-01-01'; return v",
            vec![],
        )
        .await
        .unwrap();
    let default_until = default_until.as_str().unwrap().to_string();
    let today = churnwatch::time::wall_clock_ms().div_euclid(churnwatch::time::DAY);
    assert_eq!(default_until, churnwatch::time::format_day(today + 7));
    click(&c, "div.act button[data-action='snooze']").await;
    error_shown("Not recorded (400): until is in the past").await;
    assert_eq!(written(), 0, "a refused action was written");
    // The default date (a week ahead): snoozed, the state re-rendered in place.
    c.execute(
        "document.querySelector('div.act input[name=until]').value = arguments[0]",
        vec![json!(default_until)],
    )
    .await
    .unwrap();
    click(&c, "div.act button[data-action='snooze']").await;
    wait_for_element(&c, "article.alert .action-state[data-state='snoozed']").await;
    let state = text(&c, "article.alert .action-state").await;
    assert!(
        state.contains(&format!("Snoozed until {default_until}"))
            && state.contains(ANA)
            && state.contains("renewal call on Friday"),
        "{state}"
    );
    assert!(
        shown(&c, "div.act button.reopen").await,
        "Reopen is offered once acted on"
    );

    // The API lists the action.
    let (code, listed) = get_as(&base, "/api/v1/actions?account_id=acme", ANA).await;
    assert_eq!(code, 200, "{listed}");
    let acts = listed["actions"].as_array().unwrap();
    assert_eq!(acts.len(), 1, "{listed}");
    assert_eq!(acts[0]["action"], "snooze");
    assert_eq!(acts[0]["alert_id"], ALERT);
    assert_eq!(acts[0]["by"], ANA);
    assert_eq!(acts[0]["reason"], "renewal call on Friday");
    assert_eq!(
        acts[0]["until"],
        format!("{default_until}T00:00:00.000Z").as_str()
    );
    assert_eq!(listed["states"][ALERT]["state"], "snoozed");
    assert_eq!(written(), 1);

    // A reload: the server renders the same state, and the history lists the action.
    c.goto(&page).await.unwrap();
    let state = text(&c, "article.alert .action-state").await;
    assert!(
        state.contains(&format!("Snoozed until {default_until}"))
            && state.contains("renewal call on Friday"),
        "{state}"
    );
    let hist = text(&c, "ol.actions li.snooze").await;
    assert!(
        hist.contains(ANA) && hist.contains("snoozed until") && hist.contains(ALERT),
        "{hist}"
    );
    let errors = console_errors(&c).await;
    // The 400 above is logged by the browser as a failed resource; nothing else.
    assert!(
        errors.iter().all(|e| e.contains("400")),
        "console errors: {errors:?}"
    );
    c.set_window_size(1280, 860).await.unwrap();
    screenshot(&c, &artifacts.join("inbox-actions.png")).await;

    // The list shows the row's state.
    c.goto(&format!("{base}/inbox")).await.unwrap();
    assert_eq!(
        text(&c, "tr.account td.alert .badge.state").await,
        "snoozed"
    );

    // Reopen, then acknowledge: each re-renders the state, and the buttons follow.
    c.goto(&page).await.unwrap();
    click(&c, "div.act button[data-action='reopen']").await;
    wait_for_element(&c, "article.alert .action-state[data-state='open']").await;
    click(&c, "div.act button[data-action='acknowledge']").await;
    wait_for_element(&c, "article.alert .action-state[data-state='acknowledged']").await;
    let state = text(&c, "article.alert .action-state").await;
    assert!(
        state.starts_with(&format!("Acknowledged by {ANA}")),
        "{state}"
    );
    assert!(
        !shown(&c, "div.act button.ack").await,
        "no second acknowledgement"
    );
    assert!(shown(&c, "div.act button.reopen").await);
    let (_, listed) = get_as(&base, "/api/v1/actions?account_id=acme", ANA).await;
    let kinds: Vec<&str> = listed["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["acknowledge", "reopen", "snooze"], "newest first");
    assert_eq!(listed["states"][ALERT]["state"], "acknowledged");
    assert_eq!(written(), 3);
    assert_no_console_errors(&c).await;

    // Ben is not the owner: no page, no button; his direct POST is refused and
    // nothing is written.
    sign_in_as(&c, BEN).await;
    c.goto(&page).await.unwrap();
    assert_eq!(text(&c, "h1").await, "Not allowed");
    assert_eq!(count(&c, "button[data-action]").await, 0);
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/actions"))
        .header("X-Forwarded-Email", BEN)
        .json(&json!({"alert_id": ALERT, "action": "reopen"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("not yours"),
        "{body}"
    );
    assert_eq!(written(), 3, "the refused request wrote to the topic");
    let (_, listed) = get_as(&base, "/api/v1/actions?account_id=acme", ANA).await;
    assert_eq!(listed["actions"].as_array().unwrap().len(), 3);
    assert_eq!(listed["states"][ALERT]["state"], "acknowledged");
    let errors = console_errors(&c).await;
    assert!(
        errors.iter().all(|e| e.contains("403")),
        "only Ben's refused page: {errors:?}"
    );

    // A snooze quiets the account's alerts of that kind, also a new episode that fires
    // after the snoozed one resolved: its page says so (the notifier sends nothing for
    // it) and offers to reopen the snoozed alert, which has no controls of its own now.
    const NEXT: &str = "acme/inactive/2026-04-01";
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/actions"))
        .header("X-Forwarded-Email", ANA)
        .json(
            &json!({"alert_id": ALERT, "action": "snooze", "reason": "quiet until the QBR",
                      "until": default_until}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    std::fs::write(
        &lines,
        common::alert_line(ALERT, "resolved", "warning", "2026-03-20T10:00:00Z", None)
            + &common::alert_line(NEXT, "firing", "warning", "2026-04-01T10:00:00Z", None),
    )
    .unwrap();
    tokio::task::block_in_place(|| broker.produce_ok(&lines, &["--topic", &alerts]));
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_as(&base, "/api/v1/accounts/acme", ANA).await.1["firing"][0]["id"] != NEXT {
        assert!(
            Instant::now() < deadline,
            "the view never held the new episode"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sign_in_as(&c, ANA).await;
    c.goto(&format!("{base}/inbox")).await.unwrap();
    assert_eq!(
        text(&c, "tr.account td.alert .badge.state").await,
        "snoozed",
        "the row's alert is quiet through the snooze"
    );
    c.goto(&page).await.unwrap();
    let state = text(&c, "article.alert .action-state[data-state='quiet']").await;
    assert!(
        state.contains(ALERT) && state.contains("quiet until the QBR") && state.contains(ANA),
        "{state}"
    );
    let (_, listed) = get_as(&base, "/api/v1/actions?account_id=acme", ANA).await;
    assert_eq!(listed["quiet"]["inactive"]["alert_id"], ALERT, "{listed}");
    assert_eq!(listed["quiet"]["inactive"]["state"], "snoozed");
    click(
        &c,
        &format!("div.act[data-alert-id='{ALERT}'] button[data-action='reopen']"),
    )
    .await;
    wait_for_element(&c, "article.alert .action-state[data-state='open']").await;
    assert!(
        !shown(
            &c,
            &format!("section.firing div.act[data-alert-id='{ALERT}'] button.reopen")
        )
        .await,
        "the Reopen of the quieting alert is gone once done"
    );
    let (_, listed) = get_as(&base, "/api/v1/actions?account_id=acme", ANA).await;
    assert!(listed["states"][ALERT].is_null(), "{listed}");
    assert_eq!(listed["quiet"], json!({}), "{listed}");
    assert_eq!(written(), 5);

    // Feedback on the alert that is over, from its own controls under "Resolved
    // recently": not a risk, with a reason (what the backtest scores).
    c.goto(&page).await.unwrap();
    let resolved = format!("article.alert.resolved div.act[data-alert-id='{ALERT}']");
    first(&c, &format!("{resolved} input[name=reason]"))
        .await
        .send_keys("a pilot that ended as planned")
        .await
        .unwrap();
    click(&c, &format!("{resolved} button[data-action='not_a_risk']")).await;
    wait_for_element(
        &c,
        "article.alert.resolved .action-state[data-state='not_a_risk']",
    )
    .await;
    let (_, listed) = get_as(&base, "/api/v1/actions?account_id=acme", ANA).await;
    assert_eq!(listed["actions"][0]["action"], "not_a_risk", "{listed}");
    assert_eq!(listed["actions"][0]["alert_id"], ALERT);
    assert_eq!(
        listed["actions"][0]["reason"],
        "a pilot that ended as planned"
    );
    assert_eq!(written(), 6);
    assert_no_console_errors(&c).await;
    c.close().await.unwrap();
    drop(serve);
}
