//! The part the live-cloud examples share: one order for one plan through the real
//! `Provisioner` (payment simulated, cloud real), progress printed as it happens, then the
//! connection details and the `.rdp` file. Each example only builds its provider and plan and
//! decides what to do with the machine afterwards.

use std::{io::Write as _, path::PathBuf, sync::Arc, time::Duration};

use nemordp::{
    CloudProvider, Currency,
    cloud::Instance,
    order::{Customer, Order, OrderState},
    payment::WebhookRequest,
    plan::{Plan, PlanCatalog},
    provisioner::{Provisioner, ProvisionerConfig, Stage},
    rdp::probe::TcpRdpProbe,
    seal::Sealer,
    sim::{notify::RecordingNotifier, payments::SimPayments, store::MemoryStore},
};
use secrecy::{ExposeSecret, SecretString};

/// One live run: what to order and how to report it.
pub(crate) struct LiveRun {
    /// The real cloud.
    pub(crate) provider: Arc<dyn CloudProvider>,
    /// Its name in messages (`vultr`, `contabo`).
    pub(crate) provider_label: &'static str,
    /// The plan to order; its price is in `currency` (the payment is simulated).
    pub(crate) plan: Plan,
    /// Currency of the simulated payment.
    pub(crate) currency: Currency,
    /// The customer (its IP, if any, restricts RDP).
    pub(crate) customer: Customer,
    /// How long to wait for the machine before giving up.
    pub(crate) wait: Duration,
    /// Where the `.rdp` file goes.
    pub(crate) out: PathBuf,
    /// Print the password instead of a mask.
    pub(crate) show_password: bool,
    /// Printed after "machine is ready".
    pub(crate) ready_note: &'static str,
}

/// The order as it ended and the machines carrying its label.
pub(crate) struct LiveOutcome {
    pub(crate) order: Order,
    pub(crate) machines: Vec<Instance>,
}

/// Places, pays (simulated) and provisions the order, printing progress and, once active,
/// the connection details; writes the `.rdp` file.
pub(crate) async fn provision_one(run: LiveRun) -> Result<LiveOutcome, Box<dyn std::error::Error>> {
    let payments = SimPayments::new(
        nemordp::Asset::Fiat(run.currency),
        SecretString::from(format!("whsec_{}_example", run.provider_label)),
    );
    let plan_id = run.plan.id.clone();
    let mut config = ProvisionerConfig::default();
    // Clouds ask not to be polled every few seconds; these builds take 5-40 minutes.
    config.provider_poll_initial = Duration::from_secs(15);
    config.provider_poll_max = Duration::from_secs(30);
    config.probe_interval = Duration::from_secs(10);
    let provisioner = Provisioner::builder()
        .store(Arc::new(MemoryStore::new()))
        .provider(run.provider.clone())
        .probe(Arc::new(TcpRdpProbe::new()))
        .payment(Arc::new(payments.clone()))
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(PlanCatalog::from_plans([run.plan])?)
        .sealer(Sealer::ephemeral())
        .config(config)
        .build()?;

    let order = provisioner.place_order(&plan_id, run.customer).await?;
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
    let deadline = tokio::time::sleep(run.wait);
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
                println!("  gave up waiting after {} minutes", run.wait.as_secs() / 60);
                break;
            }
        }
    }
    workers.shutdown().await;

    let order = provisioner.order(order.id).await?;
    let machines = run.provider.find_by_label(&order.instance_label()).await?;
    for m in &machines {
        println!(
            "\n  {} instance {} ({:?})",
            run.provider_label, m.id, m.status
        );
    }
    if order.state == OrderState::Active {
        let details = provisioner.connection_details(order.id).await?;
        let rdp_path = run.out.join(format!("nemordp-{}.rdp", order.id));
        std::fs::write(&rdp_path, &details.rdp_file)?;
        let password = if run.show_password {
            details.password.expose_secret().to_owned()
        } else {
            "******** (run with --show-password to reveal)".to_owned()
        };
        println!("\n  machine is ready{}", run.ready_note);
        println!("  address   {}:{}", details.host, details.port);
        println!("  username  {}", details.username);
        println!("  password  {password}");
        println!("  rdp file  {}", rdp_path.display());
    } else {
        eprintln!("\n  order did not become active: {:?}", order.state);
    }
    Ok(LiveOutcome { order, machines })
}
