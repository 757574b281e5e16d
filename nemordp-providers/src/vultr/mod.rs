//! Vultr API v2 (`vultr` feature): Windows Server machines reached over RDP.
//!
//! Build one with [`VultrBuilder`] (`VULTR_API_KEY`, optional `VULTR_API_URL`). What it does,
//! and the Vultr facts it relies on:
//!
//! - Catalog: `/os`, `/plans` and `/regions` are walked page by page (`per_page` 500, the
//!   cursor from `meta.links.next`) once and cached; a plan's availability in a region
//!   (`/regions/{id}/availability`) is checked fresh before every create. OS ids are never
//!   hard-coded: images are resolved by exact name, and "Windows Core" (Server Core, no
//!   desktop) images are never returned for [`OsKind::WindowsServer`].
//! - Create: `POST /instances` is sent exactly once. Its 202 body is the only place Vultr
//!   ever shows `default_password`, which is returned in [`Instance::admin_password`]. A
//!   timeout or 5xx is `Ambiguous` (look the label up); a 429 is `RateLimited` (not
//!   processed). The label is stored as `label` and as a tag.
//! - Password: by default the provider declares no user-data support, so the Provisioner
//!   delivers `default_password` (Vultr does not document that Windows images run user-data);
//!   [`VultrBuilder::with_user_data`] opts in for images known to run it.
//! - Status: `Running` only when `status` is `active`, `power_status` `running` and
//!   `server_status` `ok`; a `main_ip` of `0.0.0.0` is no address yet.
//! - Delete: 404 is success; the 500 "locked" / "not currently active" that follows a fresh
//!   create is retried with backoff.
//! - Firewall: creates attach a group allowing only 3389/tcp, from `0.0.0.0/0` or from the
//!   customer's address ([`InstanceSpec::rdp_source`]); groups are found by description and
//!   reused.
//! - Errors: `{"error", "status"}` bodies keep their text (with the key scrubbed); 429 and 503
//!   carry `Retry-After`; safe calls are retried a few times, 401/403 never.

mod builder;
mod client;
mod error;
mod model;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use base64::Engine as _;
use reqwest::Method;
use secrecy::SecretString;

use nemordp_core::{
    Error, ErrorKind, InstanceId, Result,
    cloud::{
        Capabilities, CloudProvider, ImageRef, Instance, InstanceSpec, InstanceStatus, Page,
        PageRequest, Removal, SizeRef,
    },
    plan::OsKind,
};

pub use builder::{DEFAULT_BASE_URL, VultrBuilder};
use client::{Client, MAX_PER_PAGE, Retry};

use crate::rfc3339::parse_rfc3339;

/// Backend name in errors, metrics and registries.
pub const NAME: &str = "vultr";

/// Windows images preferred, in order, when no hint is given.
const WINDOWS_PREFERRED: [&str; 3] = [
    "Windows 2022 Standard x64",
    "Windows 2025 Standard x64",
    "Windows 2019 Standard x64",
];

/// Ubuntu images preferred, in order, when no hint is given.
const UBUNTU_PREFERRED: [&str; 2] = ["Ubuntu 24.04 LTS x64", "Ubuntu 22.04 LTS x64"];

/// Cached catalog lists.
#[derive(Debug, Default)]
struct Catalog {
    os: Option<Arc<Vec<model::Os>>>,
    plans: Option<Arc<Vec<model::Plan>>>,
    regions: Option<Arc<Vec<model::Region>>>,
    /// Firewall group id by description.
    firewalls: HashMap<String, String>,
}

/// The Vultr cloud provider. Cheap to share behind an `Arc`; the catalog cache is shared by
/// every clone of that `Arc`.
#[derive(Debug)]
pub struct Vultr {
    client: Client,
    firewall: Option<String>,
    delete_attempts: u32,
    delete_backoff: Duration,
    /// Whether to declare user-data support (see `VultrBuilder::with_user_data`).
    user_data: bool,
    catalog: Mutex<Catalog>,
    /// Serialises firewall create-or-reuse so concurrent creates make one group.
    firewall_lock: tokio::sync::Mutex<()>,
}

impl Vultr {
    /// A builder with defaults.
    pub fn builder() -> VultrBuilder {
        VultrBuilder::new()
    }

    fn from_parts(
        client: Client,
        firewall: Option<String>,
        delete_attempts: u32,
        delete_backoff: Duration,
        user_data: bool,
    ) -> Self {
        Self {
            client,
            firewall,
            user_data,
            delete_attempts,
            delete_backoff,
            catalog: Mutex::default(),
            firewall_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn catalog(&self) -> std::sync::MutexGuard<'_, Catalog> {
        self.catalog
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn os_list(&self) -> Result<Arc<Vec<model::Os>>> {
        if let Some(os) = self.catalog().os.clone() {
            return Ok(os);
        }
        let os = Arc::new(self.client.all("resolve_image", "/os", "os", &[]).await?);
        self.catalog().os = Some(Arc::clone(&os));
        Ok(os)
    }

    async fn plans(&self) -> Result<Arc<Vec<model::Plan>>> {
        if let Some(p) = self.catalog().plans.clone() {
            return Ok(p);
        }
        let plans = Arc::new(
            self.client
                .all("resolve_size", "/plans", "plans", &[("type", "all".into())])
                .await?,
        );
        self.catalog().plans = Some(Arc::clone(&plans));
        Ok(plans)
    }

    async fn regions(&self) -> Result<Arc<Vec<model::Region>>> {
        if let Some(r) = self.catalog().regions.clone() {
            return Ok(r);
        }
        let regions = Arc::new(
            self.client
                .all("resolve_size", "/regions", "regions", &[])
                .await?,
        );
        self.catalog().regions = Some(Arc::clone(&regions));
        Ok(regions)
    }

    /// The id of a firewall group allowing RDP from `source` (anywhere when `None`),
    /// created on first use and reused after.
    async fn firewall_group(&self, base: &str, source: Option<IpAddr>) -> Result<String> {
        const OP: &str = "create_instance";
        let description = match source {
            Some(ip) => format!("{base}-{ip}"),
            None => base.to_owned(),
        };
        let _guard = self.firewall_lock.lock().await;
        if let Some(id) = self.catalog().firewalls.get(&description).cloned() {
            return Ok(id);
        }
        let groups: Vec<model::FirewallGroup> = self
            .client
            .all(OP, "/firewalls", "firewall_groups", &[])
            .await?;
        let existing = groups.into_iter().find(|g| g.description == description);
        let group = if let Some(g) = existing {
            g
        } else {
            let created: model::FirewallEnvelope = self
                .client
                .post(
                    OP,
                    "/firewalls",
                    &model::CreateFirewall {
                        description: &description,
                    },
                    Retry::IfNotProcessed,
                )
                .await?;
            created.firewall_group
        };
        if group.rule_count == 0 {
            let (ip_type, subnet, subnet_size) = match source {
                None => ("v4", "0.0.0.0".to_owned(), 0),
                Some(IpAddr::V4(ip)) => ("v4", ip.to_string(), 32),
                Some(IpAddr::V6(ip)) => ("v6", ip.to_string(), 128),
            };
            let rule = model::CreateFirewallRule {
                ip_type,
                protocol: "tcp",
                port: "3389",
                subnet,
                subnet_size,
                notes: "nemordp rdp",
            };
            let _: serde_json::Value = self
                .client
                .post(
                    OP,
                    &format!("/firewalls/{}/rules", seg(&group.id)),
                    &rule,
                    Retry::IfNotProcessed,
                )
                .await?;
        }
        self.catalog()
            .firewalls
            .insert(description, group.id.clone());
        Ok(group.id)
    }

    async fn action(&self, op: &'static str, id: &InstanceId, verb: &str) -> Result<()> {
        self.client
            .send(
                op,
                Method::POST,
                &format!("/instances/{}/{verb}", seg(id.as_str())),
                &[],
                None,
                Retry::IfNotProcessed,
            )
            .await
            .map(drop)
    }
}

/// Percent-encodes one path segment (ids are UUIDs, but nothing from outside is trusted).
fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            use std::fmt::Write as _;
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Whether `name` is a Windows Server Core image (no desktop).
fn is_core(name: &str) -> bool {
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|w| w.eq_ignore_ascii_case("core"))
}

/// Whether an image fits `os` at all.
fn fits(os: OsKind, image: &model::Os) -> bool {
    let family = image.family.to_ascii_lowercase();
    match os {
        OsKind::WindowsServer => {
            (family == "windows" || image.name.starts_with("Windows")) && !is_core(&image.name)
        }
        OsKind::UbuntuDesktop => {
            (family == "ubuntu" || image.name.starts_with("Ubuntu"))
                && (image.name.contains("22.04") || image.name.contains("24.04"))
        }
        _ => false,
    }
}

/// Normalised status: `Running` only when active ∧ running ∧ ok.
fn status_of(i: &model::Instance) -> InstanceStatus {
    match i.status.as_str() {
        "installing" | "resizing" => InstanceStatus::Installing,
        "suspended" => InstanceStatus::AccountHold("vultr suspended the instance".into()),
        "active" => match (i.power_status.as_str(), i.server_status.as_str()) {
            ("stopped", _) => InstanceStatus::Stopped,
            ("running", "ok") => InstanceStatus::Running,
            _ => InstanceStatus::Installing,
        },
        // "pending" and anything new
        _ => InstanceStatus::Pending,
    }
}

fn convert(i: model::Instance) -> Instance {
    let status = status_of(&i);
    let address = i
        .main_ip
        .parse::<IpAddr>()
        .ok()
        .filter(|a| !a.is_unspecified());
    let mut out = Instance::new(InstanceId::new(i.id), i.label, status);
    out.address = address;
    out.region = i.region;
    out.created_at = parse_rfc3339(&i.date_created);
    out
}

#[async_trait]
impl CloudProvider for Vultr {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_password_at_create(true)
            .with_password_from_us(false)
            .with_removal(Removal::Delete)
            .with_firewall(true)
            .with_user_data(self.user_data)
            .with_max_page_size(MAX_PER_PAGE)
            .with_requests_per_second(10)
    }

    async fn resolve_image(&self, os: OsKind, hint: Option<&str>) -> Result<ImageRef> {
        let list = self.os_list().await?;
        let to_ref = |o: &model::Os| ImageRef::new(o.id.to_string(), o.name.clone(), os);
        if let Some(hint) = hint {
            let hint = hint.trim();
            return match list
                .iter()
                .find(|o| o.id.to_string() == hint || o.name == hint)
            {
                Some(o) if fits(os, o) => Ok(to_ref(o)),
                Some(o) => Err(Error::not_found(format!(
                    "vultr image {hint:?} ({}) is not a {os:?} image with a desktop",
                    o.name
                ))),
                None => Err(Error::not_found(format!("no vultr image {hint:?}"))),
            }
            .map_err(|e| e.with_backend(NAME).with_operation("resolve_image"));
        }
        let preferred: &[&str] = match os {
            OsKind::WindowsServer => &WINDOWS_PREFERRED,
            OsKind::UbuntuDesktop => &UBUNTU_PREFERRED,
            _ => &[],
        };
        preferred
            .iter()
            .find_map(|name| list.iter().find(|o| o.name == *name && fits(os, o)))
            .or_else(|| list.iter().find(|o| fits(os, o) && o.name.contains("x64")))
            .map(to_ref)
            .ok_or_else(|| {
                Error::not_found(format!("no vultr image for {os:?}"))
                    .with_backend(NAME)
                    .with_operation("resolve_image")
            })
    }

    async fn resolve_size(&self, region: &str, size: &str) -> Result<SizeRef> {
        const OP: &str = "resolve_size";
        let plans = self.plans().await?;
        let plan = plans.iter().find(|p| p.id == size).ok_or_else(|| {
            Error::not_found(format!("unknown vultr plan {size:?}"))
                .with_backend(NAME)
                .with_operation(OP)
        })?;
        let regions = self.regions().await?;
        if !regions.iter().any(|r| r.id == region) {
            return Err(Error::not_found(format!("unknown vultr region {region:?}"))
                .with_backend(NAME)
                .with_operation(OP));
        }
        let rejected = |why: String| {
            Error::new(ErrorKind::Rejected, why)
                .with_backend(NAME)
                .with_operation(OP)
        };
        if !plan.locations.is_empty() && !plan.locations.iter().any(|l| l == region) {
            return Err(rejected(format!(
                "vultr plan {size:?} is not offered in region {region:?}"
            )));
        }
        let avail: model::Availability = self
            .client
            .get(OP, &format!("/regions/{}/availability", seg(region)), &[])
            .await?;
        if !avail.available_plans.iter().any(|p| p == size) {
            return Err(rejected(format!(
                "vultr plan {size:?} is sold out in region {region:?}"
            )));
        }
        Ok(SizeRef::new(
            &plan.id,
            region,
            plan.vcpu_count,
            plan.ram,
            plan.disk,
        ))
    }

    async fn create_instance(&self, spec: &InstanceSpec) -> Result<Instance> {
        const OP: &str = "create_instance";
        let os_id = spec.image.id.parse::<i64>().map_err(|_| {
            Error::invalid_input(format!(
                "vultr image id {:?} is not an os_id; resolve the image first",
                spec.image.id
            ))
            .with_backend(NAME)
            .with_operation(OP)
        })?;
        if spec.label.is_empty() {
            return Err(Error::invalid_input("empty label")
                .with_backend(NAME)
                .with_operation(OP));
        }
        // validated before anything is bought: a bad value is named here, not in a 400
        self.resolve_size(&spec.region, &spec.size)
            .await
            .map_err(|e| e.with_operation(OP))?;
        let firewall_group_id = match &self.firewall {
            Some(base) => Some(self.firewall_group(base, spec.rdp_source).await?),
            None => None,
        };
        let mut tags = vec![spec.label.clone()];
        tags.extend(spec.tags.iter().filter(|t| **t != spec.label).cloned());
        let body = model::CreateInstance {
            region: &spec.region,
            plan: &spec.size,
            os_id,
            label: &spec.label,
            hostname: &spec.hostname,
            tags,
            user_data: spec
                .user_data
                .as_ref()
                .map(|u| base64::engine::general_purpose::STANDARD.encode(u)),
            firewall_group_id,
            backups: "disabled",
            activation_email: false,
        };
        let created: model::InstanceEnvelope = self
            .client
            .post(OP, "/instances", &body, Retry::Never)
            .await?;
        let mut vi = created.instance;
        let password = vi.default_password.take().filter(|p| !p.is_empty());
        let mut out = convert(vi);
        out.admin_password = password.map(SecretString::from);
        tracing::info!(backend = NAME, id = %out.id, label = %out.label, "vultr instance created");
        Ok(out)
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Instance> {
        let got: model::InstanceEnvelope = self
            .client
            .get(
                "get_instance",
                &format!("/instances/{}", seg(id.as_str())),
                &[],
            )
            .await?;
        Ok(convert(got.instance))
    }

    async fn find_by_label(&self, label: &str) -> Result<Vec<Instance>> {
        let found: Vec<model::Instance> = self
            .client
            .all(
                "find_by_label",
                "/instances",
                "instances",
                &[("label", label.to_owned())],
            )
            .await?;
        Ok(found
            .into_iter()
            .filter(|i| i.label == label)
            .map(convert)
            .collect())
    }

    async fn list_instances(&self, page: PageRequest) -> Result<Page<Instance>> {
        let (items, next) = self
            .client
            .page::<model::Instance>(
                "list_instances",
                "/instances",
                "instances",
                &[],
                page.limit,
                page.cursor.as_deref(),
            )
            .await?;
        Ok(Page {
            items: items.into_iter().map(convert).collect(),
            next,
        })
    }

    async fn reboot(&self, id: &InstanceId) -> Result<()> {
        self.action("reboot", id, "reboot").await
    }

    async fn stop(&self, id: &InstanceId) -> Result<()> {
        self.action("stop", id, "halt").await
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        self.action("start", id, "start").await
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<()> {
        let path = format!("/instances/{}", seg(id.as_str()));
        let mut wait = self.delete_backoff;
        let mut attempt = 1;
        loop {
            let r = self
                .client
                .send(
                    "delete_instance",
                    Method::DELETE,
                    &path,
                    &[],
                    None,
                    Retry::IfNotProcessed,
                )
                .await;
            match r {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e)
                    if e.kind() == ErrorKind::Unavailable
                        && attempt < self.delete_attempts
                        && is_fresh_lock(e.message()) =>
                {
                    tracing::debug!(backend = NAME, %id, attempt, "delete refused while locked; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The transient refusals Vultr gives a delete shortly after a create.
fn is_fresh_lock(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("locked") || m.contains("not currently active")
}

#[cfg(test)]
mod tests {
    use super::*;
    use nemordp_core::Timestamp;

    fn vi(status: &str, power: &str, server: &str, ip: &str) -> model::Instance {
        serde_json::from_value(serde_json::json!({
            "id": "i", "label": "l", "status": status, "power_status": power,
            "server_status": server, "main_ip": ip, "region": "ewr",
            "date_created": "2021-09-14T13:22:20+00:00", "something_new": {"x": 1}
        }))
        .unwrap()
    }

    #[test]
    fn running_only_when_active_running_and_ok() {
        let cases = [
            ("pending", "running", "none", InstanceStatus::Pending),
            ("installing", "running", "none", InstanceStatus::Installing),
            ("resizing", "running", "ok", InstanceStatus::Installing),
            ("active", "running", "none", InstanceStatus::Installing),
            ("active", "running", "locked", InstanceStatus::Installing),
            (
                "active",
                "running",
                "installingbooting",
                InstanceStatus::Installing,
            ),
            ("active", "running", "ok", InstanceStatus::Running),
            ("active", "stopped", "ok", InstanceStatus::Stopped),
        ];
        for (s, p, sv, want) in cases {
            assert_eq!(status_of(&vi(s, p, sv, "1.2.3.4")), want, "{s} {p} {sv}");
        }
        assert!(matches!(
            status_of(&vi("suspended", "stopped", "none", "")),
            InstanceStatus::AccountHold(_)
        ));
    }

    #[test]
    fn zero_address_is_no_address() {
        assert_eq!(
            convert(vi("pending", "running", "none", "0.0.0.0")).address,
            None
        );
        assert_eq!(convert(vi("pending", "running", "none", "")).address, None);
        let got = convert(vi("active", "running", "ok", "203.0.113.5"));
        assert_eq!(got.address, Some("203.0.113.5".parse().unwrap()));
        assert!(got.is_ready_for_probe());
        assert_eq!(
            got.created_at,
            Some(Timestamp::from_unix_secs(1_631_625_740))
        );
    }

    #[test]
    fn core_images_are_never_windows_desktops() {
        let os = |name: &str| model::Os {
            id: 1,
            name: name.into(),
            family: "windows".into(),
        };
        assert!(!fits(
            OsKind::WindowsServer,
            &os("Windows Core 2022 Standard x64")
        ));
        assert!(fits(
            OsKind::WindowsServer,
            &os("Windows 2022 Standard x64")
        ));
        assert!(is_core("Windows 2022 Core"));
        assert!(!is_core("Windows 2022 Standard x64"));
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(seg("ab-12"), "ab-12");
        assert_eq!(seg("../x y"), "..%2Fx%20y");
    }
}
