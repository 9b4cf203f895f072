//! The `ctibridge` binary: parses the command line and hands off to the library.
//! Errors are reported here, at the edge, with their whole context chain.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use ctibridge::ami::{AmiCodec, AmiFrame};
use ctibridge::config;
use ctibridge::telemetry::{self, LogOutput};
use futures::StreamExt;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio_util::codec::FramedRead;

/// mimalloc instead of the system allocator: under phone-callback load glibc's malloc spent
/// about 15% of the server's CPU (free-list consolidation across worker threads); mimalloc's
/// per-thread heaps cut that (figures in `bench/action_url_load.sh` notes). Set here, in the
/// binary, so the library and its benches (which install a counting allocator) are unaffected.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "ctibridge",
    version,
    about = "Joins Asterisk AMI and desk-phone Action URL views of every call"
)]
struct Cli {
    /// Log output format (overrides `log.format` from the config).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogOutput>,
    /// More log detail: -v debug, -vv trace (RUST_LOG, when set, wins).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the service: connect to every [[pbx]], journal every input.
    Serve {
        /// Config file (default: ./ctibridge.toml, then /etc/ctibridge/ctibridge.toml, then built-in defaults).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run the service against a simulated Asterisk that plays recorded calls in a loop.
    Demo(ctibridge::demo::DemoArgs),
    /// Validate the config and print what was loaded (secrets masked); exit 1 on problems.
    CheckConfig {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Run a journal (file or directory) through the correlator offline; print the completed
    /// call records as JSON lines, in the order they completed.
    Replay {
        journal: PathBuf,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// AMI tools.
    #[command(subcommand)]
    Ami(AmiCommand),
    /// Journal tools.
    #[command(subcommand)]
    Journal(JournalCommand),
    /// Phone tools.
    #[command(subcommand)]
    Phones(PhonesCommand),
    /// Simulated peers for trying ctibridge without hardware.
    #[command(subcommand)]
    Sim(SimCommand),
}

#[derive(Subcommand, Debug)]
enum SimCommand {
    /// Run a simulated desk phone: a real HTTP server speaking the vendor's Active URI, firing
    /// Action URL callbacks to the bridge when its state changes.
    Phone {
        /// yealink, yealink-legacy, fanvil, snom, grandstream or htek.
        #[arg(long, default_value = "yealink")]
        vendor: String,
        #[arg(long, default_value = "101")]
        extension: String,
        /// Address the phone's web server listens on.
        #[arg(long, default_value = "127.0.0.1:18101")]
        listen: SocketAddr,
        /// Where to send callbacks, e.g. http://127.0.0.1:8080/action-url (none: no callbacks).
        #[arg(long)]
        callback: Option<String>,
        /// Web credentials the phone demands (HTTP Basic unless --digest).
        #[arg(long, default_value = "admin")]
        username: String,
        #[arg(long, default_value = "admin")]
        password: String,
        #[arg(long)]
        digest: bool,
        /// Seconds after a dial before the far end answers (call_established).
        #[arg(long, default_value_t = 2.0)]
        answer_after: f64,
    },
}

#[derive(Subcommand, Debug)]
enum PhonesCommand {
    /// Print the Action URL settings to paste into the phones' provisioning.
    Provision {
        /// yealink, yealink-legacy, fanvil, snom, grandstream or htek.
        #[arg(long)]
        vendor: String,
        /// How phones reach ctibridge, e.g. http://10.0.0.5:8080.
        #[arg(long)]
        bridge_url: String,
        /// Config file, for `action_url.path_secret`.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum AmiCommand {
    /// Decode raw AMI bytes: one JSON array of [key, value] pairs per message, in wire order.
    Decode {
        /// File to read, or `-` for standard input.
        #[arg(default_value = "-")]
        input: String,
        /// Largest message accepted, in bytes.
        #[arg(long, default_value_t = ctibridge::ami::DEFAULT_MAX_MESSAGE_BYTES)]
        max_message_bytes: usize,
    },
}

#[derive(Subcommand, Debug)]
enum JournalCommand {
    /// Read a journal (file or directory) and report entries per kind and any torn or bad line.
    Verify { path: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` sizes its runtime from the config (`[runtime]`), so it reads the config first;
    // every other command takes tokio's default (one worker per core).
    let mut preloaded = None;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Command::Serve { config } = &cli.command {
        match config::load(config.as_deref()) {
            Ok(loaded) => {
                builder.worker_threads(loaded.settings.runtime.workers());
                preloaded = Some(loaded);
            }
            Err(e) => {
                eprintln!("error: {:#}", anyhow::Error::from(e));
                return ExitCode::FAILURE;
            }
        }
    }
    let runtime = match builder.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, preloaded)) {
        Ok(code) => code,
        // `ctibridge replay … | head`: the reader left; that is not an error.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .map(|io| io.kind())
            .or_else(|| {
                cause
                    .downcast_ref::<serde_json::Error>()
                    .and_then(|j| j.io_error_kind())
            })
            == Some(std::io::ErrorKind::BrokenPipe)
    })
}

fn log_filter(verbose: u8, configured: &str) -> String {
    match verbose {
        0 => configured.to_string(),
        1 => "debug".to_string(),
        _ => "trace".to_string(),
    }
}

fn log_output(cli: Option<LogOutput>, configured: config::LogFormat) -> LogOutput {
    cli.unwrap_or(match configured {
        config::LogFormat::Text => LogOutput::Text,
        config::LogFormat::Json => LogOutput::Json,
    })
}

/// `preloaded`: the config `serve` read before the runtime started.
async fn run(cli: Cli, preloaded: Option<config::Loaded>) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve { .. } => {
            let loaded = preloaded.context("serve's config is read before the runtime starts")?;
            let s = &loaded.settings;
            telemetry::init(
                log_output(cli.log_format, s.log.format),
                &log_filter(cli.verbose, &s.log.level),
            );
            tracing::info!(
                source = %loaded.source,
                worker_threads = s.runtime.workers(),
                "configuration loaded"
            );
            ctibridge::service::serve(loaded.settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => {
            telemetry::init(
                cli.log_format.unwrap_or(LogOutput::Text),
                &log_filter(cli.verbose, ctibridge::demo::DEFAULT_LOG_FILTER),
            );
            ctibridge::demo::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => Ok(check_config(config.as_deref())),
        Command::Replay { journal, config } => {
            telemetry::init(
                cli.log_format.unwrap_or(LogOutput::Text),
                &log_filter(cli.verbose, "warn"),
            );
            let settings = config::load(config.as_deref())?.settings;
            let stdout = std::io::stdout();
            let out = std::io::BufWriter::new(stdout.lock());
            let summary = ctibridge::replay::replay(&journal, &settings, out)?;
            eprintln!(
                "replay: {} journal entries, {} completed records, {} calls still live at the end, {} orphan phone callbacks, {} skipped lines",
                summary.entries,
                summary.records,
                summary.live,
                summary.orphan_callbacks,
                summary.warnings.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Ami(AmiCommand::Decode {
            input,
            max_message_bytes,
        }) => {
            decode(&input, max_message_bytes).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sim(SimCommand::Phone {
            vendor,
            extension,
            listen,
            callback,
            username,
            password,
            digest,
            answer_after,
        }) => {
            telemetry::init(
                cli.log_format.unwrap_or(LogOutput::Text),
                &log_filter(cli.verbose, "info"),
            );
            use ctibridge::sim::phone::{PhoneSim, PhoneSimConfig, SimAuth};
            let vendor = parse_vendor(&vendor)?;
            let mut cfg = PhoneSimConfig::for_vendor(vendor, &extension);
            cfg.username = username;
            cfg.password = password;
            cfg.auth = if digest {
                SimAuth::Digest
            } else {
                SimAuth::Basic
            };
            cfg.callback_base = callback;
            cfg.answer_after = Some(std::time::Duration::from_secs_f64(answer_after.max(0.0)));
            let phone = PhoneSim::start(listen, cfg).await?;
            println!(
                "simulated {vendor:?} phone {extension} at {} (Ctrl-C to stop)",
                phone.base_url()
            );
            ctibridge::service::shutdown_signal().await;
            phone.shutdown();
            Ok(ExitCode::SUCCESS)
        }
        Command::Phones(PhonesCommand::Provision {
            vendor,
            bridge_url,
            config,
        }) => provision(&vendor, &bridge_url, config.as_deref()),
        Command::Journal(JournalCommand::Verify { path }) => {
            telemetry::init(cli.log_format.unwrap_or(LogOutput::Text), "warn");
            verify_journal(&path)
        }
    }
}

fn check_config(path: Option<&Path>) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            println!("# configuration OK, loaded from {}", loaded.source);
            println!("# effective settings (secrets masked):\n");
            print!("{}", loaded.settings.masked_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("configuration has problems:");
            for p in &e.problems {
                eprintln!("  - {}: {}", p.key, p.message);
            }
            ExitCode::FAILURE
        }
    }
}

/// `ami decode`: streams the input through the codec, one JSON line per message.
async fn decode(input: &str, max_message_bytes: usize) -> anyhow::Result<()> {
    let reader: Box<dyn tokio::io::AsyncRead + Unpin> = if input == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(
            tokio::fs::File::open(input)
                .await
                .with_context(|| format!("cannot open {input}"))?,
        )
    };
    let mut frames = FramedRead::with_capacity(
        reader,
        AmiCodec::with_max_message_bytes(max_message_bytes),
        64 * 1024,
    );
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut line = Vec::with_capacity(4096);
    while let Some(frame) = frames.next().await {
        match frame.with_context(|| format!("reading {input}"))? {
            AmiFrame::Banner(_) => {}
            AmiFrame::Message(msg) => {
                line.clear();
                let pairs: Vec<(&str, &str)> = msg.iter().collect();
                serde_json::to_writer(&mut line, &pairs)?;
                line.push(b'\n');
                out.write_all(&line)?;
            }
            AmiFrame::Malformed(e) => eprintln!("ctibridge: skipped: {e}"),
        }
    }
    out.flush()?;
    Ok(())
}

fn parse_vendor(vendor: &str) -> anyhow::Result<config::PhoneVendor> {
    serde_json::from_value(serde_json::Value::String(vendor.to_string())).with_context(|| {
        format!("unknown vendor {vendor:?}: use yealink, yealink-legacy, fanvil, snom, grandstream or htek")
    })
}

fn provision(vendor: &str, bridge_url: &str, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let vendor = parse_vendor(vendor)?;
    let secret = match config {
        Some(path) => config::load(Some(path))?.settings.action_url.path_secret,
        None => None,
    };
    let host = bridge_url
        .split("://")
        .nth(1)
        .unwrap_or(bridge_url)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    print!(
        "{}",
        ctibridge::phone::provisioning::action_url_settings(
            vendor,
            bridge_url,
            secret.as_deref(),
            host
        )
    );
    Ok(ExitCode::SUCCESS)
}

fn verify_journal(path: &Path) -> anyhow::Result<ExitCode> {
    use ctibridge::journal::{Input, JournalReader};
    let mut reader = JournalReader::open(path)?;
    let (mut ami, mut phone, mut gap) = (0u64, 0u64, 0u64);
    for record in reader.by_ref() {
        match record?.entry.input {
            Input::Ami { .. } => ami += 1,
            Input::Phone { .. } => phone += 1,
            Input::Gap { .. } => gap += 1,
        }
    }
    println!("entries: ami {ami}, phone {phone}, gap {gap}");
    let warnings = reader.warnings();
    for w in warnings {
        println!("warning: {w}");
    }
    println!("warnings: {}", warnings.len());
    Ok(ExitCode::SUCCESS)
}
