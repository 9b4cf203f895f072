//! `ctibridge serve`: sources → [`Ingest`] (journal, then forward) → consumer.
//!
//! Sources: one AMI client per `[[pbx]]`, and the HTTP server's Action URL receiver. Today
//! the consumer logs a one-line summary of every call event at debug level; the correlator
//! takes its place in the next stage of the project. The wiring stays the same: one task
//! owns the consumer and reads inputs in journal order.

use crate::ami::{AmiClient, AmiClientOptions, AmiHandle, AmiMessage};
use crate::config::Settings;
use crate::http::action_url::{CallbackPolicy, CallbackStats};
use crate::http::auth::TokenSet;
use crate::http::AppState;
use crate::ingest::Ingest;
use crate::journal::{Input, Journal, JournalEntry, JournalOptions};
use crate::phone::client::ActiveUriClient;
use crate::phone::registry::PhoneRegistry;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A running service: its AMI links, phones, HTTP address and journal, for status and tests.
pub struct Service {
    pub ami: Vec<AmiHandle>,
    pub journal: Journal,
    pub ingest: Ingest,
    pub phones: PhoneRegistry,
    /// Sends commands to phones (HTTP, or SIP NOTIFY through the first PBX).
    pub active_uri: ActiveUriClient,
    /// Where the HTTP server listens (the bound port when `http.listen` had port 0).
    pub http_addr: SocketAddr,
    pub callback_stats: Arc<CallbackStats>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    consumer: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
}

impl Service {
    /// Opens the journal, binds the HTTP listener, starts one AMI client per `[[pbx]]`.
    pub async fn start(settings: &Settings) -> anyhow::Result<Service> {
        let opts = JournalOptions {
            fsync_interval: settings.journal.fsync_interval,
            segment_max_bytes: settings.journal.segment_max_bytes,
        };
        let journal = Journal::open(&settings.journal.dir, opts).with_context(|| {
            format!(
                "cannot open the journal in {}",
                settings.journal.dir.display()
            )
        })?;
        let (ingest, rx) = Ingest::new(journal.clone(), settings.ingest.queue_capacity);
        let shutdown = CancellationToken::new();
        let mut ami = Vec::new();
        let mut tasks = Vec::new();
        for pbx in &settings.pbx {
            let opts = AmiClientOptions::from_settings(pbx);
            tracing::info!(pbx = %opts.pbx, address = %opts.address, auth = ?opts.auth, "starting AMI client");
            let (handle, task) = AmiClient::spawn(opts, ingest.clone(), shutdown.child_token());
            ami.push(handle);
            tasks.push(task);
        }
        let phones = PhoneRegistry::from_settings(&settings.phones);
        // `outgoing_uri` names the account at the PBX the phones register with.
        let pbx_host = settings
            .pbx
            .first()
            .map(|p| p.host.clone())
            .unwrap_or_else(|| "127.0.0.1".to_string());
        let mut active_uri = ActiveUriClient::new(phones.clone(), &settings.active_uri, pbx_host);
        if let Some(ami) = ami.first() {
            active_uri = active_uri.with_notify(ami.clone());
        }
        let callback_stats = Arc::new(CallbackStats::default());
        let listener = crate::http::bind(settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", settings.http.listen))?;
        let http_addr = listener.local_addr()?;
        let app = crate::http::router(AppState {
            ingest: ingest.clone(),
            phones: phones.clone(),
            tokens: TokenSet::new(&settings.api.tokens),
            callbacks: Arc::new(CallbackPolicy {
                allowed_networks: settings.action_url.allowed_networks.clone(),
                path_secret: settings.action_url.path_secret.clone(),
            }),
            callback_stats: callback_stats.clone(),
        });
        tasks.push(tokio::spawn(crate::http::serve(
            listener,
            app,
            shutdown.child_token(),
        )));
        tracing::info!(%http_addr, "HTTP listening: Action URL at /action-url/{{event}}, API at /api/v1");
        let consumer = tokio::spawn(consume(rx));
        Ok(Service {
            ami,
            journal,
            ingest,
            phones,
            active_uri,
            http_addr,
            callback_stats,
            tasks,
            consumer,
            shutdown,
        })
    }

    /// Stops the sources, lets the consumer drain, then flushes and fsyncs the journal.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        drop(self.ami);
        drop(self.ingest);
        let _ = self.consumer.await;
        self.journal.sync().await.context("final journal sync")?;
        self.journal.close().context("closing the journal")?;
        tracing::info!("journal flushed; bye");
        Ok(())
    }
}

/// Runs the service until SIGINT or SIGTERM.
pub async fn serve(settings: Settings) -> anyhow::Result<()> {
    let service = Service::start(&settings).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    service.stop().await
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (systemd stop).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The consumer of this stage: a debug line per call event, a warning per gap.
async fn consume(mut rx: mpsc::Receiver<JournalEntry>) {
    while let Some(entry) = rx.recv().await {
        match &entry.input {
            Input::Ami { pbx, msg } => {
                if let Some(line) = call_event_summary(msg) {
                    tracing::debug!(target: "ctibridge::calls", %pbx, "{line}");
                }
            }
            Input::Gap {
                pbx,
                from,
                to,
                reason,
            } => {
                tracing::warn!(target: "ctibridge::calls", %pbx, %from, %to, %reason, "gap: events in this period were not seen");
            }
            Input::Phone { .. } => {}
        }
    }
}

/// The events that follow a call (ami.md §2), summarised on one line; `None` for the rest.
pub fn call_event_summary(msg: &AmiMessage) -> Option<String> {
    let event = msg.event_name()?;
    let get = |k| msg.get(k).unwrap_or("");
    let line = match event {
        "Newchannel" => format!(
            "Newchannel {} from {} to {} ({})",
            get("Channel"),
            get("CallerIDNum"),
            get("Exten"),
            get("Uniqueid")
        ),
        "Newstate" => format!("Newstate {} {}", get("Channel"), get("ChannelStateDesc")),
        "DialBegin" => format!(
            "DialBegin {} -> {} ({})",
            get("Channel"),
            get("DestChannel"),
            get("DialString")
        ),
        "DialEnd" => format!(
            "DialEnd {} -> {} {}",
            get("Channel"),
            get("DestChannel"),
            get("DialStatus")
        ),
        "BridgeEnter" | "BridgeLeave" => format!(
            "{event} {} bridge {}",
            get("Channel"),
            get("BridgeUniqueid")
        ),
        "Hold" | "Unhold" => format!("{event} {}", get("Channel")),
        "BlindTransfer" => format!(
            "BlindTransfer by {} of {} to {} ({})",
            get("TransfererChannel"),
            get("TransfereeChannel"),
            get("Extension"),
            get("Result")
        ),
        "AttendedTransfer" => format!(
            "AttendedTransfer by {} to {} ({})",
            get("OrigTransfererChannel"),
            get("SecondTransfererChannel"),
            get("Result")
        ),
        "Hangup" => format!(
            "Hangup {} cause {} ({})",
            get("Channel"),
            get("Cause"),
            get("Cause-txt")
        ),
        "OriginateResponse" => format!(
            "OriginateResponse {} {} reason {}",
            get("Channel"),
            get("Response"),
            get("Reason")
        ),
        "CoreShowChannel" => format!(
            "CoreShowChannel {} {} ({})",
            get("Channel"),
            get("ChannelStateDesc"),
            get("Uniqueid")
        ),
        _ => return None,
    };
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_name_the_call_facts() {
        let m = AmiMessage::event("Hangup")
            .field("Channel", "PJSIP/101-00000001")
            .field("Cause", "16")
            .field("Cause-txt", "Normal Clearing")
            .build()
            .unwrap();
        assert_eq!(
            call_event_summary(&m).unwrap(),
            "Hangup PJSIP/101-00000001 cause 16 (Normal Clearing)"
        );
        let varset = AmiMessage::event("VarSet").build().unwrap();
        assert!(call_event_summary(&varset).is_none());
    }
}
