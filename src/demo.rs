//! `ctibridge demo`: the real service wired to a simulated Asterisk on loopback.
//!
//! The simulated Asterisk is a real AMI TCP server ([`crate::sim::ami_server`]) that demands
//! an MD5 login and plays the calls recorded from a real Asterisk 22 (embedded from
//! `assets/demo/`) in a loop, each replay with fresh Uniqueids so it looks like a new call.
//! The bridge connects to it exactly as it would to a production PBX.
//!
//! Three simulated desk phones (Yealink 101, Fanvil 102, Snom 103: real HTTP servers) are
//! configured as the bridge's phones. Every few seconds the demo toggles DND on one of them
//! through the real Active URI client; the phone answers like the real one and calls back, so
//! `GET /api/v1/phones` (token `demo-token`) shows the state the phones reported.

use crate::config::{self, PhoneVendor, Settings};
use crate::phone::client::{ActiveUriClient, PhoneCommand};
use crate::service::{shutdown_signal, Service};
use crate::sim::ami_server::{AmiServer, AmiServerConfig};
use crate::sim::fixtures::embedded_scenarios;
use crate::sim::phone::{PhoneSim, PhoneSimConfig};
use anyhow::Context;
use std::path::PathBuf;
use std::time::Duration;

/// Logs for the demo: call summaries visible by default.
pub const DEFAULT_LOG_FILTER: &str = "info,ctibridge::calls=debug";

const DEMO_USER: &str = "bridge";
const DEMO_SECRET: &str = "bridge-secret";
/// Bearer token the demo's API accepts (read, dial, admin).
pub const DEMO_TOKEN: &str = "demo-token";
const DEMO_PHONES: [(PhoneVendor, &str); 3] = [
    (PhoneVendor::Yealink, "101"),
    (PhoneVendor::Fanvil, "102"),
    (PhoneVendor::Snom, "103"),
];

/// Options of `ctibridge demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the demo keeps its journal (created if missing).
    #[arg(long, default_value = "ctibridge-demo")]
    pub data_dir: PathBuf,
    /// Replay speed of the recorded calls (1 = real time, 4 = four times faster).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Stop after this many calls (default: run until Ctrl-C).
    #[arg(long)]
    pub calls: Option<u64>,
}

/// Starts the simulated Asterisk, then the bridge against it, and plays calls until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let server = AmiServer::start(
        "127.0.0.1:0".parse()?,
        AmiServerConfig {
            username: DEMO_USER.into(),
            secret: DEMO_SECRET.into(),
            require_md5: true,
            banner: "Asterisk Call Manager/11.0.0".into(),
        },
    )
    .await
    .context("starting the simulated Asterisk")?;
    let mut phones = Vec::new();
    for (vendor, ext) in DEMO_PHONES {
        let phone = PhoneSim::start(
            "127.0.0.1:0".parse()?,
            PhoneSimConfig::for_vendor(vendor, ext),
        )
        .await
        .with_context(|| format!("starting simulated phone {ext}"))?;
        phones.push(phone);
    }
    let settings = demo_settings(&args, server.local_addr(), &phones)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;

    let service = Service::start(&settings).await?;
    for phone in &phones {
        phone.set_callback_base(Some(format!("http://{}/action-url", service.http_addr)));
    }
    println!(
        "ctibridge demo: simulated Asterisk AMI on {}, journal in {}",
        server.local_addr(),
        settings.journal.dir.display()
    );
    println!(
        "phones: curl -H 'Authorization: Bearer {DEMO_TOKEN}' http://{}/api/v1/phones",
        service.http_addr
    );
    println!("call events are logged below; Ctrl-C stops the demo");

    let player = tokio::spawn(play_forever(server.clone(), args.speed, args.calls));
    let toggler = tokio::spawn(toggle_dnd(service.active_uri.clone(), args.speed));
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = player => {
            // Let the last events reach the journal before stopping.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    toggler.abort();
    server.shutdown();
    for phone in &phones {
        phone.shutdown();
    }
    service.stop().await
}

/// The demo's settings: built-in defaults pointed at the simulators and the data directory.
fn demo_settings(
    args: &DemoArgs,
    ami: std::net::SocketAddr,
    phones: &[PhoneSim],
) -> anyhow::Result<Settings> {
    let mut env = vec![
        (
            "CTIBRIDGE__API__TOKENS__0__TOKEN".to_string(),
            DEMO_TOKEN.to_string(),
        ),
        (
            "CTIBRIDGE__API__TOKENS__0__SCOPES".to_string(),
            r#"["read","dial","admin"]"#.to_string(),
        ),
        ("CTIBRIDGE__PBX__0__HOST".to_string(), ami.ip().to_string()),
        (
            "CTIBRIDGE__PBX__0__PORT".to_string(),
            ami.port().to_string(),
        ),
        ("CTIBRIDGE__PBX__0__USERNAME".to_string(), DEMO_USER.into()),
        ("CTIBRIDGE__PBX__0__SECRET".to_string(), DEMO_SECRET.into()),
        (
            "CTIBRIDGE__STORAGE__URL".to_string(),
            format!("sqlite://{}", args.data_dir.join("ctibridge.db").display()),
        ),
        (
            "CTIBRIDGE__JOURNAL__DIR".to_string(),
            args.data_dir.join("journal").display().to_string(),
        ),
    ];
    for (i, phone) in phones.iter().enumerate() {
        let cfg = phone.config();
        let vendor = serde_json::to_value(cfg.vendor)?
            .as_str()
            .unwrap_or("yealink")
            .to_string();
        for (key, value) in [
            ("EXTENSION", cfg.extension.clone()),
            ("ADDRESS", phone.local_addr().to_string()),
            ("VENDOR", vendor),
            ("USERNAME", cfg.username.clone()),
            ("PASSWORD", cfg.password.clone()),
            ("MAC", cfg.mac.clone()),
        ] {
            env.push((format!("CTIBRIDGE__PHONES__{i}__{key}"), value));
        }
    }
    config::load_from_str("", &env).map_err(|e| anyhow::anyhow!("demo settings: {e}"))
}

/// Every few seconds, switches DND on or off on one of the demo phones through Active URI.
async fn toggle_dnd(client: ActiveUriClient, speed: f64) {
    let mut on = true;
    loop {
        for (_, ext) in DEMO_PHONES {
            tokio::time::sleep(Duration::from_secs_f64(7.0 / speed.max(0.01))).await;
            let command = if on {
                PhoneCommand::DndOn
            } else {
                PhoneCommand::DndOff
            };
            match client.execute(ext, command).await {
                Ok(_) => tracing::info!(
                    phone = ext,
                    dnd = on,
                    "demo: DND switched through Active URI"
                ),
                Err(e) => tracing::warn!(phone = ext, error = %e, "demo: DND command failed"),
            }
        }
        on = !on;
    }
}

/// Plays the embedded scenarios in turn with fresh ids, until `limit` calls (if any).
async fn play_forever(server: AmiServer, speed: f64, limit: Option<u64>) {
    let scenarios: Vec<_> = embedded_scenarios()
        .into_iter()
        .filter(|s| s.name != "register")
        .collect();
    if let Some(register) = embedded_scenarios()
        .into_iter()
        .find(|s| s.name == "register")
    {
        server.play(&register.instantiate(0), speed).await;
    }
    let mut generation = 1u64;
    loop {
        for scenario in &scenarios {
            if limit.is_some_and(|l| generation > l) {
                return;
            }
            tracing::info!(scenario = %scenario.name, generation, "simulated Asterisk plays a call");
            server.play(&scenario.instantiate(generation), speed).await;
            generation += 1;
            tokio::time::sleep(Duration::from_secs_f64(1.0 / speed.max(0.01))).await;
        }
    }
}
