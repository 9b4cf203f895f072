//! `ctibridge replay JOURNAL`: runs a journal through the correlator offline and prints the
//! completed call records as JSON lines, in the order they completed.
//!
//! The same correlator runs live in `serve`, fed in the same journal order, so a replay shows
//! what the service produced (or would produce with a changed config).

use crate::config::Settings;
use crate::correlator::{Correlator, CorrelatorConfig, Output, PhoneIdentity};
use crate::journal::{JournalError, JournalReader};
use std::io::Write;
use std::path::Path;

/// The correlator's settings from the service config.
pub fn correlator_config(settings: &Settings) -> CorrelatorConfig {
    CorrelatorConfig {
        grace: settings.correlation.grace,
        phone_match_window: settings.correlation.phone_match_window,
        trunks: settings
            .pbx
            .iter()
            .flat_map(|p| p.trunks.iter().cloned())
            .collect(),
        phones: settings
            .phones
            .iter()
            .map(|p| PhoneIdentity {
                extension: p.extension.clone(),
                account: p.account.clone(),
                mac: p.mac.clone(),
            })
            .collect(),
        emit_updates: false,
    }
}

/// What a replay saw, for the summary line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub entries: u64,
    pub records: u64,
    /// Calls still live when the journal ended (not printed).
    pub live: usize,
    pub orphan_callbacks: usize,
    /// Torn or unreadable journal lines that were skipped.
    pub warnings: Vec<String>,
}

/// Replays `journal` (a file or a journal directory), writing each completed record as one
/// JSON line to `out`.
pub fn replay(
    journal: &Path,
    settings: &Settings,
    mut out: impl Write,
) -> Result<ReplaySummary, ReplayError> {
    let mut reader = JournalReader::open(journal)?;
    let mut correlator = Correlator::new(correlator_config(settings));
    let mut summary = ReplaySummary::default();
    let mut emit = |outputs: Vec<Output>, summary: &mut ReplaySummary| -> Result<(), ReplayError> {
        for output in outputs {
            if let Output::CallCompleted(record) = output {
                serde_json::to_writer(&mut out, &record)?;
                out.write_all(b"\n")?;
                summary.records += 1;
            }
        }
        Ok(())
    };
    for record in reader.by_ref() {
        let record = record?;
        summary.entries += 1;
        emit(correlator.handle(&record.entry), &mut summary)?;
    }
    emit(correlator.finish(), &mut summary)?;
    out.flush()?;
    summary.live = correlator.live_calls();
    summary.orphan_callbacks = correlator.orphans().len();
    summary.warnings = reader.warnings().to_vec();
    Ok(summary)
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding a record: {0}")]
    Json(#[from] serde_json::Error),
}
