//! The Active URI client against fake phones on real loopback sockets.
//!
//! The fake phones are deliberately tiny raw-TCP HTTP servers written here (not the fuller
//! simulator in `sim::phone`): the tests need to see the request line byte for byte, count
//! accepted connections (to prove that refused commands never connect), measure how many
//! requests overlap, and misbehave on purpose (never answer, demand Digest, refuse
//! credentials).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ctibridge::ami::{AmiClient, AmiClientOptions, AmiMessage};
use ctibridge::config::{ActiveUriSettings, PhoneSettings, PhoneTransport, PhoneVendor};
use ctibridge::ingest::Ingest;
use ctibridge::journal::{Journal, JournalOptions};
use ctibridge::phone::client::{
    ActiveUriClient, CommandError, PhoneCommand, RequestResult, Transport,
};
use ctibridge::phone::registry::PhoneRegistry;
use ctibridge::sim::ami_server::{response_to, AmiServer};
use md5::{Digest as _, Md5};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

mod common;

const PBX: &str = "10.0.0.1";

/// One request as the fake phone read it.
#[derive(Clone, Debug)]
struct Recorded {
    /// The request target exactly as on the request line.
    target: String,
    headers: Vec<(String, String)>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the fake phone answers.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
}

impl Reply {
    fn ok() -> Reply {
        Reply {
            status: 200,
            headers: Vec::new(),
            delay: Duration::ZERO,
        }
    }
}

type Responder = Arc<dyn Fn(&Recorded) -> Reply + Send + Sync>;

#[derive(Clone)]
struct FakePhone {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<Recorded>>>,
    max_in_flight: Arc<AtomicUsize>,
}

impl FakePhone {
    /// A phone answering every request with `respond`.
    async fn start(respond: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakePhone {
        FakePhone::start_inner(Some(Arc::new(respond))).await
    }

    /// A phone whose web server accepts connections and never answers.
    async fn black_hole() -> FakePhone {
        FakePhone::start_inner(None).await
    }

    async fn start_inner(respond: Option<Responder>) -> FakePhone {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let phone = FakePhone {
            addr: listener.local_addr().unwrap(),
            accepts: Arc::default(),
            requests: Arc::default(),
            max_in_flight: Arc::default(),
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        let p = phone.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                p.accepts.fetch_add(1, Ordering::SeqCst);
                let p = p.clone();
                let respond = respond.clone();
                let in_flight = in_flight.clone();
                tokio::spawn(async move {
                    match respond {
                        Some(respond) => p.serve(stream, &*respond, &in_flight).await,
                        None => {
                            // Hold the connection open without reading or answering.
                            let _keep = stream;
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                    }
                });
            }
        });
        phone
    }

    async fn serve(
        &self,
        mut stream: TcpStream,
        respond: &(dyn Fn(&Recorded) -> Reply + Send + Sync),
        in_flight: &AtomicUsize,
    ) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            assert!(buf.len() < 64 * 1024, "request head too large");
        }
        let head = String::from_utf8_lossy(&buf).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default();
        let mut parts = request_line.split(' ');
        assert_eq!(parts.next(), Some("GET"), "{request_line}");
        let target = parts.next().unwrap_or_default().to_owned();
        let headers = lines
            .take_while(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let rec = Recorded { target, headers };

        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.requests.lock().unwrap().push(rec.clone());
        let reply = respond(&rec);
        tokio::time::sleep(reply.delay).await;
        // Done before the answer leaves: the client may send its next request as soon as it
        // has read this one, and that must not count as an overlap.
        in_flight.fetch_sub(1, Ordering::SeqCst);

        let mut out = format!("HTTP/1.1 {} X\r\n", reply.status);
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("Content-Length: 2\r\nConnection: close\r\n\r\nOK");
        let _ = stream.write_all(out.as_bytes()).await;
        let _ = stream.shutdown().await;
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    fn targets(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.target).collect()
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

fn phone(ext: &str, address: &str, vendor: PhoneVendor) -> PhoneSettings {
    PhoneSettings {
        extension: ext.into(),
        address: address.into(),
        vendor,
        username: "admin".into(),
        password: "s3cr&t".into(),
        ..PhoneSettings::default()
    }
}

fn settings(nets: &[&str], timeout: Duration) -> ActiveUriSettings {
    ActiveUriSettings {
        allowed_networks: nets.iter().map(|n| n.parse().unwrap()).collect(),
        timeout,
    }
}

fn make_client(
    phones: &[PhoneSettings],
    nets: &[&str],
    timeout: Duration,
) -> (ActiveUriClient, PhoneRegistry) {
    let registry = PhoneRegistry::from_settings(phones);
    let client = ActiveUriClient::new(registry.clone(), &settings(nets, timeout), PBX.into());
    (client, registry)
}

fn loopback(phones: &[PhoneSettings]) -> (ActiveUriClient, PhoneRegistry) {
    make_client(phones, &["127.0.0.0/8", "::1/128"], Duration::from_secs(5))
}

/// RFC 4648 base64, for checking Basic credentials without another dependency.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `k="v", k=v` parameters of a Digest header.
fn digest_params(value: &str) -> Vec<(String, String)> {
    let rest = value
        .trim()
        .strip_prefix("Digest")
        .expect("Digest scheme")
        .trim();
    let mut out = Vec::new();
    let mut s = rest;
    while !s.is_empty() {
        let (key, after) = s.split_once('=').expect("key=value");
        let (val, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').expect("closing quote");
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push((key.trim().to_owned(), val.to_owned()));
        s = after.trim_start_matches([',', ' ']);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_vendor_sends_its_exact_request_with_basic_auth() {
    let fake = FakePhone::start(|_| Reply::ok()).await;
    let a = fake.address();
    let phones = vec![
        phone("101", &a, PhoneVendor::Yealink),
        phone("102", &a, PhoneVendor::YealinkLegacy),
        PhoneSettings {
            account: Some("8532@192.168.1.199".into()),
            ..phone("103", &a, PhoneVendor::Fanvil)
        },
        phone("104", &a, PhoneVendor::Snom),
        PhoneSettings {
            line: 2,
            ..phone("105", &a, PhoneVendor::Grandstream)
        },
        phone("106", &a, PhoneVendor::Htek),
    ];
    let (client, registry) = loopback(&phones);
    let dial = |n: &str, line| PhoneCommand::Dial {
        number: n.into(),
        line,
    };
    let cases: Vec<(&str, PhoneCommand, Vec<&str>, Vec<&str>)> = vec![
        (
            "101",
            dial("+1 (555) 010-0100", None),
            vec!["/servlet?key=number=%2B15550100100&outgoing_uri=101@10.0.0.1"],
            vec![],
        ),
        (
            "101",
            dial("12#34", Some(2)),
            vec!["/servlet?key=F_HANDFREE;12$34@2;OK"],
            vec![],
        ),
        (
            "102",
            PhoneCommand::DndOn,
            vec!["/cgi-bin/ConfigManApp.com?key=DNDOn"],
            vec![],
        ),
        (
            "103",
            dial("8530", None),
            vec!["/cgi-bin/ConfigManApp.com?number=8530&outgoing_uri=8532@192.168.1.199"],
            vec![],
        ),
        (
            "104",
            PhoneCommand::keys(&["ok", "#", "D3"]).unwrap(),
            vec!["/command.htm?key=ENTER;%23;P3"],
            vec![],
        ),
        (
            "105",
            dial("+49 30 1234-5", None),
            vec!["/cgi-bin/api-make_call?passcode=s3cr%26t&phonenumber=%2B493012345&account=1"],
            vec!["/cgi-bin/api-make_call?passcode=***&phonenumber=%2B493012345&account=1"],
        ),
        (
            "106",
            PhoneCommand::keys(&["L1", "2", "OK"]).unwrap(),
            vec![
                "/Phone_ActionURL&Command=3&key=L1",
                "/Phone_ActionURL&Command=3&key=2",
                "/Phone_ActionURL&Command=3&key=OK",
            ],
            vec![],
        ),
    ];
    let basic = format!("Basic {}", base64(b"admin:s3cr&t"));
    for (ext, cmd, want, shown) in cases {
        let before = fake.requests().len();
        let outcome = client
            .execute(ext, cmd.clone())
            .await
            .unwrap_or_else(|e| panic!("{ext} {cmd:?}: {e}"));
        let got = fake.requests()[before..].to_vec();
        let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(targets, want, "{ext} {cmd:?}: request line, byte for byte");
        for r in &got {
            assert_eq!(r.header("authorization"), Some(basic.as_str()), "{ext}");
        }
        assert_eq!(outcome.transport, Transport::Http);
        assert_eq!(outcome.status, Some(200));
        let shown = if shown.is_empty() { want } else { shown };
        assert_eq!(
            outcome.requests, shown,
            "{ext}: secrets masked in the outcome"
        );
        assert_eq!(registry.get(ext).unwrap().state.reachable, Some(true));
    }
    let stats = client.stats();
    assert_eq!(stats.get(PhoneVendor::Htek, RequestResult::Ok), 3);
    assert_eq!(stats.get(PhoneVendor::Yealink, RequestResult::Ok), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn digest_challenge_is_answered_correctly_and_remembered() {
    const REALM: &str = "Yealink Phone";
    const NONCE: &str = "5f1c2e7a9b";
    let fake = FakePhone::start(|req| {
        let challenge = Reply {
            status: 401,
            headers: vec![(
                "WWW-Authenticate",
                format!(r#"Digest realm="{REALM}", qop="auth", nonce="{NONCE}", opaque="0p4que", algorithm=MD5"#),
            )],
            delay: Duration::ZERO,
        };
        match req.header("authorization") {
            Some(v) if v.starts_with("Digest ") => {
                let p = digest_params(v);
                let get = |k: &str| {
                    p.iter()
                        .find(|(key, _)| key == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                let ha1 = md5_hex(&format!("admin:{REALM}:s3cr&t"));
                let ha2 = md5_hex(&format!("GET:{}", req.target));
                let expected = md5_hex(&format!(
                    "{ha1}:{NONCE}:{}:{}:auth:{ha2}",
                    get("nc"),
                    get("cnonce")
                ));
                let valid = get("response") == expected
                    && get("uri") == req.target
                    && get("username") == "admin"
                    && get("realm") == REALM
                    && get("opaque") == "0p4que";
                if valid {
                    Reply::ok()
                } else {
                    challenge
                }
            }
            _ => challenge,
        }
    })
    .await;
    let (client, registry) = loopback(&[phone("101", &fake.address(), PhoneVendor::Yealink)]);

    let outcome = client.execute("101", PhoneCommand::DndOn).await.unwrap();
    assert_eq!(outcome.status, Some(200));
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 2, "Basic first, then one Digest answer");
    assert!(reqs[0]
        .header("authorization")
        .unwrap()
        .starts_with("Basic "));
    let answer = reqs[1].header("authorization").unwrap();
    let p = digest_params(answer);
    let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    // Checked here as well as in the phone: the hash over the exact request target.
    let ha1 = md5_hex(&format!("admin:{REALM}:s3cr&t"));
    let ha2 = md5_hex("GET:/servlet?key=DNDOn");
    let want = md5_hex(&format!(
        "{ha1}:{NONCE}:{}:{}:auth:{ha2}",
        get("nc").unwrap(),
        get("cnonce").unwrap()
    ));
    assert_eq!(get("response"), Some(want.as_str()));
    assert_eq!(get("uri"), Some("/servlet?key=DNDOn"));
    assert_eq!(get("nc"), Some("00000001"));

    // The next command answers the remembered challenge up front: no Basic, one request.
    client.execute("101", PhoneCommand::DndOff).await.unwrap();
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    let third = digest_params(reqs[2].header("authorization").unwrap());
    assert!(
        third.iter().any(|(k, v)| k == "nc" && v == "00000002"),
        "{third:?}"
    );
    assert_eq!(registry.get("101").unwrap().state.auth_failed, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_phone_and_disallowed_address_never_connect() {
    let fake = FakePhone::start(|_| Reply::ok()).await;
    let port = fake.addr.port();
    let phones = vec![
        phone("101", &fake.address(), PhoneVendor::Yealink),
        // A host name resolving to 127.0.0.1: also outside 127.0.0.2/32.
        phone("102", &format!("localhost:{port}"), PhoneVendor::Yealink),
    ];
    let (client, _) = make_client(&phones, &["127.0.0.2/32"], Duration::from_secs(1));

    let err = client
        .execute("999", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert_eq!(err, CommandError::UnknownPhone("999".into()));

    for ext in ["101", "102"] {
        let err = client
            .execute(
                ext,
                PhoneCommand::Dial {
                    number: "100".into(),
                    line: None,
                },
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, CommandError::AddressNotAllowed { .. }),
            "{ext}: {err}"
        );
        assert!(err.to_string().contains("allowed_networks"), "{err}");
    }
    // Invalid input is refused before anything else too.
    let err = client
        .execute(
            "101",
            PhoneCommand::Dial {
                number: "100&outgoing_uri=1@evil".into(),
                line: None,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), "invalid_number");

    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.accepts(), 0, "no connection may reach the phone");
    assert_eq!(
        client
            .stats()
            .get(PhoneVendor::Yealink, RequestResult::Refused),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_are_resolved_checked_and_pinned() {
    let fake = FakePhone::start(|_| Reply::ok()).await;
    let phones = vec![phone(
        "101",
        &format!("localhost:{}", fake.addr.port()),
        PhoneVendor::Snom,
    )];
    let (client, _) = loopback(&phones);
    let outcome = client.execute("101", PhoneCommand::Hangup).await.unwrap();
    assert_eq!(outcome.requests, ["/command.htm?key=ONHOOK"]);
    assert_eq!(fake.targets(), ["/command.htm?key=ONHOOK"]);
    assert_eq!(
        fake.requests()[0].header("host"),
        Some(format!("localhost:{}", fake.addr.port()).as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_black_hole_phone_times_out_without_delaying_other_phones() {
    let hole = FakePhone::black_hole().await;
    let fast_a = FakePhone::start(|_| Reply::ok()).await;
    let fast_b = FakePhone::start(|_| Reply::ok()).await;
    let phones = vec![
        phone("100", &hole.address(), PhoneVendor::Yealink),
        phone("101", &fast_a.address(), PhoneVendor::Yealink),
        phone("102", &fast_b.address(), PhoneVendor::Snom),
    ];
    let timeout = Duration::from_millis(300);
    let (client, registry) = make_client(&phones, &["127.0.0.0/8"], timeout);

    let start = Instant::now();
    let timed = |ext: &'static str, cmd: PhoneCommand| {
        let client = client.clone();
        tokio::spawn(async move {
            let r = client.execute(ext, cmd).await;
            (r, start.elapsed())
        })
    };
    // Answer is not idempotent: exactly one attempt, so one timeout.
    let slow = timed("100", PhoneCommand::Answer);
    let a = timed("101", PhoneCommand::DndOn);
    let b = timed("102", PhoneCommand::Answer);
    let (a_res, a_time) = a.await.unwrap();
    let (b_res, b_time) = b.await.unwrap();
    let (slow_res, slow_time) = slow.await.unwrap();

    a_res.unwrap();
    b_res.unwrap();
    assert!(
        a_time < Duration::from_millis(250) && b_time < Duration::from_millis(250),
        "other phones must not wait for the black hole: {a_time:?} {b_time:?}"
    );
    assert!(a_time < slow_time && b_time < slow_time);
    assert_eq!(
        slow_res.unwrap_err(),
        CommandError::Timeout { after: timeout }
    );
    assert!(
        slow_time >= Duration::from_millis(280) && slow_time < Duration::from_secs(3),
        "{slow_time:?}"
    );
    assert_eq!(hole.accepts(), 1, "no retry for a non-idempotent command");
    let state = registry.get("100").unwrap().state;
    assert_eq!(state.reachable, Some(false));
    assert!(state.last_error.is_some());
    assert_eq!(
        client
            .stats()
            .get(PhoneVendor::Yealink, RequestResult::Timeout),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_commands_are_retried_twice_after_timeouts() {
    let hole = FakePhone::black_hole().await;
    let (client, _) = make_client(
        &[phone("100", &hole.address(), PhoneVendor::Yealink)],
        &["127.0.0.0/8"],
        Duration::from_millis(100),
    );
    let err = client
        .execute("100", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "timeout");
    assert_eq!(hole.accepts(), 3, "first attempt plus two retries");
    // A toggle is never retried: Snom's DND key.
    let hole2 = FakePhone::black_hole().await;
    let (client, _) = make_client(
        &[phone("100", &hole2.address(), PhoneVendor::Snom)],
        &["127.0.0.0/8"],
        Duration::from_millis(100),
    );
    client
        .execute("100", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert_eq!(hole2.accepts(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_lock_the_phone_without_a_retry_storm() {
    let fake = FakePhone::start(|_| Reply {
        status: 401,
        headers: vec![("WWW-Authenticate", r#"Basic realm="phone""#.into())],
        delay: Duration::ZERO,
    })
    .await;
    let (client, registry) = loopback(&[phone("101", &fake.address(), PhoneVendor::Yealink)]);

    let err = client
        .execute("101", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        CommandError::AuthFailed {
            extension: "101".into(),
            status: 401
        }
    );
    assert!(err.to_string().contains("credentials"), "{err}");
    assert!(registry.get("101").unwrap().state.auth_failed.is_some());

    let err = client
        .execute("101", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::PhoneLocked { .. }), "{err}");
    assert_eq!(fake.requests().len(), 1, "no request after the refusal");
    assert_eq!(fake.accepts(), 1);
    let stats = client.stats();
    assert_eq!(
        stats.get(PhoneVendor::Yealink, RequestResult::AuthFailed),
        1
    );
    assert_eq!(stats.get(PhoneVendor::Yealink, RequestResult::Refused), 1);

    // Once an administrator clears the mark, commands flow again (and fail again here).
    registry.clear_auth_failed("101");
    client
        .execute("101", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_to_one_phone_never_overlap() {
    let fake = FakePhone::start(|_| Reply {
        delay: Duration::from_millis(40),
        ..Reply::ok()
    })
    .await;
    let (client, _) = loopback(&[phone("101", &fake.address(), PhoneVendor::Snom)]);
    let tasks: Vec<_> = (0..5)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .execute("101", PhoneCommand::keys(&[i.to_string()]).unwrap())
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(fake.requests().len(), 5);
    assert_eq!(fake.max_in_flight.load(Ordering::SeqCst), 1);
    let mut keys = fake.targets();
    keys.sort();
    assert_eq!(
        keys,
        (0..5)
            .map(|i| format!("/command.htm?key={i}"))
            .collect::<Vec<_>>()
    );
}

/// A logged-in AMI client against the simulated Asterisk, which answers `PJSIPNotify`.
async fn ami_with_notify() -> (
    AmiServer,
    ctibridge::ami::AmiHandle,
    CancellationToken,
    tempfile::TempDir,
) {
    let server = common::ami_server("s3cret", true).await;
    server.set_action_handler(Box::new(|action: &AmiMessage| {
        action
            .get("Action")
            .filter(|a| a.eq_ignore_ascii_case("PJSIPNotify"))
            .map(|_| {
                vec![response_to(action, "Success")
                    .field("Message", "NOTIFY sent")
                    .build()
                    .unwrap()]
            })
    }));
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let (ingest, mut rx) = Ingest::new(journal, 10_000);
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let shutdown = CancellationToken::new();
    let (handle, _task) = AmiClient::spawn(
        AmiClientOptions {
            events: "off".into(),
            ..common::ami_options(server.local_addr())
        },
        ingest,
        shutdown.clone(),
    );
    assert!(handle.wait_up(Duration::from_secs(5)).await, "AMI login");
    (server, handle, shutdown, dir)
}

fn notify_actions(server: &AmiServer) -> Vec<Vec<(String, String)>> {
    server
        .received_actions()
        .iter()
        .filter(|a| a.get("Action") == Some("PJSIPNotify"))
        .map(|a| {
            a.to_pairs()
                .into_iter()
                .filter(|(k, _)| k != "ActionID")
                .collect()
        })
        .collect()
}

fn expected_notify(endpoint: &str, body: &str) -> Vec<(String, String)> {
    [
        ("Action", "PJSIPNotify".to_owned()),
        ("Endpoint", endpoint.to_owned()),
        ("Variable", "Event=ACTION-URI".to_owned()),
        ("Variable", "Content-Type=message/sipfrag".to_owned()),
        ("Variable", format!("Content={body}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transport_auto_falls_back_to_pjsip_notify_when_http_is_dead() {
    let (server, ami, shutdown, _dir) = ami_with_notify().await;
    // A port nobody listens on any more.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let phones = vec![PhoneSettings {
        transport: PhoneTransport::Auto,
        ..phone("101", &dead.to_string(), PhoneVendor::Yealink)
    }];
    let (client, registry) = loopback(&phones);
    let client = client.with_notify(ami);

    let outcome = client.execute("101", PhoneCommand::DndOn).await.unwrap();
    assert_eq!(outcome.transport, Transport::Notify);
    assert_eq!(outcome.requests, ["key=DNDOn"]);
    assert_eq!(outcome.status, None);
    assert!(outcome.fallback.is_some(), "the HTTP failure is recorded");
    assert_eq!(
        notify_actions(&server),
        [expected_notify("101", "key=DNDOn")]
    );
    assert_eq!(registry.get("101").unwrap().state.reachable, Some(false));
    let stats = client.stats();
    assert_eq!(stats.get(PhoneVendor::Yealink, RequestResult::NotifyOk), 1);
    assert_eq!(
        stats.get(PhoneVendor::Yealink, RequestResult::Unreachable),
        3
    );
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transport_notify_uses_only_ami() {
    let (server, ami, shutdown, _dir) = ami_with_notify().await;
    let fake = FakePhone::start(|_| Reply::ok()).await;
    let phones = vec![
        PhoneSettings {
            transport: PhoneTransport::Notify,
            ..phone("101", &fake.address(), PhoneVendor::Fanvil)
        },
        PhoneSettings {
            transport: PhoneTransport::Notify,
            ..phone("102", &fake.address(), PhoneVendor::Snom)
        },
    ];
    let (plain, _) = loopback(&phones);
    assert_eq!(
        plain.execute("101", PhoneCommand::Hold).await.unwrap_err(),
        CommandError::NoNotifyTransport
    );
    let client = plain.with_notify(ami);
    let outcome = client.execute("101", PhoneCommand::Hold).await.unwrap();
    assert_eq!(outcome.transport, Transport::Notify);
    assert_eq!(
        notify_actions(&server),
        [expected_notify("101", "key=F_HOLD")]
    );
    // Snom has no NOTIFY form: refused, nothing sent anywhere.
    let err = client
        .execute("102", PhoneCommand::DndOn)
        .await
        .unwrap_err();
    assert_eq!(err.code(), "unsupported");
    assert_eq!(notify_actions(&server).len(), 1);
    assert_eq!(fake.accepts(), 0);
    shutdown.cancel();
}
