//! The call record store against real SQLite databases: a file in a temporary directory and
//! an in-memory database.

use std::collections::HashSet;

use chrono::{DateTime, Duration, Utc};
use ctibridge::record::{
    CallRecord, Direction, Disposition, Leg, Party, PhoneView, Source, TimelineEntry, Transfer,
};
use ctibridge::store::{csv_header, csv_row, CallQuery, Checkpoint, Store, StoreError};
use tempfile::TempDir;

fn t0() -> DateTime<Utc> {
    "2026-11-22T10:00:00.250Z".parse().unwrap()
}

fn party(number: Option<&str>, name: Option<&str>, extension: Option<&str>) -> Party {
    Party {
        number: number.map(str::to_owned),
        name: name.map(str::to_owned),
        extension: extension.map(str::to_owned),
    }
}

fn leg(n: u32, endpoint: &str, sip_call_id: Option<&str>, at: DateTime<Utc>) -> Leg {
    Leg {
        channel: format!("PJSIP/{endpoint}-{n:08x}"),
        uniqueid: format!("1700000000.{n}"),
        endpoint: Some(endpoint.to_owned()),
        sip_call_id: sip_call_id.map(str::to_owned),
        phone: None,
        started_at: Some(at),
        answered_at: None,
        ended_at: Some(at + Duration::seconds(30)),
        hangup_cause: Some(16),
        hangup_cause_text: Some("Normal Clearing".into()),
        dial_status: None,
        missed: false,
    }
}

/// An answered internal call 101 → 102 with two legs and two timeline entries.
fn record(id: &str, started_at: DateTime<Utc>) -> CallRecord {
    CallRecord {
        id: id.to_owned(),
        pbx: "default".into(),
        linkedid: id.rsplit(':').next().unwrap().to_owned(),
        direction: Direction::Internal,
        from: party(Some("101"), Some("Alice"), Some("101")),
        to: party(Some("102"), Some("Bob"), Some("102")),
        started_at,
        answered_at: Some(started_at + Duration::seconds(3)),
        ended_at: Some(started_at + Duration::seconds(30)),
        ring_s: 3.0,
        talk_s: 27.125,
        hold_s: 0.0,
        disposition: Disposition::Answered,
        missed: false,
        answered_by: Some("102".into()),
        legs: vec![
            leg(1, "101", Some("a1@10.0.0.1"), started_at),
            leg(2, "102", Some("b2@10.0.0.2"), started_at),
        ],
        transfers: vec![],
        timeline: vec![
            TimelineEntry {
                at: started_at,
                source: Source::Ami,
                event: "Newchannel".into(),
                subject: Some("PJSIP/101-00000001".into()),
                detail: None,
            },
            TimelineEntry {
                at: started_at + Duration::seconds(3),
                source: Source::Phone,
                event: "call_established".into(),
                subject: Some("102".into()),
                detail: Some("via sip_call_id".into()),
            },
        ],
        correlation: vec![],
        gaps: vec![],
        dial_request_id: None,
        complete: true,
    }
}

/// A store in a fresh temporary directory (kept alive by the returned guard) and an
/// in-memory one: every behaviour test runs on both.
async fn stores() -> Vec<(Store, Option<TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ctibridge.db").display());
    vec![
        (Store::open(&url).await.unwrap(), Some(dir)),
        (Store::open("sqlite::memory:").await.unwrap(), None),
    ]
}

async fn count(store: &Store, table: &str, call_id: &str) -> i64 {
    let column = if table == "calls" { "id" } else { "call_id" };
    sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} = ?"))
        .bind(call_id)
        .fetch_one(store.pool())
        .await
        .unwrap()
}

async fn ids(store: &Store, q: CallQuery) -> Vec<String> {
    let page = store.list(&q).await.unwrap();
    page.records.into_iter().map(|r| r.id).collect()
}

#[tokio::test]
async fn upsert_is_idempotent_and_newer_versions_replace_children() {
    for (store, _guard) in stores().await {
        let id = "default:1700000000.1";
        let v1 = record(id, t0());
        store.upsert(&v1).await.unwrap();
        store.upsert(&v1).await.unwrap();
        assert_eq!(count(&store, "calls", id).await, 1);
        assert_eq!(count(&store, "call_legs", id).await, 2);
        assert_eq!(count(&store, "call_timeline", id).await, 2);
        assert_eq!(count(&store, "call_transfers", id).await, 0);
        // ext 101, 102 (from/to/answered_by/legs, deduplicated) + numbers 101, 102.
        assert_eq!(count(&store, "call_parties", id).await, 4);
        assert_eq!(store.get(id).await.unwrap(), Some(v1.clone()));
        assert_eq!(store.get("default:nope").await.unwrap(), None);

        // A newer version: a third leg (blind transfer to 103), more timeline, phone view.
        let mut v2 = v1.clone();
        v2.legs.push(leg(
            3,
            "103",
            Some("c3@10.0.0.3"),
            t0() + Duration::seconds(10),
        ));
        v2.legs[0].missed = true;
        v2.legs[1].phone = Some(PhoneView {
            mac: Some("001565aabbcc".into()),
            ip: Some("10.0.0.2".into()),
            model: Some("T46U".into()),
            call_handle: Some("77".into()),
        });
        v2.transfers.push(Transfer {
            at: Some(t0() + Duration::seconds(10)),
            kind: "blind".into(),
            by: Some("102".into()),
            to: Some("103".into()),
            result: Some("Success".into()),
        });
        v2.timeline.push(TimelineEntry {
            at: t0() + Duration::seconds(10),
            source: Source::Ami,
            event: "BlindTransfer".into(),
            subject: Some("PJSIP/102-00000002".into()),
            detail: None,
        });
        v2.answered_by = Some("103".into());
        store.upsert(&v2).await.unwrap();
        store.upsert(&v2).await.unwrap();
        assert_eq!(count(&store, "calls", id).await, 1);
        assert_eq!(count(&store, "call_legs", id).await, 3);
        assert_eq!(count(&store, "call_timeline", id).await, 3);
        assert_eq!(count(&store, "call_transfers", id).await, 1);
        assert_eq!(count(&store, "call_parties", id).await, 5);
        assert_eq!(store.get(id).await.unwrap(), Some(v2.clone()));
        let phone_model: Option<String> =
            sqlx::query_scalar("SELECT phone_model FROM call_legs WHERE call_id = ? AND idx = 1")
                .bind(id)
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert_eq!(phone_model.as_deref(), Some("T46U"));
        let missed: Vec<i64> =
            sqlx::query_scalar("SELECT missed FROM call_legs WHERE call_id = ? ORDER BY idx")
                .bind(id)
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(missed, [1, 0, 0]);

        // A version with fewer children removes the extra rows and their filter entries.
        let mut v3 = v1.clone();
        v3.legs.truncate(1);
        v3.answered_by = None;
        v3.to.extension = None;
        v3.to.number = Some("555".into());
        store.upsert(&v3).await.unwrap();
        assert_eq!(count(&store, "call_legs", id).await, 1);
        assert_eq!(count(&store, "call_transfers", id).await, 0);
        assert_eq!(store.get(id).await.unwrap(), Some(v3));
        let q = |ext: &str| CallQuery {
            ext: Some(ext.into()),
            ..CallQuery::default()
        };
        assert!(ids(&store, q("103")).await.is_empty());
        assert!(ids(&store, q("102")).await.is_empty());
        assert_eq!(ids(&store, q("101")).await, vec![id.to_owned()]);
    }
}

/// The records for the filter tests, `(name, record)`, one hour apart from `t0`.
fn filter_fixture() -> Vec<CallRecord> {
    let h = |n: i64| t0() + Duration::hours(n);
    // a: internal 101 → 102, answered.
    let a = record("default:a", h(0));
    // b: inbound +1 555 0100 → 101, not answered.
    let mut b = record("default:b", h(1));
    b.direction = Direction::Inbound;
    b.from = party(Some("+1 555 0100"), Some("ACME"), None);
    b.to = party(Some("101"), None, Some("101"));
    b.disposition = Disposition::NoAnswer;
    b.missed = true;
    b.answered_by = None;
    b.legs = vec![
        leg(1, "trunk", None, h(1)),
        leg(2, "101", Some("b@x"), h(1)),
    ];
    // c: outbound 102 → +4930123456, busy.
    let mut c = record("default:c", h(2));
    c.direction = Direction::Outbound;
    c.from = party(Some("102"), None, Some("102"));
    c.to = party(Some("+4930123456"), None, None);
    c.disposition = Disposition::Busy;
    c.answered_by = None;
    c.legs = vec![leg(1, "102", None, h(2)), leg(2, "trunk", None, h(2))];
    // d: inbound +15550100 → 103, answered by 103.
    let mut d = record("default:d", h(3));
    d.direction = Direction::Inbound;
    d.from = party(Some("+15550100"), None, None);
    d.to = party(Some("0301234"), None, Some("103"));
    d.answered_by = Some("103".into());
    d.legs = vec![leg(1, "trunk", None, h(3)), leg(2, "103", None, h(3))];
    // e: internal 104 → 105, failed, then transferred by 105 to 106.
    let mut e = record("default:e", h(4));
    e.from = party(Some("104"), None, Some("104"));
    e.to = party(Some("105"), None, Some("105"));
    e.disposition = Disposition::Failed;
    e.answered_by = None;
    e.legs = vec![leg(1, "104", None, h(4)), leg(2, "105", None, h(4))];
    e.transfers = vec![Transfer {
        at: Some(h(4)),
        kind: "blind".into(),
        by: Some("105".into()),
        to: Some("106".into()),
        result: Some("Success".into()),
    }];
    // f: outbound 104 → +49 30 999, answered by the far end (a number, not an extension).
    let mut f = record("default:f", h(5));
    f.direction = Direction::Outbound;
    f.from = party(Some("104"), None, Some("104"));
    f.to = party(Some("+49 30 999"), None, None);
    f.answered_by = Some("+4930999".into());
    f.legs = vec![leg(1, "104", None, h(5)), leg(2, "trunk", None, h(5))];
    vec![a, b, c, d, e, f]
}

#[tokio::test]
async fn filters() {
    let h = |n: i64| t0() + Duration::hours(n);
    for (store, _guard) in stores().await {
        for r in filter_fixture() {
            store.upsert(&r).await.unwrap();
        }
        let check = |q: CallQuery, expected: &'static [&'static str]| {
            let store = store.clone();
            async move {
                let got = ids(&store, q.clone()).await;
                let want: Vec<String> = expected.iter().map(|s| format!("default:{s}")).collect();
                assert_eq!(got, want, "{q:?}");
            }
        };
        let q = CallQuery::default;
        check(q(), &["f", "e", "d", "c", "b", "a"]).await;
        // since is inclusive, until exclusive.
        check(
            CallQuery {
                since: Some(h(4)),
                ..q()
            },
            &["f", "e"],
        )
        .await;
        check(
            CallQuery {
                until: Some(h(2)),
                ..q()
            },
            &["b", "a"],
        )
        .await;
        check(
            CallQuery {
                since: Some(h(1)),
                until: Some(h(3)),
                ..q()
            },
            &["c", "b"],
        )
        .await;
        let ext = |e: &str| CallQuery {
            ext: Some(e.into()),
            ..q()
        };
        check(ext("101"), &["b", "a"]).await;
        check(ext(" 103 "), &["d"]).await; // trimmed
        check(ext("102"), &["c", "a"]).await;
        check(ext("106"), &["e"]).await; // transfer target
        check(ext("trunk"), &["f", "d", "c", "b"]).await; // leg endpoint
        check(ext("999"), &[]).await;
        check(ext("+4930999"), &[]).await; // outbound answered_by is a number
        let number = |n: &str| CallQuery {
            number: Some(n.into()),
            ..q()
        };
        check(number("+15550100"), &["d", "b"]).await;
        check(number("+1 555 0100"), &["d", "b"]).await;
        check(number("15550100"), &[]).await; // the + is significant
        check(number("+4930123456"), &["c"]).await;
        check(number("+4930999"), &["f"]).await;
        check(number("0301234"), &["d"]).await;
        check(
            CallQuery {
                direction: Some(Direction::Inbound),
                ..q()
            },
            &["d", "b"],
        )
        .await;
        check(
            CallQuery {
                direction: Some(Direction::Outbound),
                ..q()
            },
            &["f", "c"],
        )
        .await;
        check(
            CallQuery {
                disposition: Some(Disposition::Answered),
                ..q()
            },
            &["f", "d", "a"],
        )
        .await;
        check(
            CallQuery {
                disposition: Some(Disposition::NoAnswer),
                ..q()
            },
            &["b"],
        )
        .await;
        // Combinations.
        check(
            CallQuery {
                direction: Some(Direction::Inbound),
                disposition: Some(Disposition::Answered),
                ..q()
            },
            &["d"],
        )
        .await;
        check(
            CallQuery {
                direction: Some(Direction::Inbound),
                ..ext("101")
            },
            &["b"],
        )
        .await;
        check(
            CallQuery {
                ext: Some("103".into()),
                ..number("+1 555 0100")
            },
            &["d"],
        )
        .await;
        check(
            CallQuery {
                ext: Some("101".into()),
                ..number("+15550100")
            },
            &["b"],
        )
        .await;
        check(
            CallQuery {
                since: Some(h(0) + Duration::minutes(30)),
                ..ext("101")
            },
            &["b"],
        )
        .await;
        check(
            CallQuery {
                until: Some(h(3)),
                ..number("+15550100")
            },
            &["b"],
        )
        .await;
        check(
            CallQuery {
                since: Some(h(2)),
                disposition: Some(Disposition::Answered),
                direction: Some(Direction::Outbound),
                ..ext("trunk")
            },
            &["f"],
        )
        .await;

        // Paging through a filtered result uses the same cursor scheme.
        let first = store
            .list(&CallQuery {
                limit: 1,
                ..ext("trunk")
            })
            .await
            .unwrap();
        assert_eq!(first.records[0].id, "default:f");
        let second = store
            .list(&CallQuery {
                limit: 1,
                cursor: first.next_cursor.clone(),
                ..ext("trunk")
            })
            .await
            .unwrap();
        assert_eq!(second.records[0].id, "default:d");
        assert!(second.next_cursor.is_some());
        let rest = store
            .list(&CallQuery {
                limit: 5,
                cursor: second.next_cursor,
                ..ext("trunk")
            })
            .await
            .unwrap();
        let rest: Vec<_> = rest.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(rest, ["default:c", "default:b"]);
    }
}

/// 237 records, inserted in a scrambled order, four at a time sharing one `started_at`.
fn many() -> Vec<CallRecord> {
    (0..237u32)
        .map(|i| (i * 97) % 237)
        .map(|i| {
            let mut r = record(
                &format!("default:{i:05}"),
                t0() + Duration::seconds(i64::from(i / 4)),
            );
            if i % 2 == 0 {
                r.direction = Direction::Inbound;
                r.legs.push(leg(3, "trunk", None, r.started_at));
            }
            r
        })
        .collect()
}

async fn walk(store: &Store, base: CallQuery) -> (Vec<String>, Vec<usize>) {
    let mut ids = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(&CallQuery {
                cursor: cursor.take(),
                ..base.clone()
            })
            .await
            .unwrap();
        sizes.push(page.records.len());
        ids.extend(page.records.into_iter().map(|r| r.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
        assert!(sizes.len() < 100, "pagination does not end");
    }
    (ids, sizes)
}

#[tokio::test]
async fn pagination_walks_every_record_once_in_order() {
    for (store, _guard) in stores().await {
        let records = many();
        store.upsert_many(&records, None).await.unwrap();

        let mut expected: Vec<(DateTime<Utc>, String, bool)> = records
            .iter()
            .map(|r| {
                (
                    r.started_at,
                    r.id.clone(),
                    r.direction == Direction::Inbound,
                )
            })
            .collect();
        expected.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        assert!(
            expected.windows(2).any(|w| w[0].0 == w[1].0),
            "the fixture must contain equal started_at values"
        );

        let (ids, sizes) = walk(
            &store,
            CallQuery {
                limit: 20,
                ..CallQuery::default()
            },
        )
        .await;
        let want: Vec<String> = expected.iter().map(|e| e.1.clone()).collect();
        assert_eq!(ids, want);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 237);
        assert_eq!(sizes, [vec![20; 11], vec![17]].concat());

        // The same through the direction index and through the party index.
        let want: Vec<String> = expected
            .iter()
            .filter(|e| e.2)
            .map(|e| e.1.clone())
            .collect();
        for q in [
            CallQuery {
                direction: Some(Direction::Inbound),
                limit: 20,
                ..CallQuery::default()
            },
            CallQuery {
                ext: Some("trunk".into()),
                limit: 7,
                ..CallQuery::default()
            },
        ] {
            let (ids, _) = walk(&store, q.clone()).await;
            assert_eq!(ids, want, "{q:?}");
        }

        // A page size that divides the total exactly ends without an empty page.
        let (ids, sizes) = walk(
            &store,
            CallQuery {
                direction: Some(Direction::Inbound),
                limit: 119,
                ..CallQuery::default()
            },
        )
        .await;
        assert_eq!(ids.len(), 119);
        assert_eq!(sizes, [119]);

        // Limits: 0 is the default, above the maximum is clamped.
        let page = store
            .list(&CallQuery {
                limit: 0,
                ..CallQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 50);
        let page = store
            .list(&CallQuery {
                limit: 100_000,
                ..CallQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 237);
        assert_eq!(page.next_cursor, None);
    }
}

#[tokio::test]
async fn bad_cursor_is_rejected() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    for r in many().into_iter().take(30) {
        store.upsert(&r).await.unwrap();
    }
    let page = store
        .list(&CallQuery {
            limit: 10,
            ..CallQuery::default()
        })
        .await
        .unwrap();
    let good = page.next_cursor.unwrap();
    for bad in [
        "not-a-cursor".to_owned(),
        good[..good.len() - 1].to_owned(),
        good[2..].to_owned(),
        "00".repeat(40),
        format!("{good}zz"),
    ] {
        let err = store
            .list(&CallQuery {
                cursor: Some(bad.clone()),
                ..CallQuery::default()
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::BadCursor(_)), "{bad:?}: {err}");
    }
}

/// A minimal RFC 4180 reader for checking the export: records of fields.
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => {
                assert!(c != '\n' && c != '\r', "bare line break outside quotes");
                field.push(c);
            }
        }
    }
    assert!(
        !quoted && field.is_empty() && row.is_empty(),
        "unterminated"
    );
    rows
}

#[test]
fn csv_export() {
    assert_eq!(
        csv_header(),
        "id,pbx,linkedid,direction,from_number,from_name,from_extension,to_number,to_name,\
         to_extension,started_at,answered_at,ended_at,ring_s,talk_s,hold_s,disposition,missed,\
         answered_by,transfers,legs,sip_call_ids,dial_request_id\r\n"
    );
    let mut records = filter_fixture();
    records[0].from.name = Some("Smith, \"Bob\"\nJr.".into());
    records[0].dial_request_id = Some("req-1".into());
    records[0]
        .legs
        .push(leg(3, "103", Some("a1@10.0.0.1"), t0())); // duplicate Call-ID
    records[1].to.name = Some("line\r\nbreak".into());

    let mut text = csv_header().to_owned();
    for r in &records {
        text.push_str(&csv_row(r));
    }
    let rows = parse_csv(&text);
    assert_eq!(rows.len(), 1 + records.len());
    let header = &rows[0];
    assert!(rows.iter().all(|r| r.len() == header.len()));
    let col =
        |row: &Vec<String>, name: &str| row[header.iter().position(|h| h == name).unwrap()].clone();
    let a = &rows[1];
    assert_eq!(col(a, "id"), "default:a");
    assert_eq!(col(a, "from_name"), "Smith, \"Bob\"\nJr.");
    assert_eq!(col(a, "direction"), "internal");
    assert_eq!(col(a, "started_at"), "2026-11-22T10:00:00.250000Z");
    assert_eq!(col(a, "answered_at"), "2026-11-22T10:00:03.250000Z");
    assert_eq!(col(a, "ring_s"), "3.000");
    assert_eq!(col(a, "talk_s"), "27.125");
    assert_eq!(col(a, "missed"), "false");
    assert_eq!(col(a, "answered_by"), "102");
    assert_eq!(col(a, "legs"), "3");
    assert_eq!(col(a, "transfers"), "0");
    assert_eq!(col(a, "sip_call_ids"), "a1@10.0.0.1;b2@10.0.0.2");
    assert_eq!(col(a, "dial_request_id"), "req-1");
    let b = &rows[2];
    assert_eq!(col(b, "to_name"), "line\r\nbreak");
    assert_eq!(col(b, "from_number"), "+1 555 0100");
    assert_eq!(col(b, "from_extension"), "");
    assert_eq!(col(b, "disposition"), "no_answer");
    assert_eq!(col(b, "missed"), "true");
    assert_eq!(col(b, "answered_by"), "");
    assert_eq!(col(&rows[5], "transfers"), "1");
    // A row without special characters is not quoted at all.
    assert!(!csv_row(&records[2]).contains('"'));
}

#[tokio::test]
async fn checkpoint_round_trip() {
    for (store, _guard) in stores().await {
        assert_eq!(store.checkpoint().await.unwrap(), None);
        let cp = Checkpoint {
            segment: 3,
            offset: 123_456,
            at: "2026-11-22T10:00:00.123456789Z".parse().unwrap(),
        };
        store.set_checkpoint(&cp).await.unwrap();
        assert_eq!(store.checkpoint().await.unwrap(), Some(cp));
        let cp = Checkpoint {
            segment: 4,
            offset: 0,
            at: Utc::now(),
        };
        store.set_checkpoint(&cp).await.unwrap();
        assert_eq!(store.checkpoint().await.unwrap(), Some(cp.clone()));
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM checkpoint")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, 1);

        // Records and checkpoint together.
        let cp2 = Checkpoint {
            segment: 4,
            offset: 999,
            at: Utc::now(),
        };
        let r = record("default:x", t0());
        store
            .upsert_many(std::slice::from_ref(&r), Some(&cp2))
            .await
            .unwrap();
        assert_eq!(store.checkpoint().await.unwrap(), Some(cp2.clone()));
        assert_eq!(store.get("default:x").await.unwrap(), Some(r));

        // Positions SQL cannot hold are refused, and the stored one is kept.
        let huge = Checkpoint {
            segment: u64::MAX,
            ..cp
        };
        assert!(matches!(
            store.set_checkpoint(&huge).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.checkpoint().await.unwrap(), Some(cp2));
    }
}

#[tokio::test]
async fn file_store_survives_reopen_and_migrations_are_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    // The directory does not exist yet: open creates it and the file.
    let path = dir.path().join("data").join("ctibridge.db");
    let url = format!("sqlite://{}", path.display());
    let records = filter_fixture();
    let cp = Checkpoint {
        segment: 7,
        offset: 4096,
        at: Utc::now(),
    };
    {
        let store = Store::open(&url).await.unwrap();
        for r in &records {
            store.upsert(r).await.unwrap();
        }
        store.set_checkpoint(&cp).await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(fk, 1);
        store.close().await;
    }
    assert!(path.exists());
    for _ in 0..2 {
        let store = Store::open(&url).await.unwrap();
        for r in &records {
            assert_eq!(store.get(&r.id).await.unwrap().as_ref(), Some(r));
        }
        assert_eq!(ids(&store, CallQuery::default()).await.len(), records.len());
        assert_eq!(store.checkpoint().await.unwrap(), Some(cp.clone()));
        let applied: Vec<(i64, bool)> =
            sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                .fetch_all(store.pool())
                .await
                .unwrap();
        // Every migration in migrations/ applied once and successfully.
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sql")
            })
            .count();
        assert_eq!(applied.len(), on_disk, "{applied:?}");
        assert_eq!(applied[0], (1, true));
        assert!(applied.iter().all(|(_, ok)| *ok), "{applied:?}");
        store.close().await;
    }
}

#[tokio::test]
async fn deleting_a_call_removes_its_children() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let r = record("default:gone", t0());
    store.upsert(&r).await.unwrap();
    sqlx::query("DELETE FROM calls WHERE id = ?")
        .bind(&r.id)
        .execute(store.pool())
        .await
        .unwrap();
    for table in ["call_legs", "call_timeline", "call_parties"] {
        assert_eq!(count(&store, table, &r.id).await, 0, "{table}");
    }
}

#[tokio::test]
async fn concurrent_writers_on_a_file_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("c.db").display());
    let store = Store::open(&url).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..25 {
                    let mut r = record(&format!("default:{w}-{i}"), t0());
                    store.upsert(&r).await.unwrap();
                    r.talk_s += 1.0;
                    store.upsert(&r).await.unwrap();
                    store.list(&CallQuery::default()).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM calls")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(total, 200);
}

#[tokio::test]
async fn unrepresentable_input_is_refused() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let mut r = record("default:nan", t0());
    r.talk_s = f64::NAN;
    assert!(matches!(
        store.upsert(&r).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.get("default:nan").await.unwrap(), None);
    assert!(matches!(
        Store::open("postgres://localhost/ctibridge").await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn filtered_lists_use_indexes() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    store.upsert_many(&many(), None).await.unwrap();
    let uses_index = |plan: &[String]| {
        plan.iter()
            .any(|l| l.contains("USING INDEX") || l.contains("USING COVERING INDEX"))
    };
    let cases = [
        (
            CallQuery {
                ext: Some("101".into()),
                ..CallQuery::default()
            },
            "call_parties_value",
        ),
        (
            CallQuery {
                number: Some("+1 555 0100".into()),
                ..CallQuery::default()
            },
            "call_parties_value",
        ),
        (
            CallQuery {
                since: Some(t0()),
                until: Some(t0() + Duration::hours(1)),
                ..CallQuery::default()
            },
            "calls_started_at",
        ),
        (CallQuery::default(), "calls_started_at"),
    ];
    for (q, index) in cases {
        let plan = store.explain_list(&q).await.unwrap();
        assert!(uses_index(&plan), "{q:?}: {plan:#?}");
        assert!(plan.iter().any(|l| l.contains(index)), "{q:?}: {plan:#?}");
        // The index also yields list order: no sort of the whole result.
        assert!(
            !plan.iter().any(|l| l.contains("TEMP B-TREE")),
            "{q:?}: {plan:#?}"
        );
    }
    // With a cursor too (the keyset condition must stay an index range).
    let page = store
        .list(&CallQuery {
            limit: 5,
            ext: Some("101".into()),
            ..CallQuery::default()
        })
        .await
        .unwrap();
    let plan = store
        .explain_list(&CallQuery {
            cursor: page.next_cursor,
            ext: Some("101".into()),
            ..CallQuery::default()
        })
        .await
        .unwrap();
    assert!(uses_index(&plan), "{plan:#?}");
    assert!(!plan.iter().any(|l| l.contains("TEMP B-TREE")), "{plan:#?}");
}

#[tokio::test]
async fn click_to_call_request_finds_its_record() {
    let store = Store::open("sqlite::memory:").await.unwrap();
    let mut r = record("default:dial", t0());
    r.dial_request_id = Some("req-7".into());
    store.upsert(&r).await.unwrap();
    store.upsert(&record("default:other", t0())).await.unwrap();
    assert_eq!(store.find_by_dial_request("req-7").await.unwrap(), Some(r));
    assert_eq!(store.find_by_dial_request("req-8").await.unwrap(), None);
}
