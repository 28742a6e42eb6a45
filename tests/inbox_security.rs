//! Who may see what, over real HTTP on loopback: the inbox pages and the silences API
//! behind sign-in (hashed tokens, a proxy header believed only from trusted proxies),
//! roles (a CSM sees and silences only their own accounts), hostile requests refused
//! with the right status and nothing changed, the open endpoints still open, and HTTPS
//! with a certificate made in the test.

use std::net::SocketAddr;
use std::sync::Arc;

use churnwatch::accounts::{Accounts, MetaStore};
use churnwatch::config::{AuthConfig, TlsConfig, TokenEntry};
use churnwatch::inbox::model::Role;
use churnwatch::inbox::pages::fixture::{FixtureView, ANA, BEN};
use churnwatch::kafka::client::LogContext;
use churnwatch::notify::silence::{Silence, Silences};
use churnwatch::notify::silence_api::{self, Api};
use churnwatch::server::auth::{sha256, with_auth, Authenticator};
use churnwatch::server::Health;
use churnwatch::time::{format_rfc3339, wall_clock_ms, DAY};
use rdkafka::producer::FutureProducer;
use serde_json::{json, Value};

const ANA_TOKEN: &str = "cw_ana_0123456789abcdef0123456789abcdef";
const LEAD_TOKEN: &str = "cw_lee_0123456789abcdef0123456789abcdef";
const ADMIN_TOKEN: &str = "cw_legacy_admin_0123456789abcdef012345";
const LEAD: &str = "lee@example.com";

fn hex(b: [u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct Server {
    addr: SocketAddr,
    silences: Arc<Silences>,
}

/// A server with the fixture's pages and the silences API (Kafka unreachable: a
/// request that gets past every check ends in 503, and nothing is stored), trusting
/// the proxy header from `trusted`.
async fn start(trusted: &[&str], tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let today = wall_clock_ms().div_euclid(DAY);
    let view = FixtureView::sample(today);
    let mut meta = MetaStore::default();
    for a in &view.accounts {
        meta.upsert(a.meta.clone().unwrap());
    }
    let cfg = AuthConfig {
        trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
        leads: vec![LEAD.into()],
        ..AuthConfig::default()
    };
    let tokens = [
        TokenEntry {
            sha256: hex(sha256(ANA_TOKEN.as_bytes())),
            email: ANA.into(),
            role: Role::Csm,
        },
        TokenEntry {
            sha256: hex(sha256(LEAD_TOKEN.as_bytes())),
            email: LEAD.into(),
            role: Role::Lead,
        },
    ];
    let auth =
        Arc::new(Authenticator::new(&cfg, &tokens, Some(sha256(ADMIN_TOKEN.as_bytes()))).unwrap());
    let producer: FutureProducer<LogContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", "127.0.0.1:1")
        .set("message.timeout.ms", "500")
        .create_with_context(LogContext)
        .unwrap();
    let silences = Arc::new(Silences::default());
    let api = Arc::new(Api {
        store: silences.clone(),
        producer,
        topic: "silences".into(),
        max_silence: 90 * DAY,
        owners: Some(Arc::new(Accounts::new(meta))),
    });
    let protected = with_auth(
        churnwatch::inbox::pages::router(Arc::new(view)),
        auth.clone(),
    )
    .merge(silence_api::router(api, auth));
    let app = churnwatch::server::router(Arc::new(Health::default()), Some(protected));
    let addr = churnwatch::server::serve_with("127.0.0.1:0", app, tls)
        .await
        .unwrap();
    Server { addr, silences }
}

fn silence_of(account: Option<&str>, kind: Option<&str>) -> Value {
    json!({"account_id": account, "kind": kind, "until": format_rfc3339(wall_clock_ms() + DAY),
           "author": "someone", "reason": "renewal call"})
}

async fn status(r: reqwest::RequestBuilder) -> u16 {
    r.send().await.unwrap().status().as_u16()
}

/// The body of the response, as text.
async fn text(r: reqwest::RequestBuilder) -> String {
    r.send().await.unwrap().text().await.unwrap()
}

/// The body of the response, as JSON.
async fn json_of(r: reqwest::RequestBuilder) -> Value {
    r.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn without_valid_credentials_nothing_is_shown_or_changed() {
    let s = start(&["127.0.0.1"], None).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", s.addr);
    // No credentials: the pages explain, the API answers JSON.
    let r = c.get(format!("{base}/inbox")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let body = r.text().await.unwrap();
    assert!(
        body.contains("Sign in required") && !body.contains("Acme"),
        "{body}"
    );
    let r = c
        .get(format!("{base}/api/v1/silences"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("Bearer"));
    // A wrong token, a token of the wrong form, another scheme, a huge token.
    for auth in [
        "Bearer cw_ana_0123456789abcdef0123456789abcdeX".to_string(),
        format!("Bearer {}", &ANA_TOKEN[..20]),
        "Basic YW5hOnNlY3JldA==".to_string(),
        format!("Bearer {}", "A".repeat(4000)),
        format!("Bearer {ANA_TOKEN} {ANA_TOKEN}"),
    ] {
        for path in ["/inbox", "/inbox/accounts/acme", "/api/v1/silences"] {
            let code = status(
                c.get(format!("{base}{path}"))
                    .header("authorization", &auth),
            )
            .await;
            assert_eq!(code, 401, "{path} with {}", &auth[..auth.len().min(30)]);
        }
        let code = status(
            c.post(format!("{base}/api/v1/silences"))
                .header("authorization", &auth)
                .json(&silence_of(Some("acme"), None)),
        )
        .await;
        assert_eq!(code, 401);
    }
    // The open endpoints stay open; the right token works.
    assert_eq!(status(c.get(format!("{base}/metrics"))).await, 200);
    let hz = status(c.get(format!("{base}/healthz"))).await;
    assert!(hz == 200 || hz == 503, "{hz}");
    let r = c
        .get(format!("{base}/inbox"))
        .bearer_auth(ANA_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(s.silences.list(wall_clock_ms(), true).is_empty());
}

#[tokio::test]
async fn a_proxy_header_counts_only_from_a_trusted_address() {
    // This server trusts only 10.0.0.1: the test's client connects from 127.0.0.1.
    let spoofed = start(&["10.0.0.1/32"], None).await;
    let trusting = start(&["127.0.0.0/8"], None).await;
    let c = reqwest::Client::new();
    for (who, role_page) in [(ANA, "/inbox/accounts/acme"), (LEAD, "/inbox/team")] {
        let url = |s: &Server, p: &str| format!("http://{}{p}", s.addr);
        let code = status(
            c.get(url(&spoofed, role_page))
                .header("x-forwarded-email", who),
        )
        .await;
        assert_eq!(code, 401, "spoofed {who}");
        let code = status(
            c.post(url(&spoofed, "/api/v1/silences"))
                .header("x-forwarded-email", who)
                .json(&silence_of(Some("acme"), None)),
        )
        .await;
        assert_eq!(code, 401, "spoofed silence by {who}");
        // The same request from a trusted address is let in: the address decided.
        let code = status(
            c.get(url(&trusting, role_page))
                .header("x-forwarded-email", who),
        )
        .await;
        assert_eq!(code, 200, "trusted {who}");
    }
    let r = c
        .get(format!("http://{}/inbox", spoofed.addr))
        .header("x-forwarded-email", ANA)
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("trusted_proxies"));
    // A trusted proxy that sends something that is not an email.
    let code = status(
        c.get(format!("http://{}/inbox", trusting.addr))
            .header("x-forwarded-email", "ana@example.com, lee@example.com"),
    )
    .await;
    assert_eq!(code, 401);
    assert!(spoofed.silences.list(wall_clock_ms(), true).is_empty());
}

#[tokio::test]
async fn a_csm_sees_and_silences_only_their_own_accounts() {
    let s = start(&["127.0.0.1"], None).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", s.addr);
    let get = |path: &str, token: &str| {
        c.get(format!("{base}{path}"))
            .bearer_auth(token.to_string())
    };
    // The list shows Ana's accounts only, in priority order.
    let r = get("/inbox", ANA_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    for h in [
        "content-security-policy",
        "x-content-type-options",
        "referrer-policy",
    ] {
        assert!(r.headers().contains_key(h), "{h}");
    }
    let html = r.text().await.unwrap();
    let order: Vec<usize> = ["acme", "umbrella", "initech"]
        .iter()
        .map(|id| {
            html.find(&format!("href=\"/inbox/accounts/{id}\""))
                .unwrap_or_else(|| panic!("{id} missing"))
        })
        .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "not in priority order: {order:?}"
    );
    assert!(!html.contains("globex") && !html.contains("soylent"));
    assert!(!html.contains("<script>alert(1)"), "a name was not escaped");
    // Paging keeps the order: one row a page, the second page is the second account.
    let p1 = text(get("/inbox?limit=1", ANA_TOKEN)).await;
    assert!(p1.contains("/inbox/accounts/acme") && !p1.contains("/inbox/accounts/umbrella"));
    assert!(
        p1.contains("href=\"/inbox?limit=1&amp;offset=1\""),
        "no next link"
    );
    let p2 = text(get("/inbox?limit=1&offset=1", ANA_TOKEN)).await;
    assert!(p2.contains("/inbox/accounts/umbrella") && p2.contains("rel=\"prev\""));
    let critical = text(get(
        "/inbox?severity=critical&kind=not_activated",
        ANA_TOKEN,
    ))
    .await;
    assert!(
        critical.contains("/inbox/accounts/umbrella") && !critical.contains("/inbox/accounts/acme")
    );
    // Another owner's account, the team page, another owner's filter: 403.
    let owner_filter = format!("/inbox?owner={BEN}");
    for (path, token, want) in [
        ("/inbox/accounts/acme", ANA_TOKEN, 200),
        ("/inbox/accounts/globex", ANA_TOKEN, 403),
        ("/inbox/team", ANA_TOKEN, 403),
        (owner_filter.as_str(), ANA_TOKEN, 403),
        ("/inbox/accounts/nope", ANA_TOKEN, 404),
        // A lead sees all and the team.
        ("/inbox/accounts/globex", LEAD_TOKEN, 200),
    ] {
        assert_eq!(status(get(path, token)).await, want, "{path} {token}");
    }
    let team = text(get("/inbox/team", LEAD_TOKEN)).await;
    assert!(team.contains(ANA) && team.contains(BEN));

    // Silences: Ben's account, or a kind on every account, are not Ana's to silence.
    let post = |token: &str, body: Value| {
        c.post(format!("{base}/api/v1/silences"))
            .bearer_auth(token.to_string())
            .json(&body)
    };
    for (token, account, kind, want) in [
        (ANA_TOKEN, Some("globex"), None, 403),
        (ANA_TOKEN, None, Some("inactive"), 403),
        (ANA_TOKEN, Some("unknown-account"), None, 403),
        (LEAD_TOKEN, None, Some("inactive"), 403),
        // Allowed ones pass every check and reach Kafka, which is unreachable here: 503.
        (ANA_TOKEN, Some("acme"), None, 503),
        (LEAD_TOKEN, Some("globex"), None, 503),
        (ADMIN_TOKEN, None, Some("inactive"), 503),
    ] {
        let code = status(post(token, silence_of(account, kind))).await;
        assert_eq!(code, want, "{token}: {account:?} {kind:?}");
    }
    // What another site can make a signed-in browser send: a form post, plain text.
    let trusted_ana = |ctype: &str| {
        c.post(format!("{base}/api/v1/silences"))
            .header("x-forwarded-email", ANA)
            .header("content-type", ctype.to_string())
            .body(silence_of(Some("acme"), None).to_string())
    };
    for ctype in [
        "application/x-www-form-urlencoded",
        "text/plain",
        "multipart/form-data",
    ] {
        assert_eq!(status(trusted_ana(ctype)).await, 415, "{ctype}");
    }
    assert!(s.silences.list(wall_clock_ms(), true).is_empty());

    // Ben's silence: Ana neither lists nor expires it.
    let now = wall_clock_ms();
    s.silences.apply(Silence {
        id: "sil-ben".into(),
        account_id: Some("globex".into()),
        kind: None,
        until_ms: now + DAY,
        author: BEN.into(),
        reason: String::new(),
        created_at_ms: now,
        expired_at_ms: None,
    });
    let listed: Value = json_of(get("/api/v1/silences", ANA_TOKEN)).await;
    assert_eq!(listed["silences"], json!([]));
    let listed: Value = json_of(get("/api/v1/silences", LEAD_TOKEN)).await;
    assert_eq!(listed["silences"][0]["id"], "sil-ben");
    let code = status(
        c.delete(format!("{base}/api/v1/silences/sil-ben"))
            .bearer_auth(ANA_TOKEN),
    )
    .await;
    assert_eq!(code, 403);
    assert!(s.silences.get("sil-ben").unwrap().expired_at_ms.is_none());
}

#[tokio::test]
async fn oversized_and_malformed_requests_are_refused_and_the_server_goes_on() {
    let s = start(&["127.0.0.1"], None).await;
    let c = reqwest::Client::new();
    let base = format!("http://{}", s.addr);
    // Ana's POST of `body` as JSON to the silences API; Ana's GET of `path`.
    let silence = |body: String| {
        c.post(format!("{base}/api/v1/silences"))
            .bearer_auth(ANA_TOKEN)
            .header("content-type", "application/json")
            .body(body)
    };
    let ana_get = |path: &str| c.get(format!("{base}{path}")).bearer_auth(ANA_TOKEN);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            silence(
                json!({"account_id": "acme", "until": "2100-01-01T00:00:00Z", "author": "a",
                         "reason": "x".repeat(2 << 20)})
                .to_string(),
            ),
            413,
            "2 MiB body",
        ),
        (
            silence("{\"account_id\": \"acme\", \"until\": ".into()),
            400,
            "truncated JSON",
        ),
        (
            silence(json!({"account_id": "acme", "until": "tomorrow", "author": "a"}).to_string()),
            400,
            "a date that is not one",
        ),
        (
            silence(
                json!({"account_id": "acme", "until": "2100-01-01T00:00:00Z", "evil": 1})
                    .to_string(),
            ),
            422,
            "an unknown field",
        ),
        (ana_get("/inbox?limit=abc"), 400, "limit=abc"),
        (ana_get("/inbox?limit=1000000"), 400, "limit too big"),
        (
            ana_get("/inbox?offset=99999999999999999999999"),
            400,
            "offset overflow",
        ),
        (ana_get("/inbox?kind=%3Cscript%3E"), 400, "kind markup"),
        (
            ana_get("/inbox?segment=%FF%FE"),
            200,
            "invalid UTF-8 read lossily",
        ),
        (
            ana_get(&format!("/inbox/accounts/{}", "a".repeat(300))),
            400,
            "a 300-byte id",
        ),
        (ana_get("/inbox/accounts/a%00b"), 400, "a NUL in the id"),
        (
            ana_get(&format!("/inbox?segment={}", "s".repeat(20_000))),
            431,
            "20 kB of query",
        ),
        (
            ana_get("/inbox").header("x-pad", "p".repeat(20_000)),
            431,
            "20 kB header",
        ),
    ];
    for (req, want, what) in cases {
        match req.send().await {
            Ok(r) => {
                let got = r.status().as_u16();
                let body = r.text().await.unwrap_or_default();
                assert_eq!(got, want, "{what}: {}", &body[..body.len().min(300)]);
                assert!(!body.contains("<script>"), "{what}: markup echoed");
            }
            // hyper may close the connection on an oversized head instead of answering.
            Err(e) => assert!(want == 431, "{what}: {e}"),
        }
    }
    assert!(s.silences.list(wall_clock_ms(), true).is_empty());
    // The process still answers.
    assert_eq!(status(c.get(format!("{base}/metrics"))).await, 200);
    assert_eq!(
        status(c.get(format!("{base}/inbox")).bearer_auth(ANA_TOKEN)).await,
        200
    );
}

#[tokio::test]
async fn https_with_a_certificate_made_here() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let tls = churnwatch::server::tls::load(&TlsConfig {
        cert_file: cert.display().to_string(),
        key_file: key.display().to_string(),
    })
    .unwrap();
    let s = start(&[], tls).await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .resolve("localhost", s.addr)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/inbox/accounts/acme", s.addr.port());
    let r = client
        .get(&url)
        .bearer_auth(ANA_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    assert!(r.text().await.unwrap().contains("Acme Corp"));
    assert_eq!(status(client.get(&url)).await, 401);
    // Plain HTTP to the TLS port gets no page; a client that does not trust the
    // certificate does not connect.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/inbox", s.addr.port()))
        .bearer_auth(ANA_TOKEN)
        .send()
        .await;
    assert!(plain.is_err() || plain.unwrap().status() != 200);
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", s.addr)
        .build()
        .unwrap();
    assert!(untrusting.get(&url).send().await.is_err());
}
