//! Live events over real sockets: a simulated Asterisk plays recorded calls to the real
//! service, and clients read `GET /api/v1/events` (SSE) and `GET /api/v1/ws` (WebSocket):
//! the event sequence of a call in order on both, filters, auth, resuming with
//! `Last-Event-ID` (exactly the missed events; `stream.reset` beyond the buffer), and a
//! stalled client cut off while a healthy one keeps receiving.

use ctibridge::config;
use ctibridge::live::LiveEvent;
use ctibridge::service::Service;
use ctibridge::sim::ami_server::AmiServer;
use ctibridge::sim::fixtures::load_capture_file;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

mod common;

/// Generous limit for anything to arrive (a loaded 2-core machine), never a timing assertion.
const WAIT: Duration = Duration::from_secs(20);

fn settings(ami: &AmiServer, dir: &Path, live: &str) -> config::Settings {
    common::service_settings(ami, dir, &format!("[live]\n{live}"))
}

async fn start(live: &str) -> (AmiServer, Service, tempfile::TempDir) {
    let ami = common::ami_server("s3cret", true).await;
    let dir = tempfile::tempdir().unwrap();
    let service = Service::start(&settings(&ami, dir.path(), live))
        .await
        .unwrap();
    assert!(service.ami[0].wait_up(WAIT).await, "AMI link up");
    (ami, service, dir)
}

async fn play(ami: &AmiServer, name: &str, generation: u64) {
    let scenario = load_capture_file(&common::fixture(&format!("{name}.ami"))).unwrap();
    ami.play(&scenario.instantiate(generation), 0.0).await;
}

/// One SSE event as received.
#[derive(Clone, Debug, PartialEq)]
struct Sse {
    id: Option<u64>,
    event: String,
    data: Value,
}

/// A minimal SSE reader over a streaming reqwest response.
struct SseClient {
    resp: reqwest::Response,
    buf: String,
}

impl SseClient {
    async fn connect(base: &str, query: &str, last_event_id: Option<u64>) -> SseClient {
        let mut req = reqwest::Client::new()
            .get(format!("{base}/api/v1/events{query}"))
            .bearer_auth("reader");
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        SseClient {
            resp,
            buf: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped); `None` at the end of the stream.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = Some(v.parse().unwrap());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_string();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Some(Sse { id, event, data });
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, self.resp.chunk())
                .await
                .expect("an SSE event in time")
                .unwrap()?;
            self.buf.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Events until (and including) the `n`th `call.ended`.
    async fn until_ended(&mut self, n: usize) -> Vec<Sse> {
        let mut out = Vec::new();
        let mut ended = 0;
        while ended < n {
            let e = self.next().await.expect("stream open");
            ended += usize::from(e.event == "call.ended");
            out.push(e);
        }
        out
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(addr: std::net::SocketAddr, query: &str) -> Ws {
    let url = format!("ws://{addr}/api/v1/ws{query}");
    let (ws, resp) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(resp.status(), 101);
    ws
}

/// The next text message as JSON (pings skipped); `Err` with the close frame's text.
async fn ws_next(ws: &mut Ws) -> Result<Value, String> {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a WebSocket message in time");
        match msg {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => {
                return Err(frame
                    .map(|f| format!("{} {}", f.code, f.reason))
                    .unwrap_or_default())
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("error: {e}")),
            None => return Err("end".into()),
        }
    }
}

async fn ws_until_ended(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut ended = 0;
    while ended < n {
        let v = ws_next(ws).await.expect("socket open");
        ended += usize::from(v["type"] == "call.ended");
        out.push(v);
    }
    out
}

fn types_of(events: &[Sse]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_streams_its_events_in_order_over_sse_and_websocket() {
    let (ami, service, _dir) = start("").await;
    let base = format!("http://{}", service.http_addr);

    // Auth and query checks.
    let get = |path: &str, token: Option<&'static str>| {
        let mut req = reqwest::Client::new().get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    assert_eq!(get("/api/v1/events", None).await.unwrap().status(), 401);
    assert_eq!(
        get("/api/v1/events", Some("dialer"))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        get("/api/v1/events?types=call.exploded", Some("reader"))
            .await
            .unwrap()
            .status(),
        422
    );
    assert_eq!(
        get("/api/v1/events?last_event_id=yesterday", Some("reader"))
            .await
            .unwrap()
            .status(),
        422
    );
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/api/v1/ws", service.http_addr))
            .await
            .is_err(),
        "WebSocket without a token is refused"
    );

    let mut sse = SseClient::connect(&base, "?types=call.*", None).await;
    let mut ws = ws_connect(service.http_addr, "?types=call.*&access_token=reader").await;
    // Only what concerns 103 (the transfer target), and only two types.
    let mut narrow =
        SseClient::connect(&base, "?types=call.answered,call.ended&ext=103", None).await;
    // The stream is open before the call starts: the hub counts the three subscribers.
    assert!(common::eventually(WAIT, || service.hub.subscribers() == 3).await);

    play(&ami, "blind_transfer", 1).await;
    let expected = [
        "call.started",
        "call.ringing",
        "call.answered",
        "call.transferred",
        "call.ringing",
        "call.answered",
        "call.ended",
    ];
    let events = sse.until_ended(1).await;
    assert_eq!(types_of(&events), expected);
    let ids: Vec<u64> = events.iter().map(|e| e.id.unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let call_id = events[0].data["call_id"].as_str().unwrap().to_string();
    for e in &events {
        assert_eq!(
            e.data["type"],
            e.event.as_str(),
            "SSE event name = JSON type"
        );
        assert_eq!(e.data["id"], e.id.unwrap(), "SSE id = JSON id");
        assert_eq!(e.data["call_id"], call_id.as_str(), "one call");
    }
    assert_eq!(events[1].data["data"]["leg"]["endpoint"], "102");
    assert_eq!(events[2].data["data"]["answered_by"], "102");
    assert_eq!(events[3].data["data"]["transfer"]["kind"], "blind");
    assert_eq!(events[4].data["data"]["leg"]["endpoint"], "103");
    assert_eq!(events[5].data["data"]["answered_by"], "103");
    let record = &events[6].data["data"]["record"];
    assert_eq!(record["complete"], true);
    assert_eq!(record["id"], call_id.as_str());
    assert_eq!(record["transfers"][0]["to"], "103");

    // The WebSocket saw exactly the same events.
    let over_ws = ws_until_ended(&mut ws, 1).await;
    let ws_pairs: Vec<(u64, String)> = over_ws
        .iter()
        .map(|v| {
            (
                v["id"].as_u64().unwrap(),
                v["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    let sse_pairs: Vec<(u64, String)> = events
        .iter()
        .map(|e| (e.id.unwrap(), e.event.clone()))
        .collect();
    assert_eq!(ws_pairs, sse_pairs);
    assert_eq!(
        over_ws,
        events.iter().map(|e| e.data.clone()).collect::<Vec<_>>()
    );

    // The narrow stream: 103's answer and the end, with the same ids.
    let narrow_events = narrow.until_ended(1).await;
    assert_eq!(types_of(&narrow_events), ["call.answered", "call.ended"]);
    assert_eq!(narrow_events[0].id, events[5].id);
    assert_eq!(narrow_events[1].id, events[6].id);

    // A second call (hold and resume) on the same streams, after the first.
    play(&ami, "hold_unhold", 2).await;
    let second = sse.until_ended(1).await;
    assert_eq!(
        types_of(&second),
        [
            "call.started",
            "call.ringing",
            "call.answered",
            "call.held",
            "call.unheld",
            "call.ended"
        ]
    );
    assert!(second[0].id > events.last().unwrap().id);
    assert_eq!(second[3].data["data"]["leg"]["endpoint"], "102");
    let second_ws = ws_until_ended(&mut ws, 1).await;
    assert_eq!(
        second_ws,
        second.iter().map(|e| e.data.clone()).collect::<Vec<_>>()
    );

    // Stopping the service ends the streams with a reason.
    drop(narrow);
    let stopping = tokio::spawn(service.stop());
    let last = sse.next().await.expect("a closing event");
    assert_eq!(last.event, "stream.closed");
    assert_eq!(last.data["reason"], "shutdown");
    assert_eq!(sse.next().await, None, "then the stream ends");
    let closed = ws_next(&mut ws).await.unwrap_err();
    assert!(closed.starts_with("1001 shutdown"), "{closed}");
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_with_last_event_id_gets_exactly_the_missed_events() {
    let (ami, service, _dir) = start("buffer_events = 200").await;
    let base = format!("http://{}", service.http_addr);
    // A reference client that stays connected throughout.
    let mut reference = SseClient::connect(&base, "?types=call.*", None).await;
    let mut leaving = SseClient::connect(&base, "?types=call.*", None).await;
    assert!(common::eventually(WAIT, || service.hub.subscribers() == 2).await);

    play(&ami, "answered_caller_hangup", 1).await;
    // The leaving client reads up to the answer, then disconnects.
    let mut seen = Vec::new();
    loop {
        let e = leaving.next().await.unwrap();
        let answered = e.event == "call.answered";
        seen.push(e);
        if answered {
            break;
        }
    }
    let last_seen = seen.last().unwrap().id.unwrap();
    drop(leaving);

    // While it is away: the rest of call 1, and all of call 2.
    play(&ami, "missed_caller_cancel", 2).await;
    let all = reference.until_ended(2).await;
    let missed: Vec<Sse> = all
        .iter()
        .filter(|e| e.id.unwrap() > last_seen)
        .cloned()
        .collect();
    // Call 1 ends (after its grace) while call 2 may already be under way: compare as sets.
    let mut missed_types = types_of(&missed);
    missed_types.sort();
    assert_eq!(
        missed_types,
        ["call.ended", "call.ended", "call.ringing", "call.started"]
    );

    // SSE: the Last-Event-ID header.
    let mut back = SseClient::connect(&base, "?types=call.*", Some(last_seen)).await;
    let mut resumed = Vec::new();
    for _ in 0..missed.len() {
        resumed.push(back.next().await.unwrap());
    }
    assert_eq!(resumed, missed, "exactly the missed events, in order");
    // And then live events, with nothing repeated.
    play(&ami, "busy_486", 3).await;
    let next_live = back.next().await.unwrap();
    assert_eq!(next_live.event, "call.started");
    assert!(next_live.id.unwrap() > missed.last().unwrap().id.unwrap());

    // WebSocket: the last_event_id query parameter, with a filter applied to the backlog.
    let mut ws = ws_connect(
        service.http_addr,
        &format!("?access_token=reader&types=call.ended&last_event_id={last_seen}"),
    )
    .await;
    let first = ws_next(&mut ws).await.unwrap();
    let second = ws_next(&mut ws).await.unwrap();
    let ended: Vec<&Sse> = missed.iter().filter(|e| e.event == "call.ended").collect();
    assert_eq!(first, ended[0].data);
    assert_eq!(second, ended[1].data);

    // An id older than the buffer: the stream says so first, then what it still has.
    let mut stale = SseClient::connect(&base, "", Some(1)).await;
    let reset = stale.next().await.unwrap();
    assert_eq!(reset.event, "stream.reset");
    assert_eq!(
        reset.id, None,
        "a reset does not move the client's position"
    );
    assert_eq!(reset.data["last_event_id"], 1);
    let oldest = reset.data["oldest_id"].as_u64().unwrap();
    assert_eq!(
        oldest,
        all[0].id.unwrap(),
        "everything of this run is still buffered"
    );
    assert_eq!(stale.next().await.unwrap().id, Some(oldest));
    let mut ws_stale = ws_connect(service.http_addr, "?access_token=reader&last_event_id=1").await;
    let reset = ws_next(&mut ws_stale).await.unwrap();
    assert_eq!(reset["type"], "stream.reset");
    assert_eq!(reset["oldest_id"], oldest);
    let _ = ws.close(None).await;
    service.stop().await.unwrap();
}

/// Opens an SSE stream on a raw socket with a tiny receive buffer and never reads from it.
async fn stalled_sse(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /api/v1/events HTTP/1.1\r\nHost: bridge\r\nAuthorization: Bearer reader\r\n\r\n",
        )
        .await
        .unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_is_cut_off_while_a_healthy_one_keeps_receiving() {
    let (ami, service, _dir) = start("client_buffer = 16\ncut_grace = \"1s\"").await;
    let base = format!("http://{}", service.http_addr);
    let mut stalled = stalled_sse(service.http_addr).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stalled_ws_tcp = socket.connect(service.http_addr).await.unwrap();
    let (stalled_ws, _) = tokio_tungstenite::client_async(
        format!("ws://{}/api/v1/ws?access_token=reader", service.http_addr),
        stalled_ws_tcp,
    )
    .await
    .unwrap();
    let mut healthy = SseClient::connect(&base, "", None).await;
    let mut healthy_ws = ws_connect(service.http_addr, "?access_token=reader").await;
    assert!(common::eventually(WAIT, || service.hub.subscribers() == 4).await);

    // Bulky events, in bursts the healthy clients can take (their queue holds 16), until both
    // stalled clients are cut (kernel and HTTP buffers absorb a few hundred KiB first).
    let reason = "x".repeat(4000);
    let t = chrono::Utc::now();
    let mut published = Vec::new();
    let stats = service.hub.stats();
    let mut bursts = 0;
    while stats.slow_clients_cut.load(Ordering::Relaxed) < 2 {
        bursts += 1;
        assert!(bursts < 2000, "the stalled clients were never cut off");
        for _ in 0..8 {
            published.push(
                service
                    .hub
                    .publish(&LiveEvent::gap(t, "bulk", t, t, &reason)),
            );
        }
        let want = *published.last().unwrap();
        loop {
            let e = healthy.next().await.unwrap();
            if e.id == Some(want) {
                break;
            }
        }
        loop {
            let v = ws_next(&mut healthy_ws).await.unwrap();
            if v["id"] == want {
                break;
            }
        }
    }
    assert_eq!(
        service.hub.subscribers(),
        2,
        "only the healthy clients are left"
    );

    // Real calls keep flowing to the healthy clients.
    play(&ami, "answered_caller_hangup", 1).await;
    let call = healthy.until_ended(1).await;
    assert_eq!(types_of(&call).last(), Some(&"call.ended"));
    let call_start = call
        .iter()
        .find(|e| e.event == "call.started")
        .unwrap()
        .id
        .unwrap();
    assert_eq!(
        ws_until_ended(&mut healthy_ws, 1).await.last().unwrap()["type"],
        "call.ended"
    );

    // The stalled SSE client: its connection was closed. What it can still read is a prefix
    // of the stream (maybe ending with the `stream.closed` reason), never the later call.
    let mut received = Vec::new();
    let read_all = async {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match stalled.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(WAIT, read_all)
        .await
        .expect("the stalled client's connection is closed");
    let text = String::from_utf8_lossy(&received);
    assert!(
        text.starts_with("HTTP/1.1 200 OK"),
        "{}",
        &text[..text.len().min(200)]
    );
    // Only complete events count: the connection was cut, maybe in the middle of one.
    let complete = &text[..text.rfind("\n\n").unwrap_or(0)];
    let ids: Vec<u64> = complete
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(!ids.is_empty(), "it got some events before stalling");
    assert_eq!(ids[..], published[..ids.len()], "a prefix of the stream");
    assert!(ids.len() < published.len(), "not everything");
    assert!(ids.iter().all(|&id| id < call_start));
    if text.contains("event: stream.closed") {
        assert!(text.contains("\"reason\":\"slow_consumer\""));
    }

    // The stalled WebSocket client: the socket ends (close frame, error or EOF) without
    // the later call.
    let mut stalled_ws = stalled_ws;
    let drain = async {
        let mut got_call = false;
        while let Some(Ok(msg)) = stalled_ws.next().await {
            match msg {
                Message::Text(t) => got_call |= t.contains("\"call.started\""),
                Message::Close(frame) => {
                    if let Some(f) = frame {
                        assert_eq!(u16::from(f.code), 1008, "policy: {}", f.reason);
                        assert!(f.reason.starts_with("slow_consumer"), "{}", f.reason);
                    }
                    break;
                }
                _ => {}
            }
        }
        got_call
    };
    let got_call = tokio::time::timeout(WAIT, drain)
        .await
        .expect("the stalled WebSocket is closed");
    assert!(!got_call, "no events after the cut");
    let _ = healthy_ws.send(Message::Close(None)).await;
    service.stop().await.unwrap();
}
