//! Logging setup: human-readable lines by default, JSON lines with `--log-format json`.
//!
//! The filter comes from `RUST_LOG` when set, else from the caller (config `log.level`, or
//! the `-v` flags), so an administrator can always turn one module up without editing files.

use std::io::IsTerminal;
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Output format of the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogOutput {
    Text,
    Json,
}

/// Installs the global subscriber writing to stderr. Safe to call once per process; later
/// calls are ignored (tests may call it more than once).
pub fn init(output: LogOutput, default_filter: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(default_filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match output {
        LogOutput::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_target(true)
                    // Colour codes only for a person at a terminal, not in journald or files.
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogOutput::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    let _ = result;
}
