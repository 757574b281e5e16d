//! Conformance suite for [`CloudProvider`] backends.
//!
//! Every check is a `pub async fn` over `&dyn CloudProvider` that panics with a message naming
//! the broken rule, and removes whatever it created before panicking. Run them all with
//! [`run_all`], one by one from your own tests, or stamp out one `#[tokio::test]` per check
//! with [`conformance_cloud!`](crate::conformance_cloud).
//!
//! Checks that create machines use labels made like production ones (`nemordp-<uuid>`), so
//! leftovers from an interrupted run are recognisable. Against a real provider they cost
//! money: gate such runs behind an environment variable.
//!
//! ```
//! use std::time::Duration;
//! use nemordp_core::{plan::OsKind, sim::cloud::SimCloud, testkit::cloud::{CloudKitConfig, run_all}};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let cloud = SimCloud::builder().seed(1).build();
//! let cfg = CloudKitConfig::new("sim-1", "small", OsKind::UbuntuDesktop, Duration::from_secs(5));
//! run_all(&cloud, &cfg).await;
//! # }
//! ```

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::{
    cloud::{
        CloudProvider, ImageRef, Instance, InstanceSpec, InstanceStatus, PageRequest, Removal,
    },
    error::{ErrorKind, Result},
    ids::{InstanceId, OrderId},
    plan::OsKind,
};

/// Where and what the suite may create.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloudKitConfig {
    /// Region to create test machines in.
    pub region: String,
    /// Size to create test machines with (the cheapest one, preferably).
    pub size: String,
    /// Operating system of test machines.
    pub os: OsKind,
    /// How long listings may lag behind creates and deletes; lookups are polled with
    /// `tokio::time::sleep` until then.
    pub settle: Duration,
    /// An instance id the provider has never issued, in its own id format (default: a UUID
    /// of zeros).
    pub missing_id: InstanceId,
}

impl CloudKitConfig {
    /// A configuration with the default [`CloudKitConfig::missing_id`].
    pub fn new(
        region: impl Into<String>,
        size: impl Into<String>,
        os: OsKind,
        settle: Duration,
    ) -> Self {
        Self {
            region: region.into(),
            size: size.into(),
            os,
            settle,
            missing_id: InstanceId::new("00000000-0000-4000-8000-000000000000"),
        }
    }

    /// Sets the never-issued id used by the unknown-id checks (e.g. `"999999999"` for a
    /// provider with integer ids).
    #[must_use]
    pub fn with_missing_id(mut self, id: impl Into<InstanceId>) -> Self {
        self.missing_id = id.into();
        self
    }
}

/// The name of every check (each a `pub async fn` of this module), in the order [`run_all`]
/// runs them.
pub const CHECKS: [&str; 12] = [
    "name_and_capabilities",
    "resolve_image",
    "windows_image_has_desktop",
    "resolve_size",
    "create_stores_label",
    "get_never_returns_password",
    "password_at_create",
    "list_pages",
    "unknown_id_not_found",
    "delete_idempotent",
    "deleted_is_gone",
    "power_cycle",
];

/// Runs every check in order; panics at the first broken rule.
pub async fn run_all(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    name_and_capabilities(provider, cfg).await;
    resolve_image(provider, cfg).await;
    windows_image_has_desktop(provider, cfg).await;
    resolve_size(provider, cfg).await;
    create_stores_label(provider, cfg).await;
    get_never_returns_password(provider, cfg).await;
    password_at_create(provider, cfg).await;
    list_pages(provider, cfg).await;
    unknown_id_not_found(provider, cfg).await;
    delete_idempotent(provider, cfg).await;
    deleted_is_gone(provider, cfg).await;
    power_cycle(provider, cfg).await;
}

// ----- helpers -----

/// Panics with the rule name and details.
#[track_caller]
fn broken(rule: &str, detail: impl std::fmt::Display) -> ! {
    panic!("cloud conformance: {rule}: {detail}")
}

/// Unwraps a call result or panics naming the rule.
#[track_caller]
fn ok<T>(rule: &str, what: &str, r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => broken(rule, format!("{what} failed: {e}")),
    }
}

/// Asserts a call failed with `kind`.
fn expect_kind<T: std::fmt::Debug>(rule: &str, what: &str, r: Result<T>, kind: ErrorKind) {
    match r {
        Err(e) if e.kind() == kind => {}
        Err(e) => broken(rule, format!("{what} must fail with {kind}, got {e}")),
        Ok(v) => broken(rule, format!("{what} must fail with {kind}, got Ok({v:?})")),
    }
}

/// The pause between polls of an eventually consistent listing.
fn poll_interval(cfg: &CloudKitConfig) -> Duration {
    (cfg.settle / 10).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Polls `probe` until it returns `Some`, or `settle` has passed (then the last `None`).
async fn poll_until<T, F, Fut>(cfg: &CloudKitConfig, mut probe: F) -> Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + cfg.settle;
    loop {
        if let Some(v) = probe().await? {
            return Ok(Some(v));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(poll_interval(cfg)).await;
    }
}

/// A fresh label in the production format.
fn fresh_label() -> String {
    OrderId::from_uuid(uuid::Uuid::new_v4()).instance_label()
}

async fn image_for(provider: &dyn CloudProvider, cfg: &CloudKitConfig, rule: &str) -> ImageRef {
    ok(
        rule,
        "resolve_image(cfg.os, None)",
        provider.resolve_image(cfg.os, None).await,
    )
}

/// Creates a test machine with a fresh label; panics naming `rule` if that fails.
async fn create(provider: &dyn CloudProvider, cfg: &CloudKitConfig, rule: &str) -> Instance {
    create_labelled(provider, cfg, rule).await.0
}

/// Like [`create`], also returning the label asked for.
async fn create_labelled(
    provider: &dyn CloudProvider,
    cfg: &CloudKitConfig,
    rule: &str,
) -> (Instance, String) {
    let image = image_for(provider, cfg, rule).await;
    let label = fresh_label();
    let spec =
        InstanceSpec::new(&label, &cfg.region, &cfg.size, image).with_tag("nemordp-conformance");
    let created = ok(
        rule,
        "create_instance",
        provider.create_instance(&spec).await,
    );
    (created, label)
}

/// Deletes a machine the check created, then panics with the check's failure, if any.
async fn finish(provider: &dyn CloudProvider, id: &InstanceId, outcome: Result<(), String>) {
    let cleanup = provider.delete_instance(id).await;
    if let Err(message) = outcome {
        panic!("{message}");
    }
    if let Err(e) = cleanup {
        broken(
            "delete_instance of a created machine must succeed",
            format!("cleanup of {id} failed: {e}"),
        );
    }
}

/// Formats a failure like [`broken`] without panicking (for checks that must clean up).
fn rule_err(rule: &str, detail: impl std::fmt::Display) -> String {
    format!("cloud conformance: {rule}: {detail}")
}

// ----- checks -----

/// Rule: `name()` is non-empty and `capabilities()` allow pages of at least one item and at
/// least one request per second.
#[allow(
    clippy::unused_async,
    reason = "every check has the same async signature"
)]
pub async fn name_and_capabilities(provider: &dyn CloudProvider, _cfg: &CloudKitConfig) {
    if provider.name().is_empty() {
        broken("name() must be non-empty", "got \"\"");
    }
    let caps = provider.capabilities();
    if caps.max_page_size < 1 {
        broken("capabilities().max_page_size must be at least 1", "got 0");
    }
    if caps.requests_per_second < 1 {
        broken(
            "capabilities().requests_per_second must be at least 1",
            "got 0",
        );
    }
}

/// Rule: `resolve_image(cfg.os, None)` returns an image of that OS, which the same call finds
/// again by its id and by its exact name; an unknown hint is `NotFound`.
pub async fn resolve_image(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "resolve_image returns an image of the requested os";
    const BY_HINT: &str = "resolve_image finds an image by its id or exact name";
    let image = image_for(provider, cfg, RULE).await;
    if image.os != cfg.os || image.id.is_empty() {
        broken(RULE, format!("asked for {:?}, got {image:?}", cfg.os));
    }
    for hint in [&image.id, &image.name] {
        let again = ok(
            BY_HINT,
            "resolve_image with a hint",
            provider.resolve_image(cfg.os, Some(hint)).await,
        );
        if again.id != image.id {
            broken(
                BY_HINT,
                format!("hint {hint:?} gave {again:?}, want {image:?}"),
            );
        }
    }
    expect_kind(
        "resolve_image with an unknown hint must be NotFound",
        "resolve_image(os, Some(unknown))",
        provider
            .resolve_image(cfg.os, Some("nemordp-conformance-no-such-image"))
            .await,
        ErrorKind::NotFound,
    );
}

/// Rule: for Windows Server, the image returned has a desktop: its name does not carry the
/// word "core" (Server Core has no desktop to RDP into). Skipped for other OSes.
pub async fn windows_image_has_desktop(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "resolve_image must never return a Server Core image for WindowsServer";
    if cfg.os != OsKind::WindowsServer {
        return;
    }
    let image = image_for(provider, cfg, RULE).await;
    let lower = image.name.to_lowercase();
    if lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w == "core")
    {
        broken(RULE, format!("got {image:?}"));
    }
}

/// Rule: `resolve_size(cfg.region, cfg.size)` succeeds for that region and size; an unknown
/// size is `NotFound`.
pub async fn resolve_size(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "resolve_size returns the requested size in the requested region";
    let size = ok(
        RULE,
        "resolve_size(cfg.region, cfg.size)",
        provider.resolve_size(&cfg.region, &cfg.size).await,
    );
    if size.id.is_empty() || size.region != cfg.region {
        broken(
            RULE,
            format!("asked for {:?} in {:?}, got {size:?}", cfg.size, cfg.region),
        );
    }
    expect_kind(
        "resolve_size with an unknown size must be NotFound",
        "resolve_size(region, unknown)",
        provider
            .resolve_size(&cfg.region, "nemordp-conformance-no-such-size")
            .await,
        ErrorKind::NotFound,
    );
}

/// Rule: create stores the label (the result carries it) and `find_by_label` finds exactly
/// that one machine within `settle`.
pub async fn create_stores_label(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "create_instance stores the label and find_by_label finds exactly one";
    let (created, label) = create_labelled(provider, cfg, RULE).await;
    let outcome = async {
        if created.label != label {
            return Err(rule_err(
                RULE,
                format!(
                    "asked for label {label:?}, create returned {:?}",
                    created.label
                ),
            ));
        }
        let found = poll_until(cfg, || async {
            let found = provider.find_by_label(&label).await?;
            Ok((!found.is_empty()).then_some(found))
        })
        .await
        .map_err(|e| rule_err(RULE, format!("find_by_label failed: {e}")))?
        .unwrap_or_default();
        match found.as_slice() {
            [one] if one.id == created.id && one.label == label => Ok(()),
            other => Err(rule_err(
                RULE,
                format!(
                    "find_by_label({label:?}) after {:?} gave {} machines: {other:?}",
                    cfg.settle,
                    other.len()
                ),
            )),
        }
    }
    .await;
    finish(provider, &created.id, outcome).await;
}

/// Rule: `get_instance` returns the same id and label as the create, and never carries the
/// admin password.
pub async fn get_never_returns_password(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "get_instance returns the created id and label";
    const SECRET: &str = "get_instance must never carry the admin password";
    let (created, label) = create_labelled(provider, cfg, RULE).await;
    let outcome = async {
        let got = provider
            .get_instance(&created.id)
            .await
            .map_err(|e| rule_err(RULE, format!("get_instance failed: {e}")))?;
        if got.id != created.id || got.label != label {
            return Err(rule_err(RULE, format!("created {created:?}, got {got:?}")));
        }
        if got.admin_password.is_some() {
            return Err(rule_err(SECRET, format!("instance {}", got.id)));
        }
        Ok(())
    }
    .await;
    finish(provider, &created.id, outcome).await;
}

/// Rule: with `capabilities().password_at_create`, the create result carries a non-empty
/// admin password; a password is never visible in the instance's `Debug` output.
pub async fn password_at_create(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "create_instance returns the admin password when password_at_create";
    const DEBUG: &str = "Debug of an instance must not show the admin password";
    let created = create(provider, cfg, RULE).await;
    let wanted = provider.capabilities().password_at_create;
    let outcome = match &created.admin_password {
        None if wanted => Err(rule_err(RULE, "create result has no password")),
        Some(p) if wanted && p.expose_secret().is_empty() => {
            Err(rule_err(RULE, "create result has an empty password"))
        }
        Some(p) if format!("{created:?}").contains(p.expose_secret()) => {
            Err(rule_err(DEBUG, format!("instance {}", created.id)))
        }
        _ => Ok(()),
    };
    finish(provider, &created.id, outcome).await;
}

/// Rule: `list_instances` with a limit of 1 returns pages of at most one item whose cursors
/// walk the whole account, and the walk contains a just-created machine exactly once
/// (within `settle`).
pub async fn list_pages(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "list_instances pages hold at most `limit` items and reach every machine";
    const MAX_PAGES: usize = 100_000;
    let created = create(provider, cfg, RULE).await;
    let walk = || async {
        let mut seen = 0_usize;
        let mut cursor = None;
        for _ in 0..MAX_PAGES {
            let page = provider
                .list_instances(PageRequest { cursor, limit: 1 })
                .await
                .map_err(|e| rule_err(RULE, format!("list_instances failed: {e}")))?;
            if page.items.len() > 1 {
                return Err(rule_err(
                    RULE,
                    format!("asked for 1 item, got {}", page.items.len()),
                ));
            }
            seen += page.items.iter().filter(|i| i.id == created.id).count();
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(seen),
            }
        }
        Err(rule_err(
            RULE,
            format!("no last page after {MAX_PAGES} pages"),
        ))
    };
    let outcome = async {
        let deadline = tokio::time::Instant::now() + cfg.settle;
        loop {
            match walk().await? {
                1 => return Ok(()),
                0 if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(poll_interval(cfg)).await;
                }
                n => {
                    return Err(rule_err(
                        RULE,
                        format!("machine {} seen {n} times in the listing", created.id),
                    ));
                }
            }
        }
    }
    .await;
    finish(provider, &created.id, outcome).await;
}

/// Rule: `get_instance`, `reboot`, `stop` and `start` of a never-issued id are `NotFound`.
pub async fn unknown_id_not_found(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    let id = &cfg.missing_id;
    expect_kind(
        "get_instance of an unknown id must be NotFound",
        "get_instance(missing)",
        provider.get_instance(id).await,
        ErrorKind::NotFound,
    );
    expect_kind(
        "reboot of an unknown id must be NotFound",
        "reboot(missing)",
        provider.reboot(id).await,
        ErrorKind::NotFound,
    );
    expect_kind(
        "stop of an unknown id must be NotFound",
        "stop(missing)",
        provider.stop(id).await,
        ErrorKind::NotFound,
    );
    expect_kind(
        "start of an unknown id must be NotFound",
        "start(missing)",
        provider.start(id).await,
        ErrorKind::NotFound,
    );
}

/// Rule: `delete_instance` is idempotent: deleting a machine twice succeeds both times, and
/// deleting a never-issued id succeeds.
pub async fn delete_idempotent(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "delete_instance must be idempotent";
    const MISSING: &str = "delete_instance of a missing id must succeed";
    if let Err(e) = provider.delete_instance(&cfg.missing_id).await {
        broken(
            MISSING,
            format!("delete of never-issued {} failed: {e}", cfg.missing_id),
        );
    }
    let created = create(provider, cfg, RULE).await;
    ok(
        RULE,
        "first delete",
        provider.delete_instance(&created.id).await,
    );
    if let Err(e) = provider.delete_instance(&created.id).await {
        broken(
            MISSING,
            format!("second delete of {} failed: {e}", created.id),
        );
    }
}

/// Rule: after a delete, `get_instance` is `NotFound` (or reports `Terminated`) and
/// `find_by_label` stops returning the machine, both within `settle`. For providers whose
/// [`Removal`] is `Cancel` (the machine runs to the end of its paid term) only the absence of
/// errors other than `NotFound` is checked.
pub async fn deleted_is_gone(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "a deleted machine is gone from get_instance and find_by_label";
    let (created, label) = create_labelled(provider, cfg, RULE).await;
    // make sure the listing has caught up with the create first, so the check below means
    // something on eventually consistent providers
    let _ = poll_until(cfg, || async {
        let found = provider.find_by_label(&label).await?;
        Ok((!found.is_empty()).then_some(()))
    })
    .await;
    ok(
        RULE,
        "delete_instance",
        provider.delete_instance(&created.id).await,
    );
    let cancel_only = provider.capabilities().removal == Removal::Cancel;
    let gone = ok(
        RULE,
        "get_instance after delete",
        poll_until(cfg, || async {
            match provider.get_instance(&created.id).await {
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(Some(())),
                Ok(i) if cancel_only || i.status == InstanceStatus::Terminated => Ok(Some(())),
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await,
    );
    if gone.is_none() {
        let now = provider.get_instance(&created.id).await;
        broken(
            RULE,
            format!(
                "get_instance still gives {now:?} {:?} after delete",
                cfg.settle
            ),
        );
    }
    if cancel_only {
        return;
    }
    let gone = ok(
        RULE,
        "find_by_label",
        poll_until(cfg, || async {
            let found = provider.find_by_label(&label).await?;
            Ok(found.iter().all(|i| i.id != created.id).then_some(()))
        })
        .await,
    );
    if gone.is_none() {
        broken(
            RULE,
            format!(
                "find_by_label({label:?}) still returns {} after {:?}",
                created.id, cfg.settle
            ),
        );
    }
}

/// Rule: `stop`, `start` and `reboot` of a live machine succeed, and `stop` twice succeeds
/// (already stopped is success).
pub async fn power_cycle(provider: &dyn CloudProvider, cfg: &CloudKitConfig) {
    const RULE: &str = "stop, start and reboot of a live machine succeed";
    let created = create(provider, cfg, RULE).await;
    let outcome = async {
        for (what, r) in [
            ("stop", provider.stop(&created.id).await),
            ("stop again", provider.stop(&created.id).await),
            ("start", provider.start(&created.id).await),
            ("reboot", provider.reboot(&created.id).await),
        ] {
            r.map_err(|e| rule_err(RULE, format!("{what} failed: {e}")))?;
        }
        Ok(())
    }
    .await;
    finish(provider, &created.id, outcome).await;
}

/// Stamps out one `#[tokio::test]` per conformance check for a cloud backend.
///
/// `$setup` is a path to an `async fn() -> Option<(P, CloudKitConfig)>` where
/// `P: CloudProvider`; returning `None` skips the test (print why from the setup). Optional
/// extra tokens are passed to `#[tokio::test(...)]`, e.g. `start_paused = true` (needs
/// tokio's `test-util` feature). Invoke it inside its own module: it defines functions named
/// after the checks. The calling crate needs `tokio` (with `macros` and `rt`) as a
/// dev-dependency.
///
/// ```no_run
/// mod sim_conformance {
///     use std::time::Duration;
///     use nemordp_core::{plan::OsKind, sim::cloud::SimCloud, testkit::cloud::CloudKitConfig};
///
///     async fn setup() -> Option<(SimCloud, CloudKitConfig)> {
///         let cfg = CloudKitConfig::new("sim-1", "small", OsKind::WindowsServer, Duration::from_secs(30));
///         Some((SimCloud::builder().build(), cfg))
///     }
///     nemordp_core::conformance_cloud!(setup, start_paused = true);
/// }
/// ```
#[macro_export]
macro_rules! conformance_cloud {
    ($setup:path $(, $($arg:tt)+)?) => {
        $crate::conformance_cloud!(@one $setup, ($($($arg)+)?),
            name_and_capabilities, resolve_image, windows_image_has_desktop, resolve_size,
            create_stores_label, get_never_returns_password, password_at_create, list_pages,
            unknown_id_not_found, delete_idempotent, deleted_is_gone, power_cycle);
    };
    (@one $setup:path, $args:tt, $($check:ident),+) => {
        $(
            #[::tokio::test $args]
            async fn $check() {
                match $setup().await {
                    ::core::option::Option::Some((provider, cfg)) => {
                        $crate::testkit::cloud::$check(&provider, &cfg).await;
                    }
                    ::core::option::Option::None => {
                        ::std::eprintln!(
                            "skipping cloud conformance check {}: setup returned None",
                            ::core::stringify!($check)
                        );
                    }
                }
            }
        )+
    };
}
