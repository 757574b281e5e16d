//! The main job end to end on the simulated backends — no keys, no network:
//! a customer orders a Windows plan, pays (a signed webhook), and gets a running machine,
//! its credentials and a ready `.rdp` file. Boot time is scaled down to a few seconds.
//!
//! ```text
//! cargo run --example quickstart                    # password masked
//! cargo run --example quickstart -- --show-password
//! cargo run --example quickstart -- --plan ubuntu --out /tmp
//! cargo run --example quickstart --features sqlite -- --db sqlite://nemordp.db
//! cargo run --example quickstart --features postgres -- --db postgres://postgres@127.0.0.1:5432/test
//! ```
//!
//! The store is in memory unless `--db` names a SQLite file (created if missing) or a
//! PostgreSQL database (migrated on connect); each needs its cargo feature.

use std::{io::Write as _, path::PathBuf, sync::Arc, time::Duration};

use nemordp::{
    Asset, Currency, Money,
    order::{Customer, OrderState},
    payment::WebhookRequest,
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{Provisioner, ProvisionerConfig, Stage},
    seal::Sealer,
    sim::{cloud::SimCloud, notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
    store::Store,
};
use secrecy::{ExposeSecret, SecretString};

struct Args {
    show_password: bool,
    plan: String,
    out: PathBuf,
    db: Option<String>,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        show_password: false,
        plan: "win".into(),
        out: std::env::temp_dir(),
        db: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--show-password" => a.show_password = true,
            "--plan" => a.plan = it.next().ok_or("--plan needs win or ubuntu")?,
            "--out" => a.out = it.next().ok_or("--out needs a directory")?.into(),
            "--db" => {
                a.db = Some(
                    it.next()
                        .ok_or("--db needs a URL: sqlite://FILE or postgres://…")?,
                );
            }
            "-h" | "--help" => {
                return Err(
                    "usage: quickstart [--show-password] [--plan win|ubuntu] [--out DIR] \
                     [--db sqlite://FILE | postgres://USER@HOST:PORT/DB]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if a.plan != "win" && a.plan != "ubuntu" {
        return Err(format!("unknown plan {:?}: use win or ubuntu", a.plan));
    }
    Ok(a)
}

/// The store `--db` names (in memory without it).
async fn open_store(db: Option<&str>) -> Result<(Arc<dyn Store>, String), String> {
    match db {
        None => Ok((Arc::new(MemoryStore::new()), "in memory".to_owned())),
        Some(url) if url.starts_with("sqlite:") => open_sqlite(url).await,
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            open_postgres(url).await
        }
        Some(other) => Err(format!(
            "unsupported --db {other:?}: use sqlite://FILE or postgres://USER@HOST:PORT/DB"
        )),
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(url: &str) -> Result<(Arc<dyn Store>, String), String> {
    let store = nemordp::stores::SqliteStore::connect(url)
        .await
        .map_err(|e| format!("cannot open {url}: {e}"))?;
    Ok((Arc::new(store), format!("SQLite {url}")))
}

#[cfg(not(feature = "sqlite"))]
#[allow(clippy::unused_async)] // same signature as the feature-on version
async fn open_sqlite(url: &str) -> Result<(Arc<dyn Store>, String), String> {
    Err(format!(
        "--db {url} needs the sqlite feature: \
         cargo run --example quickstart --features sqlite -- --db {url}"
    ))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> Result<(Arc<dyn Store>, String), String> {
    let store = nemordp::stores::PostgresStore::connect(url)
        .await
        .map_err(|e| format!("cannot open the PostgreSQL database: {e}"))?;
    Ok((Arc::new(store), "PostgreSQL".to_owned()))
}

#[cfg(not(feature = "postgres"))]
#[allow(clippy::unused_async)] // same signature as the feature-on version
async fn open_postgres(_url: &str) -> Result<(Arc<dyn Store>, String), String> {
    Err("--db postgres://… needs the postgres feature: \
         cargo run --example quickstart --features postgres -- --db postgres://…"
        .to_owned())
}

fn bar(percent: u8, message: &str) {
    let filled = usize::from(percent.min(100)) / 5;
    print!(
        "\r  [{}{}] {percent:>3}%  {message:<50}",
        "#".repeat(filled),
        "-".repeat(20 - filled)
    );
    let _ = std::io::stdout().flush();
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = match args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };

    let (store, store_name) = match open_store(args.db.as_deref()).await {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };

    // The simulated cloud: a Windows boot that really takes 30-40 minutes is scaled to seconds.
    let cloud = SimCloud::builder()
        .boot_time(
            OsKind::WindowsServer,
            Duration::from_secs(4),
            Duration::from_secs(6),
        )
        .boot_time(
            OsKind::UbuntuDesktop,
            Duration::from_secs(2),
            Duration::from_secs(3),
        )
        .install_delay(Duration::from_millis(500))
        .rdp_delay(Duration::from_secs(1))
        .build();
    let payments = SimPayments::new(
        Asset::Fiat(Currency::Ngn),
        SecretString::from("whsec_quickstart"),
    );
    let notifier = RecordingNotifier::new();
    let catalog = PlanCatalog::from_plans([
        Plan::new(
            "win",
            "sim",
            OsKind::WindowsServer,
            "sim-1",
            "small",
            Money::parse_major(Currency::Ngn, "45000")?,
        )
        .with_name("Windows Server 2022, 2 vCPU, 4 GB")
        .with_packages(["googlechrome", "7zip"]),
        Plan::new(
            "ubuntu",
            "sim",
            OsKind::UbuntuDesktop,
            "sim-1",
            "small",
            Money::parse_major(Currency::Ngn, "20000")?,
        )
        .with_name("Ubuntu 24.04 desktop, 2 vCPU, 4 GB")
        .with_packages(["firefox", "vlc"]),
    ])?;
    let mut config = ProvisionerConfig::default();
    config.probe_interval = Duration::from_millis(500);
    config.provider_poll_initial = Duration::from_secs(1);
    config.provider_poll_max = Duration::from_secs(2);
    config.idle_poll = Duration::from_millis(50);
    let provisioner = Provisioner::builder()
        .store(store)
        .provider(Arc::new(cloud.clone()))
        .probe(Arc::new(cloud.rdp_probe()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(notifier.clone()))
        .catalog(catalog)
        .sealer(Sealer::ephemeral())
        .config(config)
        .build()?;

    let plan = provisioner
        .catalog()
        .get(&args.plan.as_str().into())
        .ok_or("plan missing from the catalog")?
        .clone();
    println!("nemordp quickstart (simulated cloud and payments)\n");
    println!("  store     {store_name}");
    println!("  plan      {}: {}", plan.name, plan.price);
    let order = provisioner
        .place_order(
            &plan.id,
            Customer::new("demo-customer").with_email("customer@example.com"),
        )
        .await?;
    println!("  order     {}", order.id);
    let payment = provisioner.open_payment(order.id, "sim").await?;
    println!(
        "  invoice   {} due, reference {}",
        payment.terms.due, payment.reference
    );

    // The customer pays; the payment provider calls our webhook with a signed body.
    payments.pay_in_full(&payment.reference)?;
    let (headers, body) = payments.signed_webhook(&payment.reference)?;
    let outcome = provisioner
        .handle_webhook(
            "sim",
            WebhookRequest {
                headers: &headers,
                body: &body,
            },
        )
        .await?;
    println!(
        "  webhook   signature verified, {} event applied\n",
        outcome.applied
    );

    let mut events = provisioner.subscribe();
    let workers = provisioner.start();
    bar(5, "payment verified");
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(e) if e.order_id == order.id => {
                    bar(e.percent, &e.message);
                    if matches!(e.stage, Stage::Active | Stage::NeedsAttention) {
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    println!("\n");
    let order = provisioner.order(order.id).await?;
    // Give the outbox a moment to deliver the ready notification.
    for _ in 0..100 {
        if notifier
            .sent_for(order.id)
            .iter()
            .any(|n| n.connection.is_some())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    workers.shutdown().await;

    if order.state != OrderState::Active {
        eprintln!("order did not become active: {:?}", order.state);
        std::process::exit(1);
    }
    let details = provisioner.connection_details(order.id).await?;
    let rdp_path = args.out.join(format!("nemordp-{}.rdp", order.id));
    std::fs::write(&rdp_path, &details.rdp_file)?;
    let password = if args.show_password {
        details.password.expose_secret().to_owned()
    } else {
        format!(
            "{} (run with --show-password to reveal)",
            "*".repeat(details.password.expose_secret().len())
        )
    };
    println!("  machine is ready");
    println!("  address   {}:{}", details.host, details.port);
    println!("  username  {}", details.username);
    println!("  password  {password}");
    println!("  rdp file  {}", rdp_path.display());
    let sent: Vec<_> = notifier
        .sent_kinds()
        .iter()
        .map(nemordp::notify::NotificationKind::as_str)
        .collect();
    println!("\n  notifications sent: {}", sent.join(", "));
    Ok(())
}
