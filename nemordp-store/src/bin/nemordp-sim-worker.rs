//! One Provisioner worker process on a shared SQL store and a served `SimCloud`: the unit of
//! the multi-worker and kill proofs (`tests/multiworker.rs`) and the multi-process benchmark.
//!
//! ```text
//! nemordp-sim-worker --store <sqlite://file.db | postgres://…> --cloud <host:port>
//!                    [--schema <postgres schema>] [--worker-id <name>] [--lease-ms <ms>]
//! ```
//!
//! It runs `Provisioner::start()` with short polls (zero-latency sim cloud, no provider rate
//! limit) until its standard input closes, then shuts down cleanly. Killing it with SIGKILL
//! is the crash under test: its leases lapse and other workers (or its replacement) resume.
#![deny(missing_docs)]

use std::{net::SocketAddr, process::ExitCode, str::FromStr as _, sync::Arc, time::Duration};

use nemordp_core::{
    Currency, Money, Store, SystemClock,
    plan::{OsKind, Plan, PlanCatalog},
    provisioner::{Provisioner, ProvisionerConfig},
    seal::Sealer,
    sim::{notify::RecordingNotifier, remote::RemoteSimCloud},
};

struct Args {
    store: String,
    cloud: SocketAddr,
    schema: Option<String>,
    worker_id: Option<String>,
    lease: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut store = None;
    let mut cloud = None;
    let mut schema = None;
    let mut worker_id = None;
    let mut lease = Duration::from_secs(2);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--store" => store = Some(value()?),
            "--cloud" => {
                cloud = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--cloud is not host:port: {e}"))?,
                );
            }
            "--schema" => schema = Some(value()?),
            "--worker-id" => worker_id = Some(value()?),
            "--lease-ms" => {
                lease = Duration::from_millis(
                    value()?
                        .parse()
                        .map_err(|e| format!("--lease-ms is not a number: {e}"))?,
                );
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Args {
        store: store.ok_or("--store is required")?,
        cloud: cloud.ok_or("--cloud is required")?,
        schema,
        worker_id,
        lease,
    })
}

/// The plans the driver sells (same ids, provider and price).
fn catalog() -> nemordp_core::Result<PlanCatalog> {
    PlanCatalog::from_plans([Plan::new(
        "win",
        "sim",
        OsKind::WindowsServer,
        "sim-1",
        "small",
        Money::parse_major(Currency::Ngn, "45000")?,
    )])
}

async fn open_store(url: &str, schema: Option<&str>) -> nemordp_core::Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        return Ok(Arc::new(nemordp_store::SqliteStore::connect(url).await?));
    }
    let mut options = sqlx::postgres::PgConnectOptions::from_str(url).map_err(|e| {
        nemordp_core::Error::invalid_config(format!("--store is not a PostgreSQL URL: {e}"))
    })?;
    if let Some(schema) = schema {
        options = options.options([("search_path", schema)]);
    }
    // A small pool: the proofs run several workers (and their replacements) at once, and
    // the server's connection limit is shared with every other test.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options)
        .await
        .map_err(|e| {
            nemordp_core::Error::new(
                nemordp_core::ErrorKind::Unavailable,
                format!("cannot connect to PostgreSQL: {e}"),
            )
        })?;
    Ok(Arc::new(
        nemordp_store::PostgresStore::from_pool(pool).await?,
    ))
}

async fn run(args: Args) -> nemordp_core::Result<()> {
    let store = open_store(&args.store, args.schema.as_deref()).await?;
    let cloud = Arc::new(RemoteSimCloud::connect(args.cloud).await?);
    let mut config = ProvisionerConfig::default();
    if let Some(id) = args.worker_id {
        config.worker_id = id;
    }
    config.lease_for = args.lease;
    config.claim_batch = 64;
    config.idle_poll = Duration::from_millis(20);
    config.probe_interval = Duration::from_millis(50);
    config.provider_poll_initial = Duration::from_millis(10);
    config.provider_poll_max = Duration::from_millis(200);
    config.lookup_interval = Duration::from_millis(200);
    // Long enough that a create sent by a killed worker has landed before anyone re-sends it.
    config.create_grace = Duration::from_secs(5);
    config.retry_initial = Duration::from_millis(100);
    config.retry_max = Duration::from_secs(2);
    let provisioner = Provisioner::builder()
        .store(store)
        .provider(cloud.clone())
        .probe(cloud)
        .notifier(Arc::new(RecordingNotifier::new()))
        .catalog(catalog()?)
        .sealer(Sealer::new("k1", [42; 32])?)
        .clock(Arc::new(SystemClock))
        .provider_rate_limit("sim", 0)
        .config(config)
        .build()?;
    let workers = provisioner.start();
    // Standard input closing is the request to stop (the driver drops its end).
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        let _ = closed_tx.send(());
    });
    let _ = closed_rx.await;
    workers.shutdown().await;
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nemordp-sim-worker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nemordp-sim-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("nemordp-sim-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
