//! The [`CloudProvider`] trait: what nemordp needs from a cloud to sell an RDP machine.

use std::{fmt, net::IpAddr};

use async_trait::async_trait;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::{
    clock::Timestamp,
    error::{Error, ErrorKind, Result},
    ids::InstanceId,
    plan::OsKind,
};

/// How a provider removes a machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Removal {
    /// Deleted at once; billing stops (Vultr).
    Delete,
    /// Cancelled; the machine runs to the end of its paid term (Contabo).
    Cancel,
}

/// What a provider can do; optional abilities are data, not extra traits, because providers
/// arrive as `dyn CloudProvider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
#[allow(clippy::struct_excessive_bools)] // independent yes/no abilities, not a state machine
pub struct Capabilities {
    /// The create response carries the administrator password (Vultr `default_password`).
    pub password_at_create: bool,
    /// The provider accepts a password we choose at create (Contabo secret id).
    pub password_from_us: bool,
    /// How [`CloudProvider::delete_instance`] removes a machine.
    pub removal: Removal,
    /// The provider can attach an RDP firewall restricted to the customer's IP.
    pub firewall: bool,
    /// The provider runs user-data / cloud-init scripts on first boot.
    pub user_data: bool,
    /// The largest page [`CloudProvider::list_instances`] returns.
    pub max_page_size: u32,
    /// Sustained API requests per second the provider allows (for the shared rate limiter).
    pub requests_per_second: u32,
}

impl Default for Capabilities {
    fn default() -> Self {
        Self {
            password_at_create: false,
            password_from_us: false,
            removal: Removal::Delete,
            firewall: false,
            user_data: false,
            max_page_size: 100,
            requests_per_second: 10,
        }
    }
}

impl Capabilities {
    /// Sets `password_at_create`.
    #[must_use]
    pub const fn with_password_at_create(mut self, v: bool) -> Self {
        self.password_at_create = v;
        self
    }
    /// Sets `password_from_us`.
    #[must_use]
    pub const fn with_password_from_us(mut self, v: bool) -> Self {
        self.password_from_us = v;
        self
    }
    /// Sets `removal`.
    #[must_use]
    pub const fn with_removal(mut self, v: Removal) -> Self {
        self.removal = v;
        self
    }
    /// Sets `firewall`.
    #[must_use]
    pub const fn with_firewall(mut self, v: bool) -> Self {
        self.firewall = v;
        self
    }
    /// Sets `user_data`.
    #[must_use]
    pub const fn with_user_data(mut self, v: bool) -> Self {
        self.user_data = v;
        self
    }
    /// Sets `max_page_size`.
    #[must_use]
    pub const fn with_max_page_size(mut self, v: u32) -> Self {
        self.max_page_size = v;
        self
    }
    /// Sets `requests_per_second`.
    #[must_use]
    pub const fn with_requests_per_second(mut self, v: u32) -> Self {
        self.requests_per_second = v;
        self
    }
}

/// A resolved OS image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageRef {
    /// Provider image id (Vultr `os_id` as text, Contabo image UUID).
    pub id: String,
    /// Human name, e.g. "Windows 2022 Standard x64".
    pub name: String,
    /// OS family.
    pub os: OsKind,
}

impl ImageRef {
    /// An image reference.
    pub fn new(id: impl Into<String>, name: impl Into<String>, os: OsKind) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            os,
        }
    }
}

/// A resolved, available machine size in a region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SizeRef {
    /// Provider size/product id.
    pub id: String,
    /// Region the size was checked in.
    pub region: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub ram_mib: u32,
    /// Disk in GiB.
    pub disk_gib: u32,
}

impl SizeRef {
    /// A size reference.
    pub fn new(
        id: impl Into<String>,
        region: impl Into<String>,
        vcpus: u32,
        ram_mib: u32,
        disk_gib: u32,
    ) -> Self {
        Self {
            id: id.into(),
            region: region.into(),
            vcpus,
            ram_mib,
            disk_gib,
        }
    }
}

/// Everything needed to create one machine.
#[derive(Clone)]
#[non_exhaustive]
pub struct InstanceSpec {
    /// Deterministic label `nemordp-<order id>`; stored on the instance so a lost create can
    /// be found and adopted.
    pub label: String,
    /// Region id.
    pub region: String,
    /// Size/product id.
    pub size: String,
    /// Image.
    pub image: ImageRef,
    /// Host name for the machine.
    pub hostname: String,
    /// Extra tags (the order id is a good one).
    pub tags: Vec<String>,
    /// First-boot script (PowerShell or `#cloud-config`). May contain a password hash, so it is
    /// left out of `Debug`.
    pub user_data: Option<String>,
    /// A password we chose, for providers with [`Capabilities::password_from_us`].
    pub admin_password: Option<SecretString>,
    /// Restrict RDP to this source address, where the provider has a firewall.
    pub rdp_source: Option<IpAddr>,
    /// Contract length in months for providers that sell by term (Contabo `period`), taken
    /// from the plan's billing period; `None` lets the provider use its configured default.
    pub billing_months: Option<u32>,
}

impl InstanceSpec {
    /// A spec with the required fields.
    pub fn new(
        label: impl Into<String>,
        region: impl Into<String>,
        size: impl Into<String>,
        image: ImageRef,
    ) -> Self {
        let label = label.into();
        Self {
            hostname: label.clone(),
            label,
            region: region.into(),
            size: size.into(),
            image,
            tags: Vec::new(),
            user_data: None,
            admin_password: None,
            rdp_source: None,
            billing_months: None,
        }
    }

    /// Sets the hostname.
    #[must_use]
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Self {
        self.hostname = hostname.into();
        self
    }

    /// Adds a tag.
    #[must_use]
    pub fn with_tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the first-boot script.
    #[must_use]
    pub fn with_user_data(mut self, user_data: impl Into<String>) -> Self {
        self.user_data = Some(user_data.into());
        self
    }

    /// Sets the administrator password we chose.
    #[must_use]
    pub fn with_admin_password(mut self, password: SecretString) -> Self {
        self.admin_password = Some(password);
        self
    }

    /// Restricts RDP to `ip`.
    #[must_use]
    pub fn with_rdp_source(mut self, ip: IpAddr) -> Self {
        self.rdp_source = Some(ip);
        self
    }

    /// Sets the contract length in months.
    #[must_use]
    pub fn with_billing_months(mut self, months: u32) -> Self {
        self.billing_months = Some(months);
        self
    }
}

impl fmt::Debug for InstanceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InstanceSpec")
            .field("label", &self.label)
            .field("region", &self.region)
            .field("size", &self.size)
            .field("image", &self.image)
            .field("hostname", &self.hostname)
            .field("tags", &self.tags)
            .field(
                "user_data",
                &self
                    .user_data
                    .as_ref()
                    .map(|u| format!("<{} bytes>", u.len())),
            )
            .field("admin_password", &self.admin_password)
            .field("rdp_source", &self.rdp_source)
            .field("billing_months", &self.billing_months)
            .finish()
    }
}

/// Where a machine is in its life, normalised across providers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum InstanceStatus {
    /// Accepted, not yet installing.
    Pending,
    /// Installing or booting the OS.
    Installing,
    /// Powered on and reported ready by the provider (RDP may still be starting).
    Running,
    /// Powered off.
    Stopped,
    /// The provider failed it; detail from the provider.
    Failed(String),
    /// The account needs action (verification, payment, stock); retrying will not help soon.
    AccountHold(String),
    /// Deleted or cancelled.
    Terminated,
}

impl InstanceStatus {
    /// True for `Running`.
    pub fn is_running(&self) -> bool {
        matches!(self, Self::Running)
    }
}

/// A machine as the provider reports it.
#[derive(Clone)]
#[non_exhaustive]
pub struct Instance {
    /// Provider id.
    pub id: InstanceId,
    /// Our label, as stored on the instance.
    pub label: String,
    /// Status.
    pub status: InstanceStatus,
    /// Public IPv4/IPv6 address once assigned.
    pub address: Option<IpAddr>,
    /// Region.
    pub region: String,
    /// Creation time as reported by the provider.
    pub created_at: Option<Timestamp>,
    /// Administrator password; only ever present in the result of a create, and only for
    /// providers with [`Capabilities::password_at_create`].
    pub admin_password: Option<SecretString>,
}

impl Instance {
    /// An instance with the required fields.
    pub fn new(
        id: impl Into<InstanceId>,
        label: impl Into<String>,
        status: InstanceStatus,
    ) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
            status,
            address: None,
            region: String::new(),
            created_at: None,
            admin_password: None,
        }
    }

    /// True when the provider says it is running and it has a usable address.
    pub fn is_ready_for_probe(&self) -> bool {
        self.status.is_running() && self.address.is_some_and(|a| !a.is_unspecified())
    }
}

impl fmt::Debug for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("status", &self.status)
            .field("address", &self.address)
            .field("region", &self.region)
            .field("created_at", &self.created_at)
            .field("admin_password", &self.admin_password)
            .finish()
    }
}

/// A page request: an opaque cursor from the previous page plus a size hint.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// Cursor from [`Page::next`], or `None` for the first page.
    pub cursor: Option<String>,
    /// Items wanted; providers may return fewer (capped at their maximum).
    pub limit: u32,
}

impl PageRequest {
    /// The first page of up to `limit` items.
    pub fn first(limit: u32) -> Self {
        Self {
            cursor: None,
            limit,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Cursor for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// A cloud that sells machines.
///
/// Implementations map their HTTP statuses to [`ErrorKind`]s: 429 → `RateLimited` with the
/// `Retry-After`; 5xx and connect errors → `Unavailable`; 404 → `NotFound`; other 4xx →
/// `Rejected`; a create whose outcome is unknown → `Ambiguous`.
#[async_trait]
#[auto_impl::auto_impl(&, Arc, Box)]
pub trait CloudProvider: fmt::Debug + Send + Sync + 'static {
    /// Backend name used in registries, errors and metrics (`"vultr"`, `"contabo"`, `"sim"`).
    fn name(&self) -> &'static str;

    /// What this provider can do.
    fn capabilities(&self) -> Capabilities;

    /// Finds the image for `os`, optionally pinned by a provider id or exact name `hint`.
    ///
    /// # Behavior
    /// - No matching image → `NotFound`. Images without a desktop (Windows Server Core) are
    ///   never returned for [`OsKind::WindowsServer`].
    async fn resolve_image(&self, os: OsKind, hint: Option<&str>) -> Result<ImageRef>;

    /// Checks that `size` exists and can be bought in `region` now.
    ///
    /// # Behavior
    /// - Unknown size → `NotFound`; known but sold out in the region → `Rejected`.
    async fn resolve_size(&self, region: &str, size: &str) -> Result<SizeRef>;

    /// Creates one machine.
    ///
    /// # Behavior
    /// - The label is stored on the instance, so [`CloudProvider::find_by_label`] finds it.
    /// - Never retried internally once the request may have reached the provider: an unknown
    ///   outcome is returned as `Ambiguous` and the caller looks the label up.
    /// - The returned instance carries the admin password if the provider returns one.
    async fn create_instance(&self, spec: &InstanceSpec) -> Result<Instance>;

    /// Reads one machine.
    ///
    /// # Behavior
    /// - Unknown or deleted id → `NotFound`. Never carries the admin password.
    async fn get_instance(&self, id: &InstanceId) -> Result<Instance>;

    /// Every live machine carrying exactly `label` (normally zero or one; more means a
    /// duplicate create slipped through). An empty answer proves nothing on its own: listings
    /// lag creation.
    async fn find_by_label(&self, label: &str) -> Result<Vec<Instance>>;

    /// One page of live machines in the account.
    async fn list_instances(&self, page: PageRequest) -> Result<Page<Instance>>;

    /// Reboots a machine. Unknown id → `NotFound`.
    async fn reboot(&self, id: &InstanceId) -> Result<()>;

    /// Powers a machine off. Already stopped is success. Unknown id → `NotFound`.
    async fn stop(&self, id: &InstanceId) -> Result<()>;

    /// Powers a machine on. Already running is success. Unknown id → `NotFound`.
    async fn start(&self, id: &InstanceId) -> Result<()>;

    /// Deletes (or cancels, see [`Capabilities::removal`]) a machine.
    ///
    /// # Behavior
    /// - Idempotent: a missing or already removed machine is success, never `NotFound`.
    async fn delete_instance(&self, id: &InstanceId) -> Result<()>;

    /// Keeps a machine no order owns for reuse by a later create, instead of removing it
    /// (for providers whose machines are contracts: reinstalling one beats ordering another).
    ///
    /// # Behavior
    /// - `Ok(true)`: kept; a later [`CloudProvider::create_instance`] may reinstall it.
    /// - `Ok(false)` (the default): reuse is not offered; the caller removes or reports it.
    async fn retain_for_reuse(&self, id: &InstanceId) -> Result<bool> {
        let _ = id;
        Ok(false)
    }
}

/// Conveniences on every [`CloudProvider`].
#[async_trait]
pub trait CloudProviderExt: CloudProvider {
    /// Walks every page of [`CloudProvider::list_instances`].
    async fn list_all_instances(&self) -> Result<Vec<Instance>> {
        let limit = self.capabilities().max_page_size.max(1);
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list_instances(PageRequest { cursor, limit }).await?;
            out.extend(page.items);
            match page.next {
                Some(next) => cursor = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Reads a machine, mapping `NotFound` to `None`.
    async fn try_get_instance(&self, id: &InstanceId) -> Result<Option<Instance>> {
        match self.get_instance(id).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The single machine with `label`; `Conflict` if there are several.
    async fn find_one_by_label(&self, label: &str) -> Result<Option<Instance>> {
        let mut found = self.find_by_label(label).await?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => Err(
                Error::conflict(format!("{n} instances carry label {label}"))
                    .with_backend(self.name()),
            ),
        }
    }
}

impl<P: CloudProvider + ?Sized> CloudProviderExt for P {}
