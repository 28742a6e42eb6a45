//! What the tests of actions on alerts share: their broker and topics, a `notify`
//! process serving the actions API, their config files and token entries, JSON requests with a bearer token, the actions
//! listed for an account and the records ever written to the actions topic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::broker::Broker;
use super::http::{json_body, request};
use super::proc::Proc;

/// What a test of actions against the broker starts from: the shared broker, a name
/// unique to the test (the prefix of its topics and consumer groups), a temporary
/// directory and the alerts topic `{name}-alerts` (one partition, created).
pub struct Setup {
    pub broker: &'static Broker,
    pub name: String,
    pub dir: tempfile::TempDir,
    pub alerts: String,
}

impl Setup {
    /// The name is `tag` and this process's id.
    pub fn new(tag: &str) -> Setup {
        let broker = Broker::shared();
        let name = format!("{tag}-{}", std::process::id());
        let dir = tempfile::tempdir().unwrap();
        let alerts = format!("{name}-alerts");
        broker.create_topic(&alerts, 1);
        Setup {
            broker,
            name,
            dir,
            alerts,
        }
    }
}

/// `churnwatch notify` on `cfg`, following `alerts` on `broker` (with `env` besides),
/// serving HTTP on a free loopback port and logging to `log`.
pub fn notifier(
    broker: &Broker,
    cfg: &Path,
    alerts: &str,
    log: PathBuf,
    env: &[(&str, &str)],
) -> Proc {
    Proc::spawn(&["notify", "--config", cfg.to_str().unwrap()], log, |c| {
        c.env("CHURNWATCH_KAFKA__BROKERS", &broker.bootstrap)
            .env("CHURNWATCH_KAFKA__ALERTS_TOPIC", alerts)
            .envs(env.iter().copied());
    })
}

/// Writes `accounts_csv` to `dir/accounts.csv` and the config `toml` gives for that
/// file to `dir/churnwatch.toml`; returns the config's path.
pub fn write_config(dir: &Path, accounts_csv: &str, toml: impl FnOnce(&Path) -> String) -> PathBuf {
    let accounts = dir.join("accounts.csv");
    std::fs::write(&accounts, accounts_csv).unwrap();
    let cfg = dir.join("churnwatch.toml");
    std::fs::write(&cfg, toml(&accounts)).unwrap();
    cfg
}

/// Lowercase hex of a digest.
pub fn hex(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A `[[server.auth.tokens]]` entry of a config: `token` (stored as its SHA-256) for
/// `email` with `role`.
pub fn token_entry(token: &str, email: &str, role: &str) -> String {
    format!(
        "[[server.auth.tokens]]\nsha256 = \"{}\"\nemail = \"{email}\"\nrole = \"{role}\"\n",
        hex(churnwatch::server::auth::sha256(token.as_bytes()))
    )
}

/// A request with a JSON body and a bearer token: (status, body as JSON).
pub fn call(addr: &str, method: &str, path: &str, token: &str, body: &str) -> (u16, Value) {
    let auth = [("Authorization", format!("Bearer {token}"))];
    let (status, response) = request(addr, method, path, "application/json", &auth, body);
    (status, json_body(&response))
}

/// The actions on `account` as `GET /api/v1/actions` lists them to `token`'s caller
/// (which must answer 200).
pub fn listed(addr: &str, account: &str, token: &str) -> Value {
    let (code, body) = super::http::get_with(
        addr,
        &format!("/api/v1/actions?account_id={account}"),
        &[("Authorization", &format!("Bearer {token}"))],
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Records ever written to the (one-partition) actions topic: its end offset.
pub fn written(broker: &Broker, topic: &str) -> i64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    c.fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
        .1
}
