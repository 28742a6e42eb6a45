//! The API over real HTTP on loopback, with a stand-in for the authentication layer
//! (a test header names the caller).

use std::sync::atomic::AtomicI64;

use axum::extract::Request;
use axum::middleware::Next;
use serde_json::{json, Value};

use super::*;
use crate::accounts::AccountMeta;
use crate::config::Config;
use crate::inbox::model::Role;
use crate::inbox::view::{store::ViewSettings, Source, View};

/// `x-test-user: <email> <role>` becomes the request's Principal; no header, none.
async fn fake_auth(mut req: Request, next: Next) -> Response {
    let who = req
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .map(|(email, role)| Principal {
            email: email.into(),
            role: match role {
                "lead" => Role::Lead,
                "admin" => Role::Admin,
                _ => Role::Csm,
            },
        });
    if let Some(p) = who {
        req.extensions_mut().insert(p);
    }
    next.run(req).await
}

async fn start() -> std::net::SocketAddr {
    let clock = Arc::new(AtomicI64::new(
        crate::time::parse_rfc3339("2026-03-01T00:00:00Z").unwrap(),
    ));
    let view = View::new(
        ViewSettings::new(&Config::default(), 20),
        Arc::new(move || clock.load(std::sync::atomic::Ordering::Relaxed)),
    );
    {
        let mut w = view.write();
        for (id, owner) in [("a1", "ana@x.io"), ("a2", "ana@x.io"), ("b1", "ben@x.io")] {
            let m = AccountMeta {
                account_id: id.into(),
                owner_email: Some(owner.into()),
                arr: Some(if id == "a2" { 90_000.0 } else { 1_000.0 }),
                ..AccountMeta::default()
            };
            assert!(w.apply(
                Source::Accounts,
                0,
                0,
                Some(id.as_bytes()),
                Some(&serde_json::to_vec(&m).unwrap())
            ));
            let rec = json!({"id": format!("{id}/inactive/2026-02-01"), "account_id": id, "kind": "inactive",
                "status": "firing", "severity": "warning", "event_time": "2026-02-15T00:00:00.000Z",
                "emitted_at": "2026-02-15T00:00:01.000Z", "summary": "No activity for 14 days",
                "evidence": {"last_activity": "2026-02-01T09:00:00.000Z", "idle_days": 14}});
            assert!(w.apply(Source::Alerts, 0, 0, None, Some(rec.to_string().as_bytes())));
        }
    }
    let app = router(view).layer(axum::middleware::from_fn(fake_auth));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn get(addr: std::net::SocketAddr, path: &str, user: Option<&str>) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let who = user
        .map(|u| format!("x-test-user: {u}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: x\r\n{who}connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("cache-control: no-store"),
        "{head}"
    );
    (
        code,
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

const ANA: Option<&str> = Some("ana@x.io csm");
const LEAD: Option<&str> = Some("lee@x.io lead");

#[tokio::test]
async fn signed_in_callers_get_their_answers() {
    let addr = start().await;
    let (code, page) = get(addr, "/api/v1/accounts", ANA).await;
    assert_eq!(code, 200, "{page}");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["account_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a2", "a1"], "own accounts, highest priority first");
    assert_eq!(page["total"], 2);
    let (code, page) = get(addr, "/api/v1/accounts?owner=ana%40x.io&limit=1", ANA).await;
    assert_eq!(
        (
            code,
            page["items"].as_array().unwrap().len(),
            page["next_offset"].clone()
        ),
        (200, 1, json!(1))
    );
    let (code, page) = get(
        addr,
        "/api/v1/accounts?at_risk=false&kind=inactive&severity=warning&offset=0&limit=200",
        LEAD,
    )
    .await;
    assert_eq!((code, page["total"].clone()), (200, json!(3)));
    let (code, a) = get(addr, "/api/v1/accounts/a1", ANA).await;
    assert_eq!(code, 200);
    assert_eq!(a["account_id"], "a1");
    assert_eq!(a["firing"][0]["evidence"]["idle_days"], 14);
    assert_eq!(a["history"][0]["status"], "firing");
    let (code, team) = get(addr, "/api/v1/team", LEAD).await;
    assert_eq!(code, 200);
    assert_eq!(team["owners"].as_array().unwrap().len(), 2);
    let (code, _) = get(addr, "/api/v1/accounts/b1", Some("adm@x.io admin")).await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn refusals_are_clear_json() {
    let addr = start().await;
    let cases: &[(&str, Option<&str>, u16, &str)] = &[
        ("/api/v1/accounts", None, 401, "sign-in"),
        ("/api/v1/accounts/a1", None, 401, "sign-in"),
        ("/api/v1/team", None, 401, "sign-in"),
        (
            "/api/v1/accounts?sort=name",
            ANA,
            400,
            "unknown parameter \"sort\"",
        ),
        ("/api/v1/accounts?offset=abc", ANA, 400, "offset \"abc\""),
        ("/api/v1/accounts?offset=-1", ANA, 400, "offset"),
        (
            "/api/v1/accounts?limit=0",
            ANA,
            400,
            "limit \"0\" is not a whole number from 1 to 200",
        ),
        ("/api/v1/accounts?limit=201", ANA, 400, "from 1 to 200"),
        (
            "/api/v1/accounts?limit=99999999999999999999999",
            ANA,
            400,
            "limit",
        ),
        (
            "/api/v1/accounts?kind=gone",
            ANA,
            400,
            "kind \"gone\" is not one of not_activated, inactive, activity_drop",
        ),
        (
            "/api/v1/accounts?severity=fatal",
            ANA,
            400,
            "severity \"fatal\"",
        ),
        ("/api/v1/accounts?at_risk=maybe", ANA, 400, "at_risk"),
        ("/api/v1/accounts?limit=5&limit=6", ANA, 400, "given twice"),
        ("/api/v1/accounts?owner=", LEAD, 400, "owner must be"),
        ("/api/v1/accounts?segment=%01", LEAD, 400, "segment must be"),
        (
            "/api/v1/accounts?owner=ben%40x.io",
            ANA,
            403,
            "only their own",
        ),
        ("/api/v1/accounts/b1", ANA, 403, "another owner"),
        ("/api/v1/team", ANA, 403, "leads and admins"),
        ("/api/v1/team?x=1", LEAD, 400, "no parameters"),
        ("/api/v1/accounts/nobody", ANA, 404, "no account \"nobody\""),
        ("/api/v1/accounts/nobody", LEAD, 404, "no account"),
    ];
    for (path, who, want, text) in cases {
        let (code, body) = get(addr, path, *who).await;
        assert_eq!(code, *want, "{path}: {body}");
        assert_eq!(body["status"], *want, "{path}: {body}");
        let msg = body["error"].as_str().unwrap();
        assert!(msg.contains(text), "{path}: {msg}");
    }
    let long = format!("/api/v1/accounts?owner={}", "a".repeat(3000));
    assert_eq!(get(addr, &long, LEAD).await.0, 400);
    let long_id = format!("/api/v1/accounts/{}", "a".repeat(300));
    assert_eq!(get(addr, &long_id, LEAD).await.0, 400);
    // Still serving after all that.
    assert_eq!(get(addr, "/api/v1/accounts", ANA).await.0, 200);
}

#[test]
fn defaults_when_nothing_is_asked() {
    assert_eq!(parse_list_query(None).unwrap(), ListQuery::default());
    assert_eq!(parse_list_query(Some("")).unwrap(), ListQuery::default());
    let q = parse_list_query(Some(
        "owner=Ana%40x.io&at_risk=false&segment=smb&offset=50&limit=200",
    ))
    .unwrap();
    assert_eq!(q.owner.as_deref(), Some("Ana@x.io"));
    assert_eq!(
        (q.at_risk, q.offset, q.limit, q.segment.as_deref()),
        (false, 50, 200, Some("smb"))
    );
}
