//! `GET /readyz`: may this instance take traffic?
//!
//! Three checks, each real rather than a cached flag:
//! - **ami**: every configured PBX's AMI link is logged in and resynchronised
//!   ([`LinkStatus::up`](crate::ami::LinkStatus)). With no `[[pbx]]` configured the check
//!   passes and says so (a phones-only bridge is a valid setup).
//! - **store**: a write transaction can be begun and rolled back
//!   ([`Store::probe_writable`]): a connection is available and the database takes the write
//!   lock. Nothing is changed.
//! - **journal**: everything appended so far can be written and fsynced now
//!   ([`Journal::sync`]): the writer thread is alive and its last commit did not fail. When a
//!   commit is failing, unwritten data is pending and the sync reports the error.
//!
//! The store and journal checks run concurrently, each bounded by [`CHECK_TIMEOUT`], so a
//! probe answers within that time even when a disk hangs.

use crate::ami::AmiHandle;
use crate::journal::Journal;
use crate::store::Store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

/// How long the store or journal check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The `/readyz` body.
#[derive(Clone, Debug, Serialize)]
pub struct Readiness {
    /// All checks passed.
    pub ready: bool,
    pub checks: Checks,
}

/// Each check by name.
#[derive(Clone, Debug, Serialize)]
pub struct Checks {
    pub ami: Check,
    pub store: Check,
    pub journal: Check,
}

/// One check: whether it passed and, either way, what was found.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub ok: bool,
    pub detail: String,
    /// The AMI check's links, one per configured PBX.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pbx: Option<Vec<PbxLink>>,
}

/// One AMI link in the `ami` check.
#[derive(Clone, Debug, Serialize)]
pub struct PbxLink {
    pub name: String,
    pub logged_in: bool,
    /// Since when it has been in this state.
    pub since: DateTime<Utc>,
    /// Why the link went down last, or the last connect failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Check {
    fn new(ok: bool, detail: impl Into<String>) -> Check {
        Check {
            ok,
            detail: detail.into(),
            pbx: None,
        }
    }
}

/// Runs every check.
pub async fn readiness(ami: &[AmiHandle], store: &Store, journal: &Journal) -> Readiness {
    let ami = check_ami(ami);
    let (store, journal) = tokio::join!(check_store(store), check_journal(journal));
    Readiness {
        ready: ami.ok && store.ok && journal.ok,
        checks: Checks {
            ami,
            store,
            journal,
        },
    }
}

/// Every configured PBX logged in.
pub fn check_ami(handles: &[AmiHandle]) -> Check {
    if handles.is_empty() {
        return Check {
            pbx: Some(Vec::new()),
            ..Check::new(true, "no PBX configured")
        };
    }
    let links: Vec<PbxLink> = handles
        .iter()
        .map(|h| {
            let status = h.status();
            PbxLink {
                name: h.pbx().to_string(),
                logged_in: status.up,
                since: status.since,
                error: status.last_error.filter(|_| !status.up),
            }
        })
        .collect();
    let down: Vec<String> = links
        .iter()
        .filter(|l| !l.logged_in)
        .map(|l| match &l.error {
            Some(e) => format!("{} ({e})", l.name),
            None => format!("{} (connecting)", l.name),
        })
        .collect();
    let detail = if down.is_empty() {
        format!("{} of {} PBX logged in", links.len(), links.len())
    } else {
        format!(
            "{} of {} PBX not logged in: {}",
            down.len(),
            links.len(),
            down.join("; ")
        )
    };
    Check {
        pbx: Some(links),
        ..Check::new(down.is_empty(), detail)
    }
}

/// A write transaction begun and rolled back.
pub async fn check_store(store: &Store) -> Check {
    match tokio::time::timeout(CHECK_TIMEOUT, store.probe_writable()).await {
        Ok(Ok(())) => Check::new(true, "write transaction begun and rolled back"),
        Ok(Err(e)) => Check::new(false, e.to_string()),
        Err(_) => Check::new(
            false,
            format!(
                "no write transaction within {} s (database locked or disk hung)",
                CHECK_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// Everything appended so far written and fsynced.
pub async fn check_journal(journal: &Journal) -> Check {
    match tokio::time::timeout(CHECK_TIMEOUT, journal.sync()).await {
        Ok(Ok(())) => Check::new(true, "appended entries written and fsynced"),
        Ok(Err(e)) => {
            let stats = journal.stats();
            Check::new(
                false,
                format!(
                    "{e} ({} failed write attempts so far, {} bytes not yet durable)",
                    stats.write_errors, stats.pending_bytes
                ),
            )
        }
        Err(_) => Check::new(
            false,
            format!(
                "journal fsync did not complete within {} s ({} bytes not yet durable)",
                CHECK_TIMEOUT.as_secs(),
                journal.stats().pending_bytes
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalOptions;

    #[tokio::test]
    async fn zero_pbx_passes_and_says_so() {
        let c = check_ami(&[]);
        assert!(c.ok);
        assert_eq!(c.detail, "no PBX configured");
    }

    #[tokio::test]
    async fn store_and_journal_pass_when_writable_and_fail_when_closed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite::memory:").await.unwrap();
        let journal = Journal::open(dir.path(), JournalOptions::default()).unwrap();
        let r = readiness(&[], &store, &journal).await;
        assert!(r.ready, "{r:?}");
        store.close().await;
        journal.close().unwrap();
        let r = readiness(&[], &store, &journal).await;
        assert!(!r.ready);
        assert!(r.checks.ami.ok);
        assert!(!r.checks.store.ok, "{:?}", r.checks.store);
        assert!(!r.checks.journal.ok, "{:?}", r.checks.journal);
        let body = serde_json::to_value(&r).unwrap();
        assert_eq!(body["checks"]["journal"]["ok"], false);
        assert!(body["checks"]["store"].get("pbx").is_none());
    }

    #[tokio::test]
    async fn a_read_only_store_fails_the_store_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let rw = Store::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap();
        assert!(check_store(&rw).await.ok);
        let ro = Store::open(&format!("sqlite://{}?mode=ro", path.display()))
            .await
            .unwrap();
        let c = check_store(&ro).await;
        assert!(!c.ok);
        assert!(c.detail.contains("readonly"), "{}", c.detail);
    }
}
