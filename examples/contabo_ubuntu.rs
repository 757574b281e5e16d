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

mod live;

use std::{path::PathBuf, sync::Arc, time::Duration};

use nemordp::{
    CloudProvider, Currency, Money,
    order::{Customer, OrderState},
    plan::{BillingPeriod, OsKind, Plan},
    providers::contabo::ContaboBuilder,
};

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

    let mut customer = Customer::new("contabo-example");
    if let Some(ip) = args.rdp_from {
        // the machine's firewall (ufw, from the cloud-config) then admits only this address
        customer = customer.with_ip(ip);
    }
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
    // ordering, installing and the desktop packages take 5-20 minutes
    let live::LiveOutcome { order, machines } = live::provision_one(live::LiveRun {
        provider: contabo.clone(),
        provider_label: "contabo",
        plan,
        currency: Currency::Eur,
        customer,
        wait: Duration::from_secs(60 * 60),
        out: args.out.clone(),
        show_password: args.show_password,
        ready_note: " (xrdp; the desktop session is XFCE)",
    })
    .await?;
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
