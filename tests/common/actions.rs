//! What the tests of actions on alerts share: a `notify` process serving the actions
//! API, token entries for a config, JSON requests with a bearer token, the actions
//! listed for an account and the records ever written to the actions topic.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::broker::Broker;
use super::proc::Proc;

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

/// A request on loopback with `body` of `content_type` and extra `headers`: (status,
/// headers and body as received).
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    content_type: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n{extra}\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).unwrap();
    (buf.split_whitespace().nth(1).unwrap().parse().unwrap(), buf)
}

/// The body of a response `request` returned, as JSON (`null` if it is not JSON).
pub fn json_body(response: &str) -> Value {
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or("");
    serde_json::from_str(body).unwrap_or(Value::Null)
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
