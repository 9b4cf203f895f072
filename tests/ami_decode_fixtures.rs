//! `ctibridge ami decode` and the AMI codec against the recorded AMI streams in
//! `../shared/brief/fixtures` (Asterisk 22 captures with a banner) and
//! `../shared/brief/fixtures/public` (third-party raw captures without one).
//!
//! The expected messages come from [`simple_split`], a deliberately naive reading of the wire
//! text written independently of `src/ami/codec.rs`, so the two can check each other.

use bytes::{Bytes, BytesMut};
use ctibridge::ami::{AmiCodec, AmiFrame};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use tokio_util::codec::Decoder;

/// Where CI puts the shared fixtures: `shared/` is cloned beside the repository.
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/brief/fixtures");

/// The third-party capture that is raw wire text although it ends in `.ami`.
const GOAMI2: &str = "goami2_call_chan_sip_channelvars.ami";

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

fn fixtures_dir() -> &'static Path {
    let dir = Path::new(FIXTURES);
    assert!(
        dir.is_dir(),
        "AMI fixtures directory not found: looked in {} (expected `shared/` to be checked out \
         beside the repository)",
        dir.display()
    );
    dir
}

fn list(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("read_dir entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
        .collect();
    files.sort();
    files
}

/// Every raw AMI stream: the recorded `*.ami` files and the raw public captures.
fn wire_files() -> Vec<PathBuf> {
    let dir = fixtures_dir();
    let recorded = list(dir, "ami");
    assert!(
        recorded.len() >= 12,
        "expected the 12 recorded *.ami fixtures in {}, found {}",
        dir.display(),
        recorded.len()
    );
    let public = dir.join("public");
    let mut texts = list(&public, "txt");
    assert!(
        !texts.is_empty(),
        "no raw *.txt captures found in {}",
        public.display()
    );
    let goami2 = public.join(GOAMI2);
    assert!(goami2.is_file(), "missing fixture {}", goami2.display());

    let mut files = recorded;
    files.append(&mut texts);
    files.push(goami2);
    files
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The naive reading of AMI wire text: lines end at `\n` with one trailing `\r` stripped; a
/// first line without `:` is the banner; blocks of lines end at an empty line (consecutive empty
/// lines make no block); a line's key ends at its first `": "`, or else at its first `:`.
/// A block that is not ended by an empty line (a cut stream) is not a message.
fn simple_split(data: &[u8]) -> Vec<Pairs> {
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    // The piece after the last "\n" is not a complete line: it can only be part of a block
    // that has no terminating empty line, and so never forms a message.
    lines.pop();
    let lines = lines
        .into_iter()
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line));
    let mut blocks = Vec::new();
    let mut block: Pairs = Vec::new();
    for (index, line) in lines.enumerate() {
        if index == 0 && !line.contains(&b':') {
            continue; // banner
        }
        if line.is_empty() {
            if !block.is_empty() {
                blocks.push(std::mem::take(&mut block));
            }
            continue;
        }
        block.push(split_line(line));
    }
    blocks
}

fn split_line(line: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if let Some(at) = line.windows(2).position(|w| w == b": ") {
        return (line[..at].to_vec(), line[at + 2..].to_vec());
    }
    match line.iter().position(|&b| b == b':') {
        Some(at) => (line[..at].to_vec(), line[at + 1..].to_vec()),
        None => panic!(
            "line without ':' in test input: {:?}",
            String::from_utf8_lossy(line)
        ),
    }
}

fn show(pairs: &Pairs) -> String {
    let shown: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            format!(
                "{}: {}",
                String::from_utf8_lossy(k),
                String::from_utf8_lossy(v)
            )
        })
        .collect();
    format!("{shown:#?}")
}

// ---------------------------------------------------------------------------------------------
// The binary
// ---------------------------------------------------------------------------------------------

/// Runs `ctibridge ami decode <arg>`, with `stdin` piped in when given.
fn run_decode(arg: &str, stdin: Option<&[u8]>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctibridge"));
    cmd.args(["ami", "decode", arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd
        .spawn()
        .expect("cannot start the ctibridge binary (CARGO_BIN_EXE_ctibridge)");
    // Write stdin from another thread so a large output cannot deadlock against it.
    let writer = stdin.map(|input| {
        let input = input.to_vec();
        let mut pipe = child.stdin.take().expect("stdin is piped");
        std::thread::spawn(move || {
            // The child may exit before reading everything; that shows up in its output.
            let _ = pipe.write_all(&input);
        })
    });
    let out = child.wait_with_output().expect("wait for ctibridge");
    if let Some(writer) = writer {
        writer.join().expect("stdin writer thread");
    }
    out
}

/// Checks the exit status and parses stdout: one JSON array of `[key, value]` per line.
fn decoded_lines(out: &Output, what: &str) -> Vec<Vec<(String, String)>> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`ctibridge ami decode` on {what} exited with {}; stderr:\n{stderr}",
        out.status
    );
    let stdout = std::str::from_utf8(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout for {what} is not UTF-8: {e}"));
    stdout
        .lines()
        .enumerate()
        .map(|(n, line)| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "{what}: output line {} is not a JSON array of [key, value] pairs ({e}): \
                     {line}\nstderr:\n{stderr}",
                    n + 1
                )
            })
        })
        .collect()
}

/// Compares the decoded output with the expected blocks, byte for byte.
fn assert_same_messages(what: &str, got: &[Vec<(String, String)>], want: &[Pairs], stderr: &[u8]) {
    for (n, (g, w)) in got.iter().zip(want).enumerate() {
        let g: Pairs = g
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        assert!(
            &g == w,
            "{what}: message {} differs\n decoded: {}\n    wire: {}",
            n + 1,
            show(&g),
            show(w)
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: decoded {} messages but the wire text has {} blank-line-terminated blocks; \
         stderr:\n{}",
        got.len(),
        want.len(),
        String::from_utf8_lossy(stderr)
    );
}

#[test]
fn cli_decodes_every_fixture_like_the_simple_split() {
    let mut total = 0;
    for path in wire_files() {
        let data = read(&path);
        let want = simple_split(&data);
        assert!(!want.is_empty(), "{} holds no message", path.display());
        let arg = path.to_str().expect("fixture path is UTF-8");
        let out = run_decode(arg, None);
        let got = decoded_lines(&out, arg);
        assert_same_messages(arg, &got, &want, &out.stderr);
        total += want.len();
    }
    assert!(total > 1000, "only {total} messages in all fixtures");
}

#[test]
fn cli_reads_stdin_like_a_file() {
    let path = fixtures_dir().join("blind_transfer.ami");
    let data = read(&path);
    let arg = path.to_str().expect("fixture path is UTF-8");
    let from_file = run_decode(arg, None);
    let from_stdin = run_decode("-", Some(&data));
    let file_lines = decoded_lines(&from_file, arg);
    let stdin_lines = decoded_lines(&from_stdin, "stdin");
    assert!(!file_lines.is_empty(), "no output for {arg}");
    assert_eq!(
        String::from_utf8_lossy(&from_stdin.stdout),
        String::from_utf8_lossy(&from_file.stdout),
        "`ami decode -` and `ami decode {arg}` print different output"
    );
    assert_eq!(stdin_lines.len(), simple_split(&data).len());
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn cli_stdin_cut_mid_message_prints_complete_messages_only() {
    let whole = b"Asterisk Call Manager/11.0.0\r\nEvent: A\r\nK: v\r\n\r\nEvent: B\r\nK: w\r\n\r\n";
    let cuts: [&[u8]; 4] = [
        b"Asterisk Call Manager/11.0.0\r\nEvent: A\r\nK: v\r\n\r\nEvent: B\r\nK: w\r\n",
        b"Asterisk Call Manager/11.0.0\r\nEvent: A\r\nK: v\r\n\r\nEvent: B\r\nK: w\r",
        b"Asterisk Call Manager/11.0.0\r\nEvent: A\r\nK: v\r\n\r\nEvent: B\r\nK",
        b"Asterisk Call Manager/11.0.0\r\nEvent: A\r\nK: v\r\n\r\nEv",
    ];
    let first = owned(&[("Event", "A"), ("K", "v")]);

    let out = run_decode("-", Some(whole));
    let lines = decoded_lines(&out, "uncut input");
    assert_eq!(
        lines,
        vec![first.clone(), owned(&[("Event", "B"), ("K", "w")])]
    );

    for cut in cuts {
        let what = format!("stdin {:?}", String::from_utf8_lossy(cut));
        let out = run_decode("-", Some(cut));
        let lines = decoded_lines(&out, &what);
        assert_eq!(lines, vec![first.clone()], "{what}");
        assert_eq!(simple_split(cut).len(), 1, "{what}");
        assert!(
            !out.stderr.is_empty(),
            "{what}: the torn last message must be reported on stderr"
        );
    }
}

#[test]
fn cli_stdin_mixed_crlf_and_lf() {
    let input: &[u8] = b"Asterisk Call Manager/11.0.0\n\
        Event: One\nA: 1\r\nB: x: y\n\r\n\
        Event: Two\r\nEmpty: \nNoSpace:\r\nTime: 12:30:00\r\n\n\r\n\n\
        Event: Three\r\nC: 3\n\n";
    let want = vec![
        owned(&[("Event", "One"), ("A", "1"), ("B", "x: y")]),
        owned(&[
            ("Event", "Two"),
            ("Empty", ""),
            ("NoSpace", ""),
            ("Time", "12:30:00"),
        ]),
        owned(&[("Event", "Three"), ("C", "3")]),
    ];
    let out = run_decode("-", Some(input));
    let got = decoded_lines(&out, "mixed line ends");
    assert_eq!(got, want);
    assert_same_messages("mixed line ends", &got, &simple_split(input), &out.stderr);

    // The same without a banner, all LF, and with a leading blank line.
    let input: &[u8] = b"\nEvent: One\nA: 1\n\nEvent: Two\r\n\r\n";
    let out = run_decode("-", Some(input));
    let got = decoded_lines(&out, "LF input without banner");
    assert_eq!(
        got,
        vec![
            owned(&[("Event", "One"), ("A", "1")]),
            owned(&[("Event", "Two")])
        ]
    );
    assert_same_messages("LF input", &got, &simple_split(input), &out.stderr);
}

// ---------------------------------------------------------------------------------------------
// The library
// ---------------------------------------------------------------------------------------------

/// One decoded frame, comparable across decoding runs.
#[derive(Debug, PartialEq)]
enum Seen {
    Banner(Bytes),
    Message {
        raw: Bytes,
        pairs: Vec<(String, String)>,
    },
    Malformed(String),
}

/// Decodes `data` the way `FramedRead` does, receiving it `chunk` bytes at a time.
fn decode_chunked(data: &[u8], chunk: usize) -> Vec<Seen> {
    let reads: Vec<&[u8]> = data.chunks(chunk).collect();
    decode_reads(AmiCodec::new(), &reads)
}

/// Decodes the given reads in turn, then the end of the stream.
fn decode_reads(mut codec: AmiCodec, reads: &[&[u8]]) -> Vec<Seen> {
    let mut buf = BytesMut::new();
    let mut seen = Vec::new();
    let mut record = |frame: AmiFrame| {
        seen.push(match frame {
            AmiFrame::Banner(b) => Seen::Banner(b),
            AmiFrame::Message(m) => Seen::Message {
                raw: m.raw().clone(),
                pairs: m.to_pairs(),
            },
            AmiFrame::Malformed(e) => Seen::Malformed(e.to_string()),
        })
    };
    for part in reads {
        buf.extend_from_slice(part);
        while let Some(frame) = codec.decode(&mut buf).expect("decode") {
            record(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf).expect("decode_eof") {
        record(frame);
    }
    seen
}

#[test]
fn library_decodes_fixtures_identically_for_every_chunk_size() {
    for path in wire_files() {
        let name = path.display();
        let data = read(&path);
        let whole = decode_chunked(&data, data.len());

        // Against the simple split: same messages, no malformed frame, banner iff expected.
        let want = simple_split(&data);
        let messages: Vec<Pairs> = whole
            .iter()
            .filter_map(|s| match s {
                Seen::Message { pairs, .. } => Some(
                    pairs
                        .iter()
                        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                        .collect(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(messages.len(), want.len(), "{name}: message count");
        assert!(
            messages == want,
            "{name}: decoded fields differ from the wire"
        );
        let malformed: Vec<&Seen> = whole
            .iter()
            .filter(|s| matches!(s, Seen::Malformed(_)))
            .collect();
        assert!(malformed.is_empty(), "{name}: {malformed:?}");
        let has_banner = !data.split(|&b| b == b'\n').next().unwrap().contains(&b':');
        assert_eq!(
            matches!(whole.first(), Some(Seen::Banner(_))),
            has_banner,
            "{name}: banner"
        );

        for chunk in [1, 7, 64, 4096] {
            let chunked = decode_chunked(&data, chunk);
            assert_eq!(chunked.len(), whole.len(), "{name}: chunks of {chunk}");
            for (n, (c, w)) in chunked.iter().zip(&whole).enumerate() {
                assert_eq!(c, w, "{name}: frame {n} differs with chunks of {chunk}");
            }
        }
    }
}

#[test]
fn simple_split_reads_the_wire_as_specified() {
    let input = b"Banner/1.0\r\nA: 1\r\nB:\nC: x: y\r\n\r\n\r\n\nD:e:f\n\nE: cut\r\n";
    let want: Vec<Pairs> = vec![
        vec![
            (b"A".to_vec(), b"1".to_vec()),
            (b"B".to_vec(), b"".to_vec()),
            (b"C".to_vec(), b"x: y".to_vec()),
        ],
        vec![(b"D".to_vec(), b"e:f".to_vec())],
    ];
    assert_eq!(simple_split(input), want);
}

/// What a small-limit codec makes of `reads`, in a short form for assertions.
fn outline(reads: &[&[u8]]) -> Vec<String> {
    decode_reads(AmiCodec::with_max_message_bytes(1024), reads)
        .into_iter()
        .map(|seen| match seen {
            Seen::Banner(b) => format!("banner of {} bytes", b.len()),
            Seen::Message { pairs, .. } => format!("{pairs:?}"),
            Seen::Malformed(e) if e.contains("larger than") => "oversized".to_string(),
            Seen::Malformed(e) => e,
        })
        .collect()
}

// Found by the fuzz target (`fuzz/`): when the line that crosses the size limit is found with
// more bytes already buffered, the codec drops the whole buffer, losing the messages after the
// oversized one, and it loses a blank line whose "\r" and "\n" arrive in different reads.
#[test]
fn oversized_message_does_not_swallow_the_next_ones() {
    let mut big = b"Event: Big\r\nX: ".to_vec();
    big.extend_from_slice(&[b'a'; 2000]);
    big.extend_from_slice(b"\r\nY: 1\r\n");
    let after: &[u8] = b"\r\nEvent: After\r\n\r\nEvent: Third\r\n\r\n";
    let want = [
        "oversized",
        r#"[("Event", "After")]"#,
        r#"[("Event", "Third")]"#,
    ];
    let whole = [big.as_slice(), after].concat();
    for reads in [
        vec![&whole[..]],
        vec![&big[..100], &big[100..1100], &big[1100..], after],
        vec![&big[..100], &big[100..], after],
        vec![
            &big[..100],
            &big[100..1100],
            &big[1100..],
            &after[..1],
            &after[1..],
        ],
    ] {
        let sizes: Vec<usize> = reads.iter().map(|r| r.len()).collect();
        assert_eq!(outline(&reads), want, "reads of {sizes:?} bytes");
    }

    // A message whose terminating "\r\n" is what crosses the limit.
    let mut edge = b"Event: Edge\r\nX: ".to_vec();
    edge.resize(1022, b'a');
    edge.extend_from_slice(b"\r\n");
    let tail: &[u8] = b"\r\nEvent: After\r\n\r\n";
    let whole = [edge.as_slice(), tail].concat();
    let cr_split = [edge.as_slice(), b"\r"].concat();
    for reads in [vec![&whole[..]], vec![&cr_split[..], &tail[1..]]] {
        assert_eq!(outline(&reads), ["oversized", r#"[("Event", "After")]"#]);
    }
}

#[test]
fn banner_over_the_limit_is_oversized_whatever_the_reads() {
    let mut input = vec![b'B'; 2000];
    input.extend_from_slice(b"\r\n\r\nEvent: A\r\n\r\n");
    let one_read = outline(&[&input]);
    let small_reads: Vec<&[u8]> = input.chunks(512).collect();
    assert_eq!(one_read, outline(&small_reads));
    assert_eq!(one_read, ["oversized", r#"[("Event", "A")]"#]);
}
