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

mod live;

use std::{path::PathBuf, sync::Arc, time::Duration};

use nemordp::{
    CloudProvider, Currency, Money,
    order::{Customer, OrderState},
    plan::{OsKind, Plan},
    providers::vultr::VultrBuilder,
};

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

    let mut customer = Customer::new("vultr-example");
    if let Some(ip) = args.rdp_from {
        // the RDP firewall then admits only this address
        customer = customer.with_ip(ip);
    }
    let plan = Plan::new(
        "win",
        "vultr",
        OsKind::WindowsServer,
        args.region.as_str(),
        args.plan.as_str(),
        Money::parse_major(Currency::Usd, "1")?,
    )
    .with_name("Windows Server on Vultr");
    // Windows builds take 10-40 minutes
    let live::LiveOutcome { order, machines } = live::provision_one(live::LiveRun {
        provider: vultr.clone(),
        provider_label: "vultr",
        plan,
        currency: Currency::Usd,
        customer,
        wait: Duration::from_secs(90 * 60),
        out: args.out.clone(),
        show_password: args.show_password,
        ready_note: "",
    })
    .await?;
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
