#![cfg(feature = "testkit")]
//! The cloud conformance kit passes on `SimCloud` (directly and behind `Arc`/`Box`), and fails
//! on deliberately broken providers.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use nemordp_core::{
    CloudProvider, Result, async_trait,
    cloud::{Capabilities, ImageRef, Instance, InstanceSpec, Page, PageRequest, SizeRef},
    error::ErrorKind,
    ids::InstanceId,
    plan::OsKind,
    secrecy::SecretString,
    sim::cloud::SimCloud,
    testkit::cloud::{self as kit, CloudKitConfig},
};

fn cfg(os: OsKind) -> CloudKitConfig {
    CloudKitConfig::new("sim-1", "small", os, Duration::from_secs(30))
}

fn sim() -> SimCloud {
    SimCloud::builder().seed(11).build()
}

#[tokio::test(start_paused = true)]
async fn kit_passes_on_sim_cloud_for_both_oses() {
    let cloud = sim();
    kit::run_all(&cloud, &cfg(OsKind::WindowsServer)).await;
    kit::run_all(&cloud, &cfg(OsKind::UbuntuDesktop)).await;
    assert!(cloud.live_instances().is_empty(), "the kit cleans up");
    assert!(cloud.creates_applied() > 0);
}

#[tokio::test(start_paused = true)]
async fn kit_passes_on_a_lagging_listing_within_settle() {
    // new machines stay out of find_by_label and list_instances for 20 s of the 30 s settle
    let cloud = SimCloud::builder()
        .listing_lag(Duration::from_secs(20))
        .build();
    kit::run_all(&cloud, &cfg(OsKind::WindowsServer)).await;
    assert!(cloud.live_instances().is_empty());
}

#[tokio::test(start_paused = true)]
async fn kit_passes_through_arc_and_box_dyn() {
    let arc: Arc<dyn CloudProvider> = Arc::new(sim());
    kit::run_all(&arc, &cfg(OsKind::WindowsServer)).await;
    let boxed: Box<dyn CloudProvider> = Box::new(sim());
    kit::run_all(&boxed, &cfg(OsKind::UbuntuDesktop)).await;
}

#[allow(clippy::unused_async)]
async fn macro_setup() -> Option<(SimCloud, CloudKitConfig)> {
    Some((sim(), cfg(OsKind::WindowsServer)))
}

#[allow(clippy::unused_async)]
async fn skipped_setup() -> Option<(SimCloud, CloudKitConfig)> {
    eprintln!("no credentials for this provider");
    None
}

mod via_macro {
    nemordp_core::conformance_cloud!(super::macro_setup, start_paused = true);
}

mod via_macro_skipped {
    nemordp_core::conformance_cloud!(super::skipped_setup);
}

// ----- deliberately broken providers -----

/// One rule each broken provider violates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// `delete_instance` of a missing id returns `NotFound`.
    DeleteMissingNotFound,
    /// `get_instance` returns the password from the create.
    GetLeaksPassword,
    /// The label is not stored.
    DropsLabel,
    /// `list_instances` ignores the limit.
    IgnoresPageLimit,
    /// Power operations on unknown ids succeed.
    UnknownIdOk,
    /// Windows images include Server Core.
    ServesCore,
    /// `delete_instance` reports success but the machine stays.
    DeleteIsNoop,
}

#[derive(Debug)]
struct Broken {
    inner: SimCloud,
    flaw: Flaw,
    passwords: Mutex<HashMap<InstanceId, SecretString>>,
}

impl Broken {
    fn new(flaw: Flaw) -> Self {
        Self {
            inner: sim(),
            flaw,
            passwords: Mutex::default(),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl CloudProvider for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn resolve_image(&self, os: OsKind, hint: Option<&str>) -> Result<ImageRef> {
        if self.flaw == Flaw::ServesCore && os == OsKind::WindowsServer {
            return Ok(ImageRef::new("core", "Windows Server 2022 Core", os));
        }
        self.inner.resolve_image(os, hint).await
    }

    async fn resolve_size(&self, region: &str, size: &str) -> Result<SizeRef> {
        self.inner.resolve_size(region, size).await
    }

    async fn create_instance(&self, spec: &InstanceSpec) -> Result<Instance> {
        let mut spec = spec.clone();
        if self.flaw == Flaw::DropsLabel {
            "unlabelled".clone_into(&mut spec.label);
        }
        let created = self.inner.create_instance(&spec).await?;
        if let Some(p) = &created.admin_password {
            self.passwords
                .lock()
                .unwrap()
                .insert(created.id.clone(), p.clone());
        }
        Ok(created)
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Instance> {
        let mut got = self.inner.get_instance(id).await?;
        if self.flaw == Flaw::GetLeaksPassword {
            got.admin_password = self.passwords.lock().unwrap().get(id).cloned();
        }
        Ok(got)
    }

    async fn find_by_label(&self, label: &str) -> Result<Vec<Instance>> {
        self.inner.find_by_label(label).await
    }

    async fn list_instances(&self, mut page: PageRequest) -> Result<Page<Instance>> {
        if self.flaw == Flaw::IgnoresPageLimit {
            page.limit = 100;
            // make sure there is more than one machine to list
            let image = self
                .inner
                .resolve_image(OsKind::UbuntuDesktop, None)
                .await?;
            let extra = InstanceSpec::new("nemordp-extra", "sim-1", "small", image);
            if self.inner.live_with_label("nemordp-extra") == 0 {
                self.inner.create_instance(&extra).await?;
            }
        }
        self.inner.list_instances(page).await
    }

    async fn reboot(&self, id: &InstanceId) -> Result<()> {
        self.unknown_ok(self.inner.reboot(id).await)
    }

    async fn stop(&self, id: &InstanceId) -> Result<()> {
        self.unknown_ok(self.inner.stop(id).await)
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        self.unknown_ok(self.inner.start(id).await)
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<()> {
        if self.flaw == Flaw::DeleteIsNoop {
            return Ok(());
        }
        let existed = self.inner.get_instance(id).await.is_ok();
        self.inner.delete_instance(id).await?;
        if self.flaw == Flaw::DeleteMissingNotFound && !existed {
            return Err(nemordp_core::Error::not_found(format!("no instance {id}")));
        }
        Ok(())
    }

    async fn retain_for_reuse(&self, id: &InstanceId) -> Result<bool> {
        self.inner.retain_for_reuse(id).await
    }
}

impl Broken {
    fn unknown_ok(&self, r: Result<()>) -> Result<()> {
        match r {
            Err(e) if e.kind() == ErrorKind::NotFound && self.flaw == Flaw::UnknownIdOk => Ok(()),
            other => other,
        }
    }
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "delete_instance of a missing id must succeed")]
async fn kit_catches_delete_of_missing_id_returning_not_found() {
    let p = Broken::new(Flaw::DeleteMissingNotFound);
    kit::delete_idempotent(&p, &cfg(OsKind::WindowsServer)).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "get_instance must never carry the admin password")]
async fn kit_catches_get_leaking_the_password() {
    let p = Broken::new(Flaw::GetLeaksPassword);
    kit::get_never_returns_password(&p, &cfg(OsKind::WindowsServer)).await;
}

#[tokio::test(start_paused = true)]
async fn broken_checks_still_clean_up() {
    let p = Arc::new(Broken::new(Flaw::GetLeaksPassword));
    let inner = p.inner.clone();
    let task = tokio::spawn(async move {
        kit::get_never_returns_password(&*p, &cfg(OsKind::WindowsServer)).await;
    });
    assert!(task.await.unwrap_err().is_panic());
    assert_eq!(inner.creates_applied(), 1);
    assert!(
        inner.live_instances().is_empty(),
        "created machine removed before the panic"
    );
}

#[tokio::test(start_paused = true)]
#[should_panic(
    expected = "create_instance stores the label and find_by_label finds exactly one: asked for label"
)]
async fn kit_catches_a_dropped_label() {
    let p = Broken::new(Flaw::DropsLabel);
    kit::create_stores_label(&p, &cfg(OsKind::UbuntuDesktop)).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "at most `limit` items and reach every machine: asked for 1 item, got")]
async fn kit_catches_pages_over_the_limit() {
    let p = Broken::new(Flaw::IgnoresPageLimit);
    kit::list_pages(&p, &cfg(OsKind::UbuntuDesktop)).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "reboot of an unknown id must be NotFound")]
async fn kit_catches_power_ops_on_unknown_ids_succeeding() {
    let p = Broken::new(Flaw::UnknownIdOk);
    kit::unknown_id_not_found(&p, &cfg(OsKind::UbuntuDesktop)).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "resolve_image must never return a Server Core image for WindowsServer")]
async fn kit_catches_a_server_core_image() {
    let p = Broken::new(Flaw::ServesCore);
    kit::windows_image_has_desktop(&p, &cfg(OsKind::WindowsServer)).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "cloud conformance: delete_instance of a missing id must succeed")]
async fn run_all_fails_on_a_broken_provider() {
    let p = Broken::new(Flaw::DeleteMissingNotFound);
    kit::run_all(&p, &cfg(OsKind::WindowsServer)).await;
}

#[tokio::test(start_paused = true)]
async fn kit_passes_on_a_cancelling_provider_without_password() {
    let cloud = SimCloud::builder()
        .capabilities(
            Capabilities::default()
                .with_removal(nemordp_core::cloud::Removal::Cancel)
                .with_password_from_us(true),
        )
        .build();
    kit::run_all(&cloud, &cfg(OsKind::WindowsServer)).await;
}

#[tokio::test(start_paused = true)]
#[should_panic(expected = "a deleted machine is gone from get_instance and find_by_label")]
async fn kit_catches_a_delete_that_does_nothing() {
    let p = Broken::new(Flaw::DeleteIsNoop);
    kit::deleted_is_gone(&p, &cfg(OsKind::UbuntuDesktop)).await;
}
