//! Provisions ONE real Windows Server machine on Vultr through the real [`Provisioner`]
//! and prints how to connect. **This costs money**: the machine bills by the hour (plus the
//! Windows licence) until it is deleted. Pass `--delete` to delete it once it is ready.
//!
//! Payment is simulated (no money moves for the order); only the cloud is real.
//!
//! ```text
//! VULTR_API_KEY=... cargo run --example vultr_windows --features vultr
//! VULTR_API_KEY=... cargo run --example vultr_windows --features vultr -- \
//!     --region ams --plan vc2-2c-4gb --rdp-from 203.0.113.7 --out /tmp --show-password --delete
//! ```

use std::{io::Write as _, path::PathBuf, sync::Arc, time::Duration};

use nemordp::{
    CloudProvider, Currency, Money,
    order::{Customer, OrderState},
    payment::WebhookRequest,
    plan::{OsKind, Plan, PlanCatalog},
    providers::vultr::VultrBuilder,
    provisioner::{Provisioner, ProvisionerConfig, Stage},
    rdp::probe::TcpRdpProbe,
    seal::Sealer,
    sim::{notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
};
use secrecy::{ExposeSecret, SecretString};

struct Args {
    region: String,
    plan: String,
    out: PathBuf,
    show_password: bool,
    delete: bool,
    rdp_from: Option<std::net::IpAddr>,
}

const USAGE: &str = "usage: vultr_windows [--region ewr] [--plan vc2-2c-4gb] [--out DIR] \
                     [--rdp-from IP] [--show-password] [--delete]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        region: "ewr".into(),
        plan: "vc2-2c-4gb".into(),
        out: std::env::temp_dir(),
        show_password: false,
        delete: false,
        rdp_from: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--region" => a.region = it.next().ok_or("--region needs a Vultr region id")?,
            "--plan" => a.plan = it.next().ok_or("--plan needs a Vultr plan id")?,
            "--out" => a.out = it.next().ok_or("--out needs a directory")?.into(),
            "--show-password" => a.show_password = true,
            "--delete" => a.delete = true,
            "--rdp-from" => {
                let ip = it.next().ok_or("--rdp-from needs your public IP address")?;
                a.rdp_from = Some(ip.parse().map_err(|_| format!("bad IP address {ip:?}"))?);
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
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
    if std::env::var("VULTR_API_KEY").map_or(true, |k| k.trim().is_empty()) {
        eprintln!(
            "VULTR_API_KEY is not set: this example creates a real, billed Vultr machine.\n\
             Create an API key at https://my.vultr.com/settings/#settingsapi (allow this \
             machine's IP in its access list) and run:\n  \
             VULTR_API_KEY=... cargo run --example vultr_windows --features vultr"
        );
        std::process::exit(2);
    }
    let vultr = Arc::new(VultrBuilder::from_env().build()?);

    // check the region, plan and image before anything is bought
    println!("nemordp on Vultr: one Windows Server machine (billed hourly until deleted)\n");
    let image = vultr.resolve_image(OsKind::WindowsServer, None).await?;
    let size = vultr.resolve_size(&args.region, &args.plan).await?;
    println!("  image     {} (os_id {})", image.name, image.id);
    println!(
        "  size      {} in {}: {} vCPU, {} MiB, {} GiB",
        size.id, size.region, size.vcpus, size.ram_mib, size.disk_gib
    );

    let payments = SimPayments::new(
        nemordp::Asset::Fiat(Currency::Usd),
        SecretString::from("whsec_vultr_example"),
    );
    let notifier = RecordingNotifier::new();
    let catalog = PlanCatalog::from_plans([Plan::new(
        "win",
        "vultr",
        OsKind::WindowsServer,
        args.region.as_str(),
        args.plan.as_str(),
        Money::parse_major(Currency::Usd, "1")?,
    )
    .with_name("Windows Server on Vultr")])?;
    let mut config = ProvisionerConfig::default();
    // Vultr asks not to be polled every few seconds; Windows builds take 10-40 minutes
    config.provider_poll_initial = Duration::from_secs(15);
    config.provider_poll_max = Duration::from_secs(30);
    config.probe_interval = Duration::from_secs(10);
    let provisioner = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(vultr.clone())
        .probe(Arc::new(TcpRdpProbe::new()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(notifier.clone()))
        .catalog(catalog)
        .sealer(Sealer::ephemeral())
        .config(config)
        .build()?;

    let mut customer = Customer::new("vultr-example");
    if let Some(ip) = args.rdp_from {
        // the RDP firewall then admits only this address
        customer = customer.with_ip(ip);
    }
    let order = provisioner.place_order(&"win".into(), customer).await?;
    println!(
        "  order     {} (label {})",
        order.id,
        order.instance_label()
    );
    let payment = provisioner.open_payment(order.id, "sim").await?;
    payments.pay_in_full(&payment.reference)?;
    let (headers, body) = payments.signed_webhook(&payment.reference)?;
    provisioner
        .handle_webhook(
            "sim",
            WebhookRequest {
                headers: &headers,
                body: &body,
            },
        )
        .await?;
    println!("  payment   simulated and verified\n");

    let mut events = provisioner.subscribe();
    let workers = provisioner.start();
    let started = std::time::Instant::now();
    let deadline = tokio::time::sleep(Duration::from_secs(90 * 60));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(e) if e.order_id == order.id => {
                    println!(
                        "  [{:>5}s] {:>3}%  {}",
                        started.elapsed().as_secs(),
                        e.percent,
                        e.message
                    );
                    let _ = std::io::stdout().flush();
                    if matches!(e.stage, Stage::Active | Stage::NeedsAttention) {
                        break;
                    }
                }
                Some(_) => {}
                None => break,
            },
            () = &mut deadline => {
                println!("  gave up waiting after 90 minutes");
                break;
            }
        }
    }
    workers.shutdown().await;

    let order = provisioner.order(order.id).await?;
    let machines = vultr.find_by_label(&order.instance_label()).await?;
    for m in &machines {
        println!("\n  vultr instance {} ({:?})", m.id, m.status);
    }
    if order.state == OrderState::Active {
        let details = provisioner.connection_details(order.id).await?;
        let rdp_path = args.out.join(format!("nemordp-{}.rdp", order.id));
        std::fs::write(&rdp_path, &details.rdp_file)?;
        let password = if args.show_password {
            details.password.expose_secret().to_owned()
        } else {
            "******** (run with --show-password to reveal)".to_owned()
        };
        println!("\n  machine is ready");
        println!("  address   {}:{}", details.host, details.port);
        println!("  username  {}", details.username);
        println!("  password  {password}");
        println!("  rdp file  {}", rdp_path.display());
    } else {
        eprintln!("\n  order did not become active: {:?}", order.state);
    }
    if args.delete {
        for m in &machines {
            vultr.delete_instance(&m.id).await?;
            println!("  deleted   {}", m.id);
        }
    } else if !machines.is_empty() {
        println!(
            "\n  the machine keeps billing until you delete it (Vultr portal, or run again with \
             --delete next time)"
        );
    }
    if order.state != OrderState::Active {
        std::process::exit(1);
    }
    Ok(())
}
