//! Contabo API v1 (`contabo` feature): Ubuntu desktop machines reached over xrdp.
//!
//! Build one with [`ContaboBuilder`] (`CONTABO_CLIENT_ID`, `CONTABO_CLIENT_SECRET`,
//! `CONTABO_API_USER`, `CONTABO_API_PASSWORD`, optional `CONTABO_API_URL` and
//! `CONTABO_AUTH_URL`). **A Contabo machine is a monthly (or longer) contract**: there is no
//! delete, [`CloudProvider::delete_instance`] cancels, and the machine runs, billed, to the
//! end of its term. What it does, and the Contabo facts it relies on:
//!
//! - Auth: the OpenID Connect password grant; the access token is cached under one mutex,
//!   renewed (refresh grant, else password grant) 30 s before it expires, and a 401 is
//!   answered by one retry with a fresh token.
//! - Every request carries a fresh UUID v4 `x-request-id` (quoted in every error for support)
//!   and, where the machine is known, `x-trace-id` = the order's label.
//! - Catalog: images are resolved by name (`ubuntu-24.04`, then `ubuntu-22.04`) from
//!   `/v1/compute/images`, walked page by page and cached. Contabo has no product endpoint:
//!   products and regions come from configuration and unknown ones are named in the error.
//! - Create: the root password becomes a secret (`POST /v1/secrets`) whose id is sent as
//!   `rootPassword`; the password text never appears in the instance request. `displayName`
//!   is the label, `userData` the cloud-config, `period` the plan's term. The 201 `data[0]`
//!   is parsed; the create is sent exactly once (timeouts and 5xx are `Ambiguous`). The
//!   secret is deleted once the machine is seen `running` ([`Contabo::purge_secrets`] cleans
//!   up after a restart). Operator SSH keys ([`ContaboBuilder::with_ssh_keys`]) become `ssh`
//!   secrets too, made once and found again by name.
//! - Status: every documented status is mapped; `verification_required`,
//!   `pending_payment`, `manual_provisioning` and `product_not_available` are
//!   [`InstanceStatus::AccountHold`], `error` is [`InstanceStatus::Failed`] with
//!   `errorMessage`; a machine with a `cancelDate` is [`InstanceStatus::Terminated`] and
//!   left out of listings.
//! - Reuse: with [`ContaboBuilder::with_reuse_pool`], a create first reinstalls a paid,
//!   unowned machine from the pool ([`Contabo::release_to_pool`]) instead of ordering one.
//! - Errors: `{"statusCode", "message"}` with `message` a string or a list; 429 is retried
//!   on safe calls with `Retry-After` or exponential backoff.

mod builder;
mod client;
mod error;
mod model;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};

use nemordp_core::{
    Error, ErrorKind, InstanceId, Result,
    cloud::{
        Capabilities, CloudProvider, ImageRef, Instance, InstanceSpec, InstanceStatus, Page,
        PageRequest, Removal, SizeRef,
    },
    plan::OsKind,
};

pub use builder::{
    ContaboBuilder, ContaboProduct, DEFAULT_AUTH_URL, DEFAULT_BASE_URL, PERIODS, REGIONS,
    default_products,
};
use client::{Client, MAX_PAGE_SIZE, Retry, unexpected};

use crate::rfc3339::parse_rfc3339;

/// Backend name in errors, metrics and registries.
pub const NAME: &str = "contabo";

/// Ubuntu images preferred, in order, when no hint is given.
const UBUNTU_PREFERRED: [&str; 2] = ["ubuntu-24.04", "ubuntu-22.04"];

/// Longest `displayName` Contabo stores.
const MAX_DISPLAY_NAME: usize = 255;

const INSTANCES: &str = "/v1/compute/instances";

/// Validated configuration.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) products: Vec<ContaboProduct>,
    pub(crate) regions: Vec<String>,
    pub(crate) period_months: u32,
    pub(crate) default_user: String,
    pub(crate) pool_name: Option<String>,
    pub(crate) ssh_keys: Vec<String>,
}

#[derive(Debug, Default)]
struct State {
    images: Option<Arc<Vec<model::Image>>>,
    /// Last label seen per instance, for `x-trace-id` on calls that only have the id.
    labels: HashMap<i64, String>,
    /// Password secrets still to delete, by the label of the machine they were made for.
    secrets: HashMap<String, i64>,
    /// Secret ids of the configured SSH keys, once created or found.
    ssh_secrets: Option<Vec<i64>>,
}

/// The Contabo cloud provider. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Contabo {
    client: Client,
    settings: Settings,
    state: Mutex<State>,
    /// Serialises picking a machine from the reuse pool, so two creates never take one.
    pool_lock: tokio::sync::Mutex<()>,
    /// Serialises creating the SSH key secrets, so concurrent creates make one of each.
    ssh_lock: tokio::sync::Mutex<()>,
}

impl Contabo {
    /// A builder with defaults.
    pub fn builder() -> ContaboBuilder {
        ContaboBuilder::new()
    }

    fn from_parts(client: Client, settings: Settings) -> Self {
        Self {
            client,
            settings,
            state: Mutex::default(),
            pool_lock: tokio::sync::Mutex::new(()),
            ssh_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The secret ids of the configured SSH keys: found by name among the account's `ssh`
    /// secrets, or created, once per process.
    async fn ssh_secret_ids(&self, op: &'static str) -> Result<Vec<i64>> {
        if self.settings.ssh_keys.is_empty() {
            return Ok(Vec::new());
        }
        let _guard = self.ssh_lock.lock().await;
        if let Some(ids) = self.state().ssh_secrets.clone() {
            return Ok(ids);
        }
        let existing: Vec<model::NamedSecret> = self
            .client
            .all(op, "/v1/secrets", &[("type", "ssh".into())], None)
            .await?;
        let mut ids = Vec::new();
        for key in &self.settings.ssh_keys {
            let name = ssh_secret_name(key);
            let found = existing
                .iter()
                .find(|s| s.name == name)
                .and_then(|s| s.secret_id.as_i64());
            let id = if let Some(id) = found {
                id
            } else {
                let created: Vec<model::Secret> = self
                    .client
                    .call(
                        op,
                        Method::POST,
                        "/v1/secrets",
                        &model::CreateSecret {
                            name: &name,
                            kind: "ssh",
                            value: key,
                        },
                        Retry::IfNotProcessed,
                        None,
                    )
                    .await?;
                created
                    .first()
                    .and_then(|s| s.secret_id.as_i64())
                    .ok_or_else(|| {
                        unexpected(op, "the secret create answered without a secretId")
                    })?
            };
            ids.push(id);
        }
        self.state().ssh_secrets = Some(ids.clone());
        Ok(ids)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn trace_of(&self, id: i64) -> Option<String> {
        self.state().labels.get(&id).cloned()
    }

    async fn images(&self) -> Result<Arc<Vec<model::Image>>> {
        if let Some(i) = self.state().images.clone() {
            return Ok(i);
        }
        let images = Arc::new(
            self.client
                .all(
                    "resolve_image",
                    "/v1/compute/images",
                    &[("standardImage", "true".into())],
                    None,
                )
                .await?,
        );
        self.state().images = Some(Arc::clone(&images));
        Ok(images)
    }

    fn product(&self, op: &'static str, size: &str) -> Result<&ContaboProduct> {
        self.settings
            .products
            .iter()
            .find(|p| p.id == size)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .settings
                    .products
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect();
                Error::not_found(format!(
                    "unknown contabo product {size:?}; configured products are {}",
                    known.join(", ")
                ))
                .with_backend(NAME)
                .with_operation(op)
            })
    }

    fn check_region(&self, op: &'static str, region: &str, product: &ContaboProduct) -> Result<()> {
        if !self.settings.regions.iter().any(|r| r == region) {
            return Err(Error::not_found(format!(
                "unknown contabo region {region:?}; configured regions are {}",
                self.settings.regions.join(", ")
            ))
            .with_backend(NAME)
            .with_operation(op));
        }
        if !product.regions.is_empty() && !product.regions.iter().any(|r| r == region) {
            return Err(Error::new(
                ErrorKind::Rejected,
                format!(
                    "contabo product {:?} is not sold in region {region:?} (only {})",
                    product.id,
                    product.regions.join(", ")
                ),
            )
            .with_backend(NAME)
            .with_operation(op));
        }
        Ok(())
    }

    /// Reads one instance as Contabo reports it.
    async fn read(&self, op: &'static str, id: i64) -> Result<model::Instance> {
        let trace = self.trace_of(id);
        let mut data: Vec<model::Instance> = self
            .client
            .get_data(op, &format!("{INSTANCES}/{id}"), &[], trace.as_deref())
            .await?;
        if data.is_empty() {
            return Err(
                Error::not_found(format!("contabo returned no instance {id}"))
                    .with_backend(NAME)
                    .with_operation(op),
            );
        }
        Ok(data.swap_remove(0))
    }

    /// Converts, remembering the label for tracing and deleting a consumed password secret
    /// once the machine is running.
    async fn convert(&self, i: model::Instance) -> Instance {
        let label = i.display_name.clone().unwrap_or_default();
        let cleanup = {
            let mut st = self.state();
            if !label.is_empty() {
                st.labels.insert(i.instance_id, label.clone());
            }
            if i.status == "running" {
                st.secrets.remove(&label)
            } else {
                None
            }
        };
        if let Some(secret) = cleanup {
            self.delete_secret(secret, &label).await;
        }
        convert(i)
    }

    /// Best effort: a leftover secret holds a password of a machine whose owner already
    /// has it, so a failure is logged, not returned.
    async fn delete_secret(&self, secret: i64, label: &str) {
        let r = self
            .client
            .send(
                "delete_secret",
                Method::DELETE,
                &format!("/v1/secrets/{secret}"),
                &[],
                None,
                Retry::IfNotProcessed,
                Some(label),
            )
            .await;
        match r {
            Ok(_) => tracing::debug!(backend = NAME, secret, label, "password secret deleted"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(backend = NAME, secret, label, error = %e, "could not delete a password secret");
            }
        }
    }

    /// Stores `password` as a Contabo password secret named after `label`; returns its id.
    async fn password_secret(
        &self,
        op: &'static str,
        label: &str,
        password: &SecretString,
    ) -> Result<i64> {
        let text = password.expose_secret();
        if !meets_secret_rule(text) {
            return Err(Error::invalid_input(
                "the admin password does not meet Contabo's secret rule (8+ characters, upper \
                 and lower case, and one digit with two of !@#$^&*?_~ or three digits with one)",
            )
            .with_backend(NAME)
            .with_operation(op));
        }
        let body = model::CreateSecret {
            name: label,
            kind: "password",
            value: text,
        };
        let created: Vec<model::Secret> = self
            .client
            .call(
                op,
                Method::POST,
                "/v1/secrets",
                &body,
                Retry::IfNotProcessed,
                Some(label),
            )
            .await?;
        let id = created
            .first()
            .and_then(|s| s.secret_id.as_i64())
            .ok_or_else(|| unexpected(op, "the secret create answered without a secretId"))?;
        Ok(id)
    }

    async fn action(&self, op: &'static str, id: &InstanceId, action: &str) -> Result<()> {
        let n = parse_id(op, id)?;
        let trace = self.trace_of(n);
        self.client
            .send(
                op,
                Method::POST,
                &format!("{INSTANCES}/{n}/actions/{action}"),
                &[],
                None,
                Retry::IfNotProcessed,
                trace.as_deref(),
            )
            .await
            .map(drop)
    }

    /// Powers a machine off hard (`actions/stop`, like pulling the plug).
    pub async fn power_off(&self, id: &InstanceId) -> Result<()> {
        self.action("power_off", id, "stop").await
    }

    /// Asks the guest to shut down cleanly (`actions/shutdown`, an ACPI event).
    pub async fn shutdown(&self, id: &InstanceId) -> Result<()> {
        self.action("shutdown", id, "shutdown").await
    }

    /// Reinstalls `id` from `spec` (image, cloud-config, root password via a secret) and
    /// gives it `spec.label` as display name: a paid machine reused instead of a new order.
    ///
    /// The reinstall (`PUT`) is sent once; an unknown outcome is `Ambiguous`. The machine
    /// is renamed only after Contabo accepted the reinstall, so a machine carrying the label
    /// always runs the spec's image.
    pub async fn reinstall(&self, id: &InstanceId, spec: &InstanceSpec) -> Result<Instance> {
        const OP: &str = "reinstall";
        let n = parse_id(OP, id)?;
        check_label(OP, &spec.label)?;
        check_image(OP, &spec.image)?;
        let secret = match &spec.admin_password {
            Some(pw) => Some(self.password_secret(OP, &spec.label, pw).await?),
            None => None,
        };
        let ssh_keys = self.ssh_secret_ids(OP).await?;
        let body = model::Reinstall {
            image_id: &spec.image.id,
            default_user: &self.settings.default_user,
            root_password: secret,
            ssh_keys,
            user_data: spec.user_data.as_deref(),
        };
        let put: Result<Vec<serde_json::Value>> = self
            .client
            .call(
                OP,
                Method::PUT,
                &format!("{INSTANCES}/{n}"),
                &body,
                Retry::Never,
                Some(&spec.label),
            )
            .await;
        if let Err(e) = put {
            if let Some(s) = secret.filter(|_| e.kind() != ErrorKind::Ambiguous) {
                self.delete_secret(s, &spec.label).await;
            }
            return Err(e);
        }
        if let Some(s) = secret {
            self.state().secrets.insert(spec.label.clone(), s);
        }
        self.rename(OP, n, &spec.label).await?;
        tracing::info!(backend = NAME, id = n, label = %spec.label, "contabo instance reinstalled");
        let got = self.read(OP, n).await?;
        Ok(self.convert(got).await)
    }

    /// Deletes password secrets this provider left behind (a process that stopped before
    /// it saw its machine `running` cannot delete the secret then): every `password` secret
    /// named like an order label whose machine with that label is installed (running or
    /// stopped) or cancelled. Secrets whose machine is still being installed, or not listed
    /// yet, are kept. Returns how many were deleted. Meant for a periodic maintenance job.
    pub async fn purge_secrets(&self) -> Result<usize> {
        const OP: &str = "purge_secrets";
        let secrets: Vec<model::NamedSecret> = self
            .client
            .all(OP, "/v1/secrets", &[("type", "password".into())], None)
            .await?;
        let mut deleted = 0;
        for secret in secrets
            .iter()
            .filter(|s| s.name.starts_with(nemordp_core::ids::LABEL_PREFIX))
        {
            let Some(id) = secret.secret_id.as_i64() else {
                continue;
            };
            let machines: Vec<model::Instance> = self
                .client
                .all(
                    OP,
                    INSTANCES,
                    &[("displayName", secret.name.clone())],
                    Some(&secret.name),
                )
                .await?;
            let done = machines
                .iter()
                .filter(|i| i.display_name.as_deref() == Some(secret.name.as_str()))
                .any(|i| i.cancelled() || matches!(i.status.as_str(), "running" | "stopped"));
            if done {
                self.delete_secret(id, &secret.name).await;
                self.state().secrets.remove(&secret.name);
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    /// Puts a machine in the reuse pool: renames it to the pool name, so the next create
    /// reinstalls it instead of ordering a new one. For paid machines no order owns (see
    /// the provisioner's orphan report); cancelled machines are never reused.
    pub async fn release_to_pool(&self, id: &InstanceId) -> Result<()> {
        const OP: &str = "release_to_pool";
        let Some(pool) = self.settings.pool_name.clone() else {
            return Err(Error::invalid_config(
                "no reuse pool configured: call ContaboBuilder::with_reuse_pool",
            )
            .with_backend(NAME)
            .with_operation(OP));
        };
        let n = parse_id(OP, id)?;
        self.rename(OP, n, &pool).await
    }

    async fn rename(&self, op: &'static str, id: i64, name: &str) -> Result<()> {
        let _: Vec<serde_json::Value> = self
            .client
            .call(
                op,
                Method::PATCH,
                &format!("{INSTANCES}/{id}"),
                &model::Rename { display_name: name },
                Retry::IfNotProcessed,
                Some(name),
            )
            .await?;
        self.state().labels.insert(id, name.to_owned());
        Ok(())
    }

    /// A pooled machine matching the spec's region and product, if any.
    async fn pooled(&self, pool: &str, spec: &InstanceSpec) -> Result<Option<model::Instance>> {
        let found: Vec<model::Instance> = self
            .client
            .all(
                "create_instance",
                INSTANCES,
                &[("displayName", pool.to_owned())],
                Some(&spec.label),
            )
            .await?;
        Ok(found
            .into_iter()
            .filter(|i| {
                i.display_name.as_deref() == Some(pool)
                    && !i.cancelled()
                    && i.region == spec.region
                    && i.product_id == spec.size
                    && matches!(i.status.as_str(), "running" | "stopped")
            })
            .min_by_key(|i| i.instance_id))
    }
}

/// Contabo's password-secret rule, from the API prose (its printed regex lost its
/// backslashes): 8+ characters, upper and lower case, and either one digit with two specials
/// or three digits with one special, specials being `!@#$^&*?_~`.
fn meets_secret_rule(p: &str) -> bool {
    let digits = p.chars().filter(char::is_ascii_digit).count();
    let specials = p.chars().filter(|c| "!@#$^&*?_~".contains(*c)).count();
    p.chars().count() >= 8
        && p.chars().any(|c| c.is_ascii_uppercase())
        && p.chars().any(|c| c.is_ascii_lowercase())
        && ((digits >= 1 && specials >= 2) || (digits >= 3 && specials >= 1))
}

/// The name of the `ssh` secret holding `key`: stable across restarts (FNV-1a of the key
/// line), and outside the order-label namespace so secret purges never touch it.
fn ssh_secret_name(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.trim().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("nemordp_ssh_{h:016x}")
}

/// Contabo ids are integers; anything else was never issued by Contabo.
fn parse_id(op: &'static str, id: &InstanceId) -> Result<i64> {
    id.as_str()
        .trim()
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            Error::not_found(format!(
                "{id} is not a contabo instance id (they are integers)"
            ))
            .with_backend(NAME)
            .with_operation(op)
        })
}

fn check_label(op: &'static str, label: &str) -> Result<()> {
    if label.trim().is_empty() || label.chars().count() > MAX_DISPLAY_NAME {
        return Err(Error::invalid_input(format!(
            "label must be 1 to {MAX_DISPLAY_NAME} characters"
        ))
        .with_backend(NAME)
        .with_operation(op));
    }
    Ok(())
}

fn check_image(op: &'static str, image: &ImageRef) -> Result<()> {
    let id = image.id.as_str();
    let uuid_like = id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if image.os != OsKind::UbuntuDesktop || !uuid_like {
        return Err(Error::invalid_input(format!(
            "contabo image {id:?} ({:?}) is not a resolved Ubuntu image; resolve the image first",
            image.os
        ))
        .with_backend(NAME)
        .with_operation(op));
    }
    Ok(())
}

/// Whether an image fits an Ubuntu desktop: an Ubuntu 22.04 or 24.04 Linux image.
fn fits_ubuntu(image: &model::Image) -> bool {
    let name = image.name.to_ascii_lowercase();
    (image.os_type.is_empty() || image.os_type.eq_ignore_ascii_case("linux"))
        && name.contains("ubuntu")
        && (name.contains("22.04") || name.contains("24.04"))
}

/// Normalised status of every documented `instanceStatus`.
fn status_of(i: &model::Instance) -> InstanceStatus {
    if i.cancelled() {
        return InstanceStatus::Terminated;
    }
    let hold = |why: &str| InstanceStatus::AccountHold(format!("contabo: {why}"));
    match i.status.as_str() {
        "provisioning" => InstanceStatus::Pending,
        "installing" | "reset_password" => InstanceStatus::Installing,
        "running" => InstanceStatus::Running,
        // rescue boots Contabo's rescue system instead of ours: not serving
        "stopped" | "rescue" => InstanceStatus::Stopped,
        "error" => InstanceStatus::Failed(
            i.error_message
                .clone()
                .filter(|m| !m.trim().is_empty())
                .unwrap_or_else(|| "contabo reports an error with no message".into()),
        ),
        "uninstalled" => InstanceStatus::Failed("contabo reports the OS uninstalled".into()),
        "verification_required" => hold("the account needs verification in the customer panel"),
        "pending_payment" => hold("the order waits for payment in the customer panel"),
        "manual_provisioning" => hold("contabo provisions this machine by hand (hours)"),
        "product_not_available" => hold("the product is not available in this region now"),
        // "unknown", "other" and anything new: keep waiting; the boot deadline catches it
        other => {
            tracing::warn!(
                backend = NAME,
                id = i.instance_id,
                status = other,
                "unusual contabo status"
            );
            InstanceStatus::Pending
        }
    }
}

fn convert(i: model::Instance) -> Instance {
    let status = status_of(&i);
    // the public IPv4 is the address (every Contabo machine has one; v6 comes first)
    let address = i
        .ip_config
        .as_ref()
        .and_then(|c| c.v4.as_ref())
        .and_then(|v| v.ip.parse::<IpAddr>().ok())
        .filter(|a| !a.is_unspecified());
    let mut out = Instance::new(
        InstanceId::new(i.instance_id.to_string()),
        i.display_name.unwrap_or_default(),
        status,
    );
    out.address = address;
    out.region = i.region;
    out.created_at = i.created_date.as_deref().and_then(parse_rfc3339);
    out
}

#[async_trait]
impl CloudProvider for Contabo {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
            .with_password_at_create(false)
            .with_password_from_us(true)
            .with_removal(Removal::Cancel)
            .with_firewall(false)
            .with_user_data(true)
            .with_max_page_size(MAX_PAGE_SIZE)
            .with_requests_per_second(5)
    }

    async fn resolve_image(&self, os: OsKind, hint: Option<&str>) -> Result<ImageRef> {
        const OP: &str = "resolve_image";
        let fail = |m: String| Error::not_found(m).with_backend(NAME).with_operation(OP);
        if os != OsKind::UbuntuDesktop {
            return Err(fail(format!(
                "the contabo provider sells Ubuntu desktops, not {os:?}"
            )));
        }
        let list = self.images().await?;
        let to_ref = |i: &model::Image| ImageRef::new(&i.image_id, &i.name, os);
        if let Some(hint) = hint.map(str::trim) {
            return match list
                .iter()
                .find(|i| i.image_id.eq_ignore_ascii_case(hint) || i.name == hint)
            {
                Some(i) if fits_ubuntu(i) => Ok(to_ref(i)),
                Some(i) => Err(fail(format!(
                    "contabo image {hint:?} ({}) is not Ubuntu 22.04 or 24.04",
                    i.name
                ))),
                None => Err(fail(format!("no contabo image {hint:?}"))),
            };
        }
        UBUNTU_PREFERRED
            .iter()
            .find_map(|name| {
                list.iter()
                    .find(|i| i.name.eq_ignore_ascii_case(name) && fits_ubuntu(i))
            })
            .or_else(|| {
                list.iter()
                    .find(|i| fits_ubuntu(i) && i.standard_image != Some(false))
            })
            .map(to_ref)
            .ok_or_else(|| fail("no Ubuntu 22.04 or 24.04 image in the contabo image list".into()))
    }

    async fn resolve_size(&self, region: &str, size: &str) -> Result<SizeRef> {
        const OP: &str = "resolve_size";
        let product = self.product(OP, size)?;
        self.check_region(OP, region, product)?;
        Ok(SizeRef::new(
            &product.id,
            region,
            product.vcpus,
            product.ram_mib,
            product.disk_gib,
        ))
    }

    async fn create_instance(&self, spec: &InstanceSpec) -> Result<Instance> {
        const OP: &str = "create_instance";
        check_label(OP, &spec.label)?;
        check_image(OP, &spec.image)?;
        // named here, before anything is bought, not in a 400
        let product = self.product(OP, &spec.size)?;
        self.check_region(OP, &spec.region, product)?;
        let period = spec.billing_months.unwrap_or(self.settings.period_months);
        if !PERIODS.contains(&period) {
            return Err(Error::invalid_input(format!(
                "contabo sells {PERIODS:?}-month contracts, not {period} months"
            ))
            .with_backend(NAME)
            .with_operation(OP));
        }
        if let Some(pool) = &self.settings.pool_name {
            let _guard = self.pool_lock.lock().await;
            if let Some(free) = self.pooled(pool, spec).await? {
                tracing::info!(backend = NAME, id = free.instance_id, label = %spec.label, "reusing a pooled contabo machine");
                let id = InstanceId::new(free.instance_id.to_string());
                return self
                    .reinstall(&id, spec)
                    .await
                    .map_err(|e| e.with_operation(OP));
            }
        }
        let ssh_keys = self.ssh_secret_ids(OP).await?;
        let secret = match &spec.admin_password {
            Some(pw) => Some(self.password_secret(OP, &spec.label, pw).await?),
            None => None,
        };
        let body = model::CreateInstance {
            image_id: &spec.image.id,
            product_id: &spec.size,
            region: &spec.region,
            period,
            display_name: &spec.label,
            default_user: &self.settings.default_user,
            root_password: secret,
            ssh_keys,
            user_data: spec.user_data.as_deref(),
        };
        let created: Result<Vec<model::Created>> = self
            .client
            .call(
                OP,
                Method::POST,
                INSTANCES,
                &body,
                Retry::Never,
                Some(&spec.label),
            )
            .await;
        let created = match created {
            Ok(c) => c,
            Err(e) => {
                // a refused create never used the secret; an ambiguous one may have
                if let Some(s) = secret.filter(|_| e.kind() != ErrorKind::Ambiguous) {
                    self.delete_secret(s, &spec.label).await;
                } else if let Some(s) = secret {
                    self.state().secrets.insert(spec.label.clone(), s);
                }
                return Err(e);
            }
        };
        let Some(first) = created.into_iter().next() else {
            return Err(Error::new(
                ErrorKind::Ambiguous,
                "the create answered 201 without data; look the label up",
            )
            .with_backend(NAME)
            .with_operation(OP));
        };
        {
            let mut st = self.state();
            st.labels.insert(first.instance_id, spec.label.clone());
            if let Some(s) = secret {
                st.secrets.insert(spec.label.clone(), s);
            }
        }
        let mut out = Instance::new(
            InstanceId::new(first.instance_id.to_string()),
            spec.label.clone(),
            match first.status.as_str() {
                "installing" | "reset_password" => InstanceStatus::Installing,
                _ => InstanceStatus::Pending,
            },
        );
        out.region = if first.region.is_empty() {
            spec.region.clone()
        } else {
            first.region
        };
        out.created_at = first.created_date.as_deref().and_then(parse_rfc3339);
        tracing::info!(backend = NAME, id = %out.id, label = %out.label, period, "contabo instance ordered");
        Ok(out)
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Instance> {
        let n = parse_id("get_instance", id)?;
        let got = self.read("get_instance", n).await?;
        Ok(self.convert(got).await)
    }

    async fn find_by_label(&self, label: &str) -> Result<Vec<Instance>> {
        let found: Vec<model::Instance> = self
            .client
            .all(
                "find_by_label",
                INSTANCES,
                &[("displayName", label.to_owned())],
                Some(label),
            )
            .await?;
        let mut out = Vec::new();
        for i in found {
            // the filter may match more loosely than we need; cancelled ones are not live
            if i.display_name.as_deref() == Some(label) && !i.cancelled() {
                out.push(self.convert(i).await);
            }
        }
        Ok(out)
    }

    async fn list_instances(&self, page: PageRequest) -> Result<Page<Instance>> {
        const OP: &str = "list_instances";
        let number = match page.cursor.as_deref() {
            None => 1,
            Some(c) => c.parse::<u64>().ok().filter(|n| *n >= 1).ok_or_else(|| {
                Error::invalid_input(format!("bad contabo page cursor {c:?}"))
                    .with_backend(NAME)
                    .with_operation(OP)
            })?,
        };
        let (items, more) = self
            .client
            .page::<model::Instance>(OP, INSTANCES, &[], number, page.limit, None)
            .await?;
        let mut out = Vec::new();
        for i in items.into_iter().filter(|i| !i.cancelled()) {
            out.push(self.convert(i).await);
        }
        Ok(Page {
            items: out,
            next: more.then(|| (number + 1).to_string()),
        })
    }

    async fn reboot(&self, id: &InstanceId) -> Result<()> {
        self.action("reboot", id, "restart").await
    }

    /// A clean ACPI shutdown; an instance already stopped is left alone. [`Contabo::power_off`]
    /// is the hard stop.
    async fn stop(&self, id: &InstanceId) -> Result<()> {
        let n = parse_id("stop", id)?;
        let now = self.read("stop", n).await?;
        if now.status == "stopped" {
            return Ok(());
        }
        self.action("stop", id, "shutdown").await
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        self.action("start", id, "start").await
    }

    /// With a reuse pool, puts the machine in it ([`Contabo::release_to_pool`]) so the next
    /// create reinstalls it; without one, declines (the caller cancels or reports it).
    async fn retain_for_reuse(&self, id: &InstanceId) -> Result<bool> {
        if self.settings.pool_name.is_none() {
            return Ok(false);
        }
        self.release_to_pool(id).await.map(|()| true)
    }

    /// Cancels: the contract ends at the earliest date Contabo allows and the machine runs,
    /// billed, until then. Missing or already cancelled machines are success.
    async fn delete_instance(&self, id: &InstanceId) -> Result<()> {
        const OP: &str = "delete_instance";
        let Ok(n) = parse_id(OP, id) else {
            return Ok(());
        };
        match self.read(OP, n).await {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
            Ok(i) if i.cancelled() => return Ok(()),
            Ok(_) => {}
        }
        let trace = self.trace_of(n);
        let r: Result<Vec<serde_json::Value>> = self
            .client
            .call(
                OP,
                Method::POST,
                &format!("{INSTANCES}/{n}/cancel"),
                &serde_json::json!({}),
                Retry::IfNotProcessed,
                trace.as_deref(),
            )
            .await;
        match r {
            Ok(_) => {
                tracing::info!(backend = NAME, id = n, "contabo instance cancelled");
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            // a cancel racing another one is refused (422); the record says whether it landed
            Err(e) if e.kind() == ErrorKind::Rejected => match self.read(OP, n).await {
                Ok(i) if i.cancelled() => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(status: &str, cancel: Option<&str>) -> model::Instance {
        serde_json::from_value(serde_json::json!({
            "instanceId": 12345, "displayName": "nemordp-x", "status": status,
            "region": "EU", "productId": "V92", "errorMessage": "disk broke",
            "createdDate": "2021-06-03T06:27:12Z", "cancelDate": cancel,
            "ipConfig": {"v4": {"ip": "192.0.2.4", "netmaskCidr": 22, "gateway": "192.0.2.1"},
                         "v6": {"ip": "2001:db8::4", "netmaskCidr": 64, "gateway": "fe80::1"}},
            "somethingNew": [1, 2]
        }))
        .unwrap()
    }

    #[test]
    fn every_documented_status_is_mapped() {
        use InstanceStatus as S;
        let cases = [
            ("provisioning", S::Pending),
            ("installing", S::Installing),
            ("reset_password", S::Installing),
            ("running", S::Running),
            ("stopped", S::Stopped),
            ("rescue", S::Stopped),
            ("unknown", S::Pending),
            ("other", S::Pending),
        ];
        for (s, want) in cases {
            assert_eq!(status_of(&inst(s, None)), want, "{s}");
        }
        assert_eq!(
            status_of(&inst("error", None)),
            S::Failed("disk broke".into())
        );
        assert!(matches!(
            status_of(&inst("uninstalled", None)),
            S::Failed(_)
        ));
        for s in [
            "verification_required",
            "pending_payment",
            "manual_provisioning",
            "product_not_available",
        ] {
            assert!(
                matches!(status_of(&inst(s, None)), S::AccountHold(_)),
                "{s}"
            );
        }
        assert_eq!(
            status_of(&inst("running", Some("2021-07-03"))),
            S::Terminated
        );
        assert_eq!(status_of(&inst("running", Some(""))), S::Running);
    }

    #[test]
    fn conversion_reads_ipv4_and_dates() {
        let i = convert(inst("running", None));
        assert_eq!(i.id.as_str(), "12345");
        assert_eq!(i.label, "nemordp-x");
        assert_eq!(i.address, Some("192.0.2.4".parse().unwrap()));
        assert!(i.is_ready_for_probe());
        assert_eq!(
            i.created_at,
            Some(nemordp_core::Timestamp::from_unix_secs(1_622_701_632))
        );
        let bare: model::Instance =
            serde_json::from_value(serde_json::json!({"instanceId": 7})).unwrap();
        let c = convert(bare);
        assert_eq!(c.address, None);
        assert_eq!(c.status, InstanceStatus::Pending);
    }

    #[test]
    fn secret_rule_from_the_prose() {
        assert!(meets_secret_rule("PwdA?2092w#"));
        assert!(meets_secret_rule("Abcdef1_@"));
        assert!(meets_secret_rule("Abcde123_"));
        assert!(
            !meets_secret_rule("Abcdef1_x"),
            "one digit needs two specials"
        );
        assert!(!meets_secret_rule("abcdef123_"), "no upper case");
        assert!(!meets_secret_rule("Ab1_@"), "too short");
        assert!(
            !meets_secret_rule("Abcdefgh-2345.xyzWQ+"),
            "no contabo special"
        );
        for _ in 0..200 {
            let p = nemordp_core::password::new_password("rdpuser").unwrap();
            assert!(meets_secret_rule(p.expose_secret()));
        }
    }

    #[test]
    fn ids_are_integers() {
        assert_eq!(parse_id("t", &InstanceId::new("12345")).unwrap(), 12345);
        for bad in ["", "abc", "-4", "0", "00000000-0000-4000-8000-000000000000"] {
            assert_eq!(
                parse_id("t", &InstanceId::new(bad)).unwrap_err().kind(),
                ErrorKind::NotFound
            );
        }
    }
}
