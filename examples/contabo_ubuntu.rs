//! Provisions ONE real Ubuntu desktop machine (xrdp + XFCE) on Contabo through the real
//! [`Provisioner`] and prints how to connect. **This costs money: a Contabo machine is a
//! contract of at least one month.** There is no delete; `--cancel` cancels the contract once
//! the machine is ready, and the machine still runs, billed, to the end of the paid term.
//!
//! Payment is simulated (no money moves for the order); only the cloud is real.
//!
//! ```text
//! CONTABO_CLIENT_ID=... CONTABO_CLIENT_SECRET=... CONTABO_API_USER=... CONTABO_API_PASSWORD=... \
//!     cargo run --example contabo_ubuntu --features contabo -- --yes-order-a-monthly-contract
//! ... -- --yes-order-a-monthly-contract --region EU --product V91 --image ubuntu-22.04 \
//!     --rdp-from 203.0.113.7 --out /tmp --show-password --cancel
//! ```

use std::{io::Write as _, path::PathBuf, sync::Arc, time::Duration};

use nemordp::{
    CloudProvider, Currency, Money,
    order::{Customer, OrderState},
    payment::WebhookRequest,
    plan::{BillingPeriod, OsKind, Plan, PlanCatalog},
    providers::contabo::ContaboBuilder,
    provisioner::{Provisioner, ProvisionerConfig, Stage},
    rdp::probe::TcpRdpProbe,
    seal::Sealer,
    sim::{notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
};
use secrecy::{ExposeSecret, SecretString};

struct Args {
    region: String,
    product: String,
    image: Option<String>,
    out: PathBuf,
    show_password: bool,
    cancel: bool,
    confirmed: bool,
    rdp_from: Option<std::net::IpAddr>,
}

const USAGE: &str = "usage: contabo_ubuntu --yes-order-a-monthly-contract [--region EU] \
                     [--product V91] [--image ubuntu-24.04] [--out DIR] [--rdp-from IP] \
                     [--show-password] [--cancel]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        region: "EU".into(),
        product: "V91".into(),
        image: None,
        out: std::env::temp_dir(),
        show_password: false,
        cancel: false,
        confirmed: false,
        rdp_from: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--region" => a.region = it.next().ok_or("--region needs a Contabo region")?,
            "--product" => a.product = it.next().ok_or("--product needs a product id (V91)")?,
            "--image" => a.image = Some(it.next().ok_or("--image needs an image name or id")?),
            "--out" => a.out = it.next().ok_or("--out needs a directory")?.into(),
            "--show-password" => a.show_password = true,
            "--cancel" => a.cancel = true,
            "--yes-order-a-monthly-contract" => a.confirmed = true,
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
    let missing: Vec<&str> = [
        "CONTABO_CLIENT_ID",
        "CONTABO_CLIENT_SECRET",
        "CONTABO_API_USER",
        "CONTABO_API_PASSWORD",
    ]
    .into_iter()
    .filter(|k| std::env::var(k).map_or(true, |v| v.trim().is_empty()))
    .collect();
    if !missing.is_empty() {
        eprintln!(
            "{} not set: this example orders a real Contabo machine on a monthly contract.\n\
             Get the ClientId, ClientSecret, API user and API password at \
             https://my.contabo.com/api/details and run:\n  \
             CONTABO_CLIENT_ID=... CONTABO_CLIENT_SECRET=... CONTABO_API_USER=... \
             CONTABO_API_PASSWORD=... cargo run --example contabo_ubuntu --features contabo \
             -- --yes-order-a-monthly-contract",
            missing.join(", ")
        );
        std::process::exit(2);
    }
    if !args.confirmed {
        eprintln!(
            "a Contabo machine is a contract of at least one month, billed in full even if \
             cancelled at once; pass --yes-order-a-monthly-contract to go ahead\n{USAGE}"
        );
        std::process::exit(2);
    }
    let contabo = Arc::new(ContaboBuilder::from_env().build()?);

    // check the product, region and image before anything is bought
    println!("nemordp on Contabo: one Ubuntu desktop machine (a one-month contract)\n");
    let image = contabo
        .resolve_image(OsKind::UbuntuDesktop, args.image.as_deref())
        .await?;
    let size = contabo.resolve_size(&args.region, &args.product).await?;
    println!("  image     {} ({})", image.name, image.id);
    println!(
        "  product   {} in {}: {} vCPU, {} MiB, {} GiB (from configuration)",
        size.id, size.region, size.vcpus, size.ram_mib, size.disk_gib
    );

    let payments = SimPayments::new(
        nemordp::Asset::Fiat(Currency::Eur),
        SecretString::from("whsec_contabo_example"),
    );
    let notifier = RecordingNotifier::new();
    let mut plan = Plan::new(
        "ubuntu",
        "contabo",
        OsKind::UbuntuDesktop,
        args.region.as_str(),
        args.product.as_str(),
        Money::parse_major(Currency::Eur, "1")?,
    )
    .with_name("Ubuntu desktop on Contabo")
    .with_period(BillingPeriod::Monthly)
    .with_boot_deadline(Duration::from_secs(40 * 60));
    if let Some(i) = &args.image {
        plan = plan.with_image(i.as_str());
    }
    let catalog = PlanCatalog::from_plans([plan])?;
    let mut config = ProvisionerConfig::default();
    // ordering, installing and the desktop packages take 5-20 minutes
    config.provider_poll_initial = Duration::from_secs(15);
    config.provider_poll_max = Duration::from_secs(30);
    config.probe_interval = Duration::from_secs(10);
    let provisioner = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(contabo.clone())
        .probe(Arc::new(TcpRdpProbe::new()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(notifier.clone()))
        .catalog(catalog)
        .sealer(Sealer::ephemeral())
        .config(config)
        .build()?;

    let mut customer = Customer::new("contabo-example");
    if let Some(ip) = args.rdp_from {
        // the machine's firewall (ufw, from the cloud-config) then admits only this address
        customer = customer.with_ip(ip);
    }
    let order = provisioner.place_order(&"ubuntu".into(), customer).await?;
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
    let deadline = tokio::time::sleep(Duration::from_secs(60 * 60));
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
                println!("  gave up waiting after 60 minutes");
                break;
            }
        }
    }
    workers.shutdown().await;

    let order = provisioner.order(order.id).await?;
    let machines = contabo.find_by_label(&order.instance_label()).await?;
    for m in &machines {
        println!("\n  contabo instance {} ({:?})", m.id, m.status);
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
        println!("\n  machine is ready (xrdp; the desktop session is XFCE)");
        println!("  address   {}:{}", details.host, details.port);
        println!("  username  {}", details.username);
        println!("  password  {password}");
        println!("  rdp file  {}", rdp_path.display());
    } else {
        eprintln!("\n  order did not become active: {:?}", order.state);
    }
    if args.cancel {
        for m in &machines {
            contabo.delete_instance(&m.id).await?;
            println!(
                "  cancelled {} (it runs, billed, to the end of its term)",
                m.id
            );
        }
    } else if !machines.is_empty() {
        println!(
            "\n  the contract renews every month until you cancel it (Contabo panel, or run \
             again with --cancel next time)"
        );
    }
    if order.state != OrderState::Active {
        std::process::exit(1);
    }
    Ok(())
}
