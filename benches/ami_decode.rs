//! AMI decoding throughput on real Asterisk traffic.
//!
//! The stream is the message blocks of `../shared/brief/fixtures/*.ami` (banners removed),
//! concatenated and repeated until it holds at least 100,000 messages. It is decoded with
//! [`AmiCodec`] from a `BytesMut` filled 64 KiB at a time, as `FramedRead` does.
//!
//! Run: `cargo bench --bench ami_decode`.

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use ctibridge::ami::{AmiCodec, AmiFrame, AmiMessage};
use std::path::Path;
use std::time::Duration;
use tokio_util::codec::Decoder;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/brief/fixtures");
const MIN_MESSAGES: usize = 100_000;
const READ_SIZE: usize = 64 * 1024;

/// The test stream and the number of messages in it.
struct Stream {
    bytes: Vec<u8>,
    messages: usize,
    /// How many times the fixtures were repeated.
    passes: usize,
}

fn load_stream() -> Stream {
    let dir = Path::new(FIXTURES);
    assert!(
        dir.is_dir(),
        "AMI fixtures directory not found: looked in {}",
        dir.display()
    );
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("list fixtures")
        .map(|e| e.expect("fixture entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "ami"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no *.ami fixture in {}", dir.display());

    let mut one_pass = Vec::new();
    for path in &paths {
        let data = std::fs::read(path).expect("read fixture");
        let first_line_end = data.iter().position(|&b| b == b'\n').map_or(0, |n| n + 1);
        let body = if data[..first_line_end].contains(&b':') {
            &data[..]
        } else {
            &data[first_line_end..]
        };
        one_pass.extend_from_slice(body);
    }
    let per_pass = decode_stream(&one_pass);
    assert!(per_pass > 0);
    let passes = MIN_MESSAGES.div_ceil(per_pass);
    let bytes = one_pass.repeat(passes);
    let messages = decode_stream(&bytes);
    assert_eq!(messages, per_pass * passes);
    Stream {
        bytes,
        messages,
        passes,
    }
}

/// Decodes the whole stream in 64 KiB reads; returns the number of messages.
fn decode_stream(stream: &[u8]) -> usize {
    let mut codec = AmiCodec::new().without_banner();
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut messages = 0;
    let mut on_frame = |frame: AmiFrame| match frame {
        AmiFrame::Message(m) => {
            black_box(&m);
            messages += 1;
        }
        other => panic!("unexpected frame in the benchmark stream: {other:?}"),
    };
    for read in stream.chunks(READ_SIZE) {
        buf.extend_from_slice(read);
        while let Some(frame) = codec.decode(&mut buf).expect("decode") {
            on_frame(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode_eof") {
        on_frame(frame);
    }
    messages
}

/// Decodes every message of the stream once and keeps them (for the accessor benchmark).
fn decode_all(stream: &[u8]) -> Vec<AmiMessage> {
    let mut codec = AmiCodec::new().without_banner();
    let mut buf = BytesMut::from(stream);
    let mut out = Vec::new();
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode") {
        if let AmiFrame::Message(m) = frame {
            out.push(m);
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let stream = load_stream();
    eprintln!(
        "ami_decode: stream of {} messages, {} bytes",
        stream.messages,
        stream.bytes.len()
    );

    let mut group = c.benchmark_group("ami_decode_messages");
    group.throughput(Throughput::Elements(stream.messages as u64));
    group.bench_function("decode_64k_reads", |b| {
        b.iter(|| assert_eq!(decode_stream(black_box(&stream.bytes)), stream.messages))
    });
    group.finish();

    let mut group = c.benchmark_group("ami_decode_bytes");
    group.throughput(Throughput::Bytes(stream.bytes.len() as u64));
    group.bench_function("decode_64k_reads", |b| {
        b.iter(|| assert_eq!(decode_stream(black_box(&stream.bytes)), stream.messages))
    });
    group.finish();

    // Accessor cost only, no I/O: the messages are already decoded; one `get("Event")` each.
    // "hot": the messages of one pass over the fixtures (fits in cache, as a freshly decoded
    // message does); "100k": the whole stream (each lookup mostly waits on memory).
    let all = decode_all(&stream.bytes);
    assert_eq!(all.len(), stream.messages);
    let one_pass = &all[..stream.messages / stream.passes];
    let mut group = c.benchmark_group("ami_message_get");
    for (name, messages) in [("get_event_hot", one_pass), ("get_event_100k", &all[..])] {
        let with_event = messages.iter().filter(|m| m.get("Event").is_some()).count();
        group.throughput(Throughput::Elements(messages.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let n = black_box(messages)
                    .iter()
                    .filter(|m| m.get(black_box("Event")).is_some())
                    .count();
                assert_eq!(n, with_event);
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
