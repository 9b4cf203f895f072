//! `ctibridge demo`: the real service wired to a simulated telephone system on loopback.
//!
//! What runs, all in this one process and all over real sockets:
//! - a simulated Asterisk ([`crate::sim::ami_server`]): a real AMI TCP server demanding an MD5
//!   login, which the bridge connects to exactly as to a production PBX;
//! - six simulated desk phones of different vendors ([`crate::sim::phone`]: Yealink, Fanvil,
//!   Snom, Grandstream, older Yealink, Htek), each a real HTTP server that obeys the vendor's
//!   Active URI commands and sends the vendor's Action URL callbacks to the bridge;
//! - the telephone system's "world" ([`crate::sim::pbx`]) that makes calls continuously
//!   between those phones and a carrier trunk — answered, missed, busy, held, transferred,
//!   inbound and outbound — reporting each over AMI as Asterisk 20/22 does while the phones
//!   report it through their callbacks; it answers the bridge's `Originate` (click-to-call
//!   through the PBX) and turns dials the bridge commands on a phone into calls; its people
//!   switch DND on their phones, with the `*78`/`*79` feature codes, or through the API as a
//!   CRM would, which also places click-to-calls now and then;
//! - the bridge itself ([`crate::service::Service`]) on embedded defaults, with its SQLite
//!   store and journal in the data directory, serving the dashboard at `/ui`.
//!
//! The demo prints the dashboard's address with the demo token in its fragment
//! (`/ui#token=demo-token`; the page takes it once into the tab's session storage).

use crate::config::{self, PhoneVendor, Settings};
use crate::phone::vendor::vendor_name;
use crate::service::{shutdown_signal, Service};
use crate::sim::ami_server::{AmiServer, AmiServerConfig};
use crate::sim::pbx::{ApiHook, ApiRequest, Extension, PbxWorld, WorldConfig};
use crate::sim::phone::{PhoneSim, PhoneSimConfig};
use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Logs for the demo: one line per simulated call and per bridge action.
pub const DEFAULT_LOG_FILTER: &str = "info";

const DEMO_USER: &str = "bridge";
const DEMO_SECRET: &str = "bridge-secret";
/// Bearer token the demo's API accepts (read, dial, admin).
pub const DEMO_TOKEN: &str = "demo-token";

/// The demo's desk phones: one of each vendor profile the bridge knows.
const DEMO_PHONES: [(PhoneVendor, &str, &str); 6] = [
    (PhoneVendor::Yealink, "101", "Alice"),
    (PhoneVendor::Fanvil, "102", "Bob"),
    (PhoneVendor::Snom, "103", "Carol"),
    (PhoneVendor::Grandstream, "104", "Dave"),
    (PhoneVendor::YealinkLegacy, "105", "Erin"),
    (PhoneVendor::Htek, "106", "Frank"),
];

fn positive_speed(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 1000.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a speed between 0 (exclusive) and 1000"
        )),
    }
}

/// Options of `ctibridge demo`.
#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Where the bridge's HTTP server (API, dashboard, phone callbacks) listens; port 0 picks a
    /// free port (the printed address shows it).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the demo keeps its SQLite database and journal (created if missing).
    #[arg(long, default_value = "ctibridge-demo")]
    pub data_dir: PathBuf,
    /// How fast the simulated time runs (1 = real time, 4 = four times faster).
    #[arg(long, default_value_t = 1.0, value_parser = positive_speed)]
    pub speed: f64,
    /// Stop after this many calls have been made and have ended (default: run until Ctrl-C).
    #[arg(long)]
    pub calls: Option<u64>,
    /// Seed of the simulated people's choices (who calls whom, how long): the same seed
    /// gives the same traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Starts the simulated telephone system, then the bridge against it, and makes calls until
/// Ctrl-C (or `--calls`).
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
    // The demo runs for hours: the server's log of sent messages (for tests) would only grow.
    server.keep_sent_log(false);
    let mut phones = Vec::new();
    for (vendor, ext, name) in DEMO_PHONES {
        let phone = PhoneSim::start(
            "127.0.0.1:0".parse()?,
            PhoneSimConfig {
                display_name: Some(name.to_owned()),
                ..PhoneSimConfig::for_vendor(vendor, ext)
            },
        )
        .await
        .with_context(|| format!("starting simulated phone {ext}"))?;
        phones.push(phone);
    }
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let settings = demo_settings(&args, server.local_addr(), &phones)?;
    let service = Service::start(&settings).await?;
    for phone in &phones {
        phone.set_callback_base(Some(format!("http://{}/action-url", service.http_addr)));
    }
    let base = base_url(service.http_addr);
    let world = PbxWorld::start(
        server.clone(),
        DEMO_PHONES
            .iter()
            .zip(&phones)
            .map(|((_, ext, name), p)| (Extension::new(ext, &format!("{name} {ext}")), p.clone()))
            .collect(),
        WorldConfig {
            speed: args.speed,
            seed: args.seed,
            max_calls: args.calls,
            ..WorldConfig::default()
        },
        Some(api_hook(base.clone())),
    );
    print_banner(&args, &base, &server, &phones, &settings);

    if !server.wait_for_logins(1, Duration::from_secs(10)).await {
        tracing::warn!("the bridge has not logged in to the simulated Asterisk yet");
    }
    world.register_phones().await;
    let traffic = {
        let world = world.clone();
        tokio::spawn(async move { world.run().await })
    };
    tokio::select! {
        _ = shutdown_signal() => {}
        calls = traffic => {
            let calls = calls.unwrap_or_default();
            // The last call's record completes `grace` after its last hangup.
            tokio::time::sleep(settings.correlation.grace + Duration::from_millis(1500)).await;
            let s = if calls == 1 { "" } else { "s" };
            println!("ctibridge demo: {calls} call{s} made; stopping");
        }
    }
    world.stop();
    server.shutdown();
    for phone in &phones {
        phone.shutdown();
    }
    service.stop().await
}

/// `http://<addr>`, with a loopback address when the server listens on all addresses.
fn base_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        std::net::IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    format!("http://{}", SocketAddr::new(ip, addr.port()))
}

fn print_banner(
    args: &DemoArgs,
    base: &str,
    server: &AmiServer,
    phones: &[PhoneSim],
    settings: &Settings,
) {
    println!("ctibridge demo");
    println!("  dashboard:  {base}/ui#token={DEMO_TOKEN}");
    println!("  API token:  {DEMO_TOKEN}  (scopes read, dial, admin)");
    println!("  try:        curl -H 'Authorization: Bearer {DEMO_TOKEN}' {base}/api/v1/calls");
    println!(
        "  Asterisk:   simulated, AMI on {} (user {DEMO_USER})",
        server.local_addr()
    );
    let list: Vec<String> = DEMO_PHONES
        .iter()
        .zip(phones)
        .map(|((vendor, ext, _), p)| format!("{ext} {} {}", vendor_name(*vendor), p.config().model))
        .collect();
    println!("  phones:     {}", list.join(", "));
    println!(
        "  data:       {} (SQLite {}, journal {})",
        args.data_dir.display(),
        settings.storage.url,
        settings.journal.dir.display()
    );
    println!(
        "  speed {} · seed {} · Ctrl-C stops the demo",
        args.speed, args.seed
    );
}

/// What the simulated CRM does, through the bridge's own HTTP API with the demo token.
fn api_hook(base: String) -> ApiHook {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    Arc::new(move |req| {
        let client = client.clone();
        let base = base.clone();
        Box::pin(async move {
            let sent = match &req {
                ApiRequest::Dnd { ext, on } => client
                    .put(format!("{base}/api/v1/phones/{ext}/dnd"))
                    .json(&serde_json::json!({ "enabled": on })),
                ApiRequest::Dial { from, to, via } => client
                    .post(format!("{base}/api/v1/dial"))
                    .json(&serde_json::json!({ "from": from, "to": to, "via": via })),
            }
            .bearer_auth(DEMO_TOKEN)
            .send()
            .await;
            match sent {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    tracing::warn!(?req, %status, %body, "simulated CRM: the API refused");
                }
                Err(e) => tracing::warn!(?req, error = %e, "simulated CRM: API request failed"),
            }
        })
    })
}

/// The demo's settings: built-in defaults pointed at the simulators and the data directory.
fn demo_settings(
    args: &DemoArgs,
    ami: SocketAddr,
    phones: &[PhoneSim],
) -> anyhow::Result<Settings> {
    let mut env = vec![
        (
            "CTIBRIDGE__HTTP__LISTEN".to_string(),
            args.listen.to_string(),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    #[test]
    fn options_and_their_defaults() {
        let d = Cli::try_parse_from(["demo"]).unwrap().demo;
        assert_eq!(d.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!((d.speed, d.seed, d.calls), (1.0, 1, None));
        let d = Cli::try_parse_from([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "4",
            "--calls",
            "3",
            "--seed",
            "9",
        ])
        .unwrap()
        .demo;
        assert_eq!(d.listen.port(), 0);
        assert_eq!((d.speed, d.seed, d.calls), (4.0, 9, Some(3)));
        for bad in ["0", "-1", "nan", "inf"] {
            assert!(
                Cli::try_parse_from(["demo", "--speed", bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn base_url_uses_loopback_for_any_address() {
        assert_eq!(
            base_url("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_url("127.0.0.1:41234".parse().unwrap()),
            "http://127.0.0.1:41234"
        );
    }
}
