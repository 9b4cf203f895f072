//! The AMI client against a simulated Asterisk over real TCP: MD5 login, a fixture replayed,
//! the connection cut in the middle of a message, two refused connects, then recovery.
//! The journal must hold exactly what the server sent completely, once, in order, plus one
//! gap marker after the resync.

use ctibridge::ami::{AmiClient, AmiClientOptions, AmiMessage};
use ctibridge::config::AmiAuth;
use ctibridge::ingest::Ingest;
use ctibridge::journal::{Input, Journal, JournalOptions, JournalReader};
use ctibridge::sim::ami_server::AmiServer;
use ctibridge::sim::fixtures::load_capture_file;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod common;

fn options(addr: std::net::SocketAddr) -> AmiClientOptions {
    common::ami_options(addr)
}

/// Waits until the journal holds every message the server wrote (plus `extra` gap entries)
/// and the count stays the same for a few polls.
async fn settled(server: &AmiServer, ingest: &Ingest, extra: usize) -> bool {
    let mut stable = 0;
    let mut last = usize::MAX;
    common::eventually(Duration::from_secs(10), || {
        let sent = server.sent_log().len();
        let journaled = ingest
            .stats()
            .journaled
            .load(std::sync::atomic::Ordering::Relaxed) as usize;
        if journaled == sent + extra && sent == last {
            stable += 1;
        } else {
            stable = 0;
        }
        last = sent;
        stable >= 3
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cut_refused_reconnect_resync_gap_and_nothing_lost_or_duplicated() {
    let server = common::ami_server("s3cret", true).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(
        dir.path(),
        JournalOptions {
            fsync_interval: Duration::from_millis(5),
            ..JournalOptions::default()
        },
    )
    .unwrap();
    let (ingest, mut rx) = Ingest::new(journal.clone(), 100_000);
    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let shutdown = CancellationToken::new();
    let (handle, task) = AmiClient::spawn(
        options(server.local_addr()),
        ingest.clone(),
        shutdown.clone(),
    );
    assert!(handle.wait_up(Duration::from_secs(5)).await, "first login");

    let scenario = load_capture_file(&common::fixture("answered_caller_hangup.ami")).unwrap();
    let msgs = scenario.instantiate(0);
    assert!(msgs.len() > 40, "fixture too small: {}", msgs.len());
    // The call is up (channels live) in the middle of the fixture.
    let half = msgs
        .iter()
        .position(|m| m.msg.event_name() == Some("BridgeEnter"))
        .expect("fixture has a BridgeEnter")
        + 2;
    server.play(&msgs[..half], 0.0).await;
    // `play` returns once events are queued; wait until they are written and journaled.
    assert!(
        settled(&server, &ingest, 0).await,
        "first half not journaled"
    );
    let sent_before_cut = server.sent_log().len();

    // Cut 37 bytes into the next message, refuse the next two connects, then accept.
    server.reject_next_connections(2);
    server.cut_current_session_after(37);
    server.play(&msgs[half..half + 1], 0.0).await;
    assert!(
        server.wait_for_logins(2, Duration::from_secs(10)).await,
        "client did not log in again"
    );
    assert!(handle.wait_up(Duration::from_secs(5)).await, "resync");
    server.play(&msgs[half + 1..], 0.0).await;

    // Wait until everything the server sent is journaled (plus the gap marker), then stop.
    assert!(
        settled(&server, &ingest, 1).await,
        "journal did not catch up"
    );
    let expected = server.sent_log();
    shutdown.cancel();
    task.await.unwrap();
    journal.sync().await.unwrap();
    drop(ingest);
    drain.await.unwrap();

    // The cut fell inside a message: the client saw (and dropped) a torn frame.
    assert_eq!(
        handle
            .stats()
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the cut should tear exactly one message"
    );
    // Four sessions: the first, two refused, the one that worked.
    assert_eq!(server.sessions_accepted(), 4);
    // MD5 each time: Challenge, then Login with AuthType MD5 and a Key, never a Secret.
    let actions = server.received_actions();
    let names: Vec<&str> = actions.iter().filter_map(|a| a.get("Action")).collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| n.eq_ignore_ascii_case("CoreShowChannels"))
            .count(),
        2,
        "a resync per login: {names:?}"
    );
    for login in actions.iter().filter(|a| a.get("Action") == Some("Login")) {
        assert_eq!(login.get("AuthType"), Some("MD5"));
        assert_eq!(login.get("Key").map(str::len), Some(32));
        assert!(login.get("Secret").is_none());
    }

    let records: Vec<_> = JournalReader::open(dir.path())
        .unwrap()
        .map(|r| r.unwrap().entry)
        .collect();
    let journaled: Vec<&AmiMessage> = records
        .iter()
        .filter_map(|e| match &e.input {
            Input::Ami { msg, .. } => Some(msg),
            _ => None,
        })
        .collect();
    let sent: Vec<&AmiMessage> = expected.iter().map(|s| &s.msg).collect();
    assert_eq!(
        journaled.len(),
        sent.len(),
        "journal holds every completely sent message once"
    );
    for (i, (j, s)) in journaled.iter().zip(&sent).enumerate() {
        assert_eq!(j, s, "message {i} differs");
        assert_eq!(j.raw(), s.raw(), "message {i} raw bytes differ");
    }
    assert!(sent_before_cut < sent.len());

    // Exactly one gap, right after the second session's channel list, covering the outage.
    let gaps: Vec<(usize, &Input)> = records
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.input, Input::Gap { .. }))
        .map(|(i, e)| (i, &e.input))
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let (
        at,
        Input::Gap {
            pbx,
            from,
            to,
            reason,
        },
    ) = gaps[0]
    else {
        unreachable!()
    };
    assert_eq!(&**pbx, "test");
    assert!(from < to, "gap from {from} to {to}");
    assert!(reason.contains("closed"), "reason: {reason}");
    let before = &records[at - 1];
    let Input::Ami { msg, .. } = &before.input else {
        panic!("gap not preceded by the resync list")
    };
    assert_eq!(msg.event_name(), Some("CoreShowChannelsComplete"));
    // The cut left live channels: the resync listed them.
    let listed = records[..at]
        .iter()
        .rev()
        .take_while(|e| matches!(&e.input, Input::Ami { msg, .. } if msg.event_name() != Some("FullyBooted")))
        .filter(|e| matches!(&e.input, Input::Ami { msg, .. } if msg.event_name() == Some("CoreShowChannel")))
        .count();
    assert!(listed >= 2, "resync listed {listed} channels");
    // The gap starts at the last message received before the cut.
    let last_before_cut = &records[sent_before_cut - 1];
    assert_eq!(*from, last_before_cut.t);
}

#[tokio::test]
async fn wrong_secret_is_refused_and_retried_without_journaling_a_gap() {
    let server = common::ami_server("right", true).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let (ingest, _rx) = Ingest::new(journal.clone(), 1000);
    let shutdown = CancellationToken::new();
    let mut opts = options(server.local_addr());
    opts.secret = "wrong".into();
    let (handle, task) = AmiClient::spawn(opts, ingest, shutdown.clone());
    assert!(!handle.wait_up(Duration::from_millis(600)).await);
    let status = handle.status();
    assert!(
        status
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("Authentication failed")),
        "{status:?}"
    );
    assert!(server.sessions_accepted() >= 2, "retries with back-off");
    shutdown.cancel();
    task.await.unwrap();
    journal.sync().await.unwrap();
    let gaps = JournalReader::open(dir.path())
        .unwrap()
        .filter(|r| matches!(r.as_ref().unwrap().entry.input, Input::Gap { .. }))
        .count();
    assert_eq!(gaps, 0);
}

#[tokio::test]
async fn actions_get_their_responses_and_event_lists() {
    let server = common::ami_server("s3cret", false).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let (ingest, _rx) = Ingest::new(journal, 1000);
    let shutdown = CancellationToken::new();
    let mut opts = options(server.local_addr());
    opts.auth = AmiAuth::Plain;
    let (handle, task) = AmiClient::spawn(opts, ingest, shutdown.clone());
    assert!(handle.wait_up(Duration::from_secs(5)).await);

    let pong = handle
        .send_action(AmiMessage::action("Ping"))
        .await
        .unwrap();
    assert!(pong.is_success());
    assert_eq!(pong.response.get("Ping"), Some("Pong"));
    assert!(pong.response.action_id().unwrap().starts_with("ctib-"));

    // A channel goes live; the list action returns it with the Complete event last.
    let newchannel = AmiMessage::event("Newchannel")
        .field("Channel", "PJSIP/101-00000001")
        .field("ChannelState", "4")
        .field("ChannelStateDesc", "Ring")
        .field("CallerIDNum", "101")
        .field("Uniqueid", "1795347642.1")
        .field("Linkedid", "1795347642.1")
        .build()
        .unwrap();
    server.send_event(&newchannel);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let list = handle
        .send_action(AmiMessage::action("CoreShowChannels"))
        .await
        .unwrap();
    let names: Vec<_> = list.events.iter().filter_map(|e| e.event_name()).collect();
    assert_eq!(names, ["CoreShowChannel", "CoreShowChannelsComplete"]);
    assert_eq!(list.events[0].get("Uniqueid"), Some("1795347642.1"));

    let unknown = handle
        .send_action(AmiMessage::action("NoSuchAction"))
        .await
        .unwrap();
    assert!(!unknown.is_success());
    shutdown.cancel();
    task.await.unwrap();
    // After shutdown, actions fail instead of hanging.
    assert!(handle
        .send_action(AmiMessage::action("Ping"))
        .await
        .is_err());
}

/// A link that stays open but goes silent (no Pong) is declared dead after `ping_timeout`,
/// reconnected, and the silent period is journaled as a gap.
#[tokio::test]
async fn missing_pong_ends_the_session_and_journals_a_gap() {
    let server = common::ami_server("s3cret", true).await;
    // Swallow Ping on the first session only: answer nothing.
    let swallowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let swallowed = swallowed.clone();
        server.set_action_handler(Box::new(move |action: &AmiMessage| {
            let is_ping = action
                .get("Action")
                .is_some_and(|a| a.eq_ignore_ascii_case("Ping"));
            (is_ping && !swallowed.swap(true, std::sync::atomic::Ordering::SeqCst)).then(Vec::new)
        }));
    }
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
    let (ingest, _rx) = Ingest::new(journal.clone(), 1000);
    let shutdown = CancellationToken::new();
    let mut opts = options(server.local_addr());
    opts.ping_interval = Duration::from_millis(100);
    opts.ping_timeout = Duration::from_millis(150);
    let (handle, task) = AmiClient::spawn(opts, ingest, shutdown.clone());
    assert!(handle.wait_up(Duration::from_secs(5)).await);
    assert!(
        server.wait_for_logins(2, Duration::from_secs(5)).await,
        "no reconnect after the missing Pong"
    );
    assert!(handle.wait_up(Duration::from_secs(5)).await);
    shutdown.cancel();
    task.await.unwrap();
    journal.sync().await.unwrap();
    let reasons: Vec<String> = JournalReader::open(dir.path())
        .unwrap()
        .filter_map(|r| match r.unwrap().entry.input {
            Input::Gap { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("ping timeout"), "{reasons:?}");
}
