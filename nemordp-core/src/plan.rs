//! The plan catalog: what a host sells, loaded from TOML or JSON configuration or built in code.
//!
//! Nothing provider-specific is hard-coded here: a plan names its provider (as registered with
//! the host), its region and the provider's own size/product id as plain strings.
//!
//! ```
//! use nemordp_core::plan::PlanCatalog;
//!
//! let catalog = PlanCatalog::from_toml_str(r#"
//!     [[plan]]
//!     id = "win-2c-4g"
//!     name = "Windows Server 2022, 2 vCPU, 4 GB"
//!     provider = "vultr"
//!     os = "windows_server"
//!     region = "jnb"
//!     size = "vc2-2c-4gb"
//!     price = "45000.00 NGN"
//!     period = "monthly"
//!     packages = ["googlechrome", "7zip"]
//! "#).unwrap();
//! let plan = catalog.get(&"win-2c-4g".into()).unwrap();
//! assert_eq!(plan.boot_deadline().as_secs(), 60 * 60); // Windows default
//! ```

use std::{collections::BTreeMap, fmt, path::Path, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    ids::PlanId,
    money::Money,
};

/// The operating system family a plan delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OsKind {
    /// Windows Server with Desktop Experience; RDP is built in.
    WindowsServer,
    /// Ubuntu with a desktop session served over RDP by xrdp.
    UbuntuDesktop,
}

impl OsKind {
    /// How long a first boot may take before the order needs attention (Windows 60 min, Linux 20).
    pub const fn default_boot_deadline(self) -> Duration {
        match self {
            Self::WindowsServer => Duration::from_secs(60 * 60),
            Self::UbuntuDesktop => Duration::from_secs(20 * 60),
        }
    }

    /// The account name the customer logs in with.
    pub const fn default_username(self) -> &'static str {
        match self {
            Self::WindowsServer => "Administrator",
            Self::UbuntuDesktop => "rdpuser",
        }
    }
}

impl fmt::Display for OsKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::WindowsServer => "Windows Server",
            Self::UbuntuDesktop => "Ubuntu desktop",
        })
    }
}

/// How often a plan is billed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BillingPeriod {
    /// Every month.
    Monthly,
    /// Every three months.
    Quarterly,
    /// Every six months.
    SemiAnnual,
    /// Every twelve months.
    Annual,
}

impl BillingPeriod {
    /// Length in months.
    pub const fn months(self) -> u32 {
        match self {
            Self::Monthly => 1,
            Self::Quarterly => 3,
            Self::SemiAnnual => 6,
            Self::Annual => 12,
        }
    }
}

/// One sellable plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Plan {
    /// Stable id the host's panel refers to.
    pub id: PlanId,
    /// Name shown to customers.
    pub name: String,
    /// Name of the provider the host registered (`"vultr"`, `"contabo"`, `"sim"`, …).
    pub provider: String,
    /// Operating system family.
    pub os: OsKind,
    /// Provider region id (`"jnb"`, `"EU"`, …).
    pub region: String,
    /// Provider size/product id (`"vc2-2c-4gb"`, `"V92"`, …).
    pub size: String,
    /// Provider image hint (OS id or image UUID); `None` lets the provider pick its default for `os`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Price per billing period, in a fiat currency.
    pub price: Money,
    /// Billing period.
    pub period: BillingPeriod,
    /// Boot deadline in seconds; `None` uses [`OsKind::default_boot_deadline`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_deadline_secs: Option<u64>,
    /// Packages installed at first boot (Chocolatey on Windows, apt on Ubuntu).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

impl Plan {
    /// A plan with the required fields; use the `with_*` methods for the rest.
    pub fn new(
        id: impl Into<PlanId>,
        provider: impl Into<String>,
        os: OsKind,
        region: impl Into<String>,
        size: impl Into<String>,
        price: Money,
    ) -> Self {
        let id = id.into();
        Self {
            name: id.to_string(),
            id,
            provider: provider.into(),
            os,
            region: region.into(),
            size: size.into(),
            image: None,
            price,
            period: BillingPeriod::Monthly,
            boot_deadline_secs: None,
            packages: Vec::new(),
        }
    }

    /// Sets the display name.
    #[must_use]
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the provider image hint.
    #[must_use]
    pub fn with_image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Sets the billing period.
    #[must_use]
    pub fn with_period(mut self, period: BillingPeriod) -> Self {
        self.period = period;
        self
    }

    /// Overrides the boot deadline.
    #[must_use]
    pub fn with_boot_deadline(mut self, deadline: Duration) -> Self {
        self.boot_deadline_secs = Some(deadline.as_secs());
        self
    }

    /// Sets the first-boot packages.
    #[must_use]
    pub fn with_packages<I, S>(mut self, packages: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.packages = packages.into_iter().map(Into::into).collect();
        self
    }

    /// The boot deadline in force.
    pub fn boot_deadline(&self) -> Duration {
        self.boot_deadline_secs
            .map_or_else(|| self.os.default_boot_deadline(), Duration::from_secs)
    }

    /// Checks the plan is sellable: non-empty ids, a positive fiat price, a sane deadline, and
    /// package names that cannot smuggle anything into a boot script.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |why: String| Error::invalid_config(format!("plan {:?}: {why}", self.id.as_str()));
        for (field, value) in [
            ("id", self.id.as_str()),
            ("provider", self.provider.as_str()),
            ("region", self.region.as_str()),
            ("size", self.size.as_str()),
        ] {
            if value.trim().is_empty() || value.chars().any(char::is_control) {
                return Err(bad(format!("{field} must be non-empty printable text")));
            }
        }
        if self.price.asset().fiat().is_none() {
            return Err(bad(format!(
                "price must be in a fiat currency, got {}",
                self.price.asset()
            )));
        }
        if self.price.is_zero() {
            return Err(bad("price must be positive".into()));
        }
        if matches!(self.boot_deadline_secs, Some(s) if s < 60) {
            return Err(bad("boot deadline under a minute".into()));
        }
        for p in &self.packages {
            if !is_valid_package_name(p) {
                return Err(bad(format!("package name {p:?} is not allowed")));
            }
        }
        Ok(())
    }
}

/// Package names allowed in plans: start with a letter or digit, then letters, digits and
/// `. + - _`, at most 100 characters. Covers apt and Chocolatey names, and nothing a shell,
/// PowerShell or YAML could interpret.
pub fn is_valid_package_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 100
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-' | b'_'))
}

/// A validated set of plans, keyed by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlanCatalog {
    plans: BTreeMap<PlanId, Plan>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default, rename = "plan")]
    plans: Vec<Plan>,
}

impl PlanCatalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a catalog from plans, validating each and refusing duplicate ids.
    pub fn from_plans(plans: impl IntoIterator<Item = Plan>) -> Result<Self> {
        let mut catalog = Self::new();
        for plan in plans {
            catalog.insert(plan)?;
        }
        Ok(catalog)
    }

    /// Adds a plan; an error if invalid or its id is taken.
    pub fn insert(&mut self, plan: Plan) -> Result<()> {
        plan.validate()?;
        if self.plans.contains_key(&plan.id) {
            return Err(Error::invalid_config(format!(
                "duplicate plan id {:?}",
                plan.id.as_str()
            )));
        }
        self.plans.insert(plan.id.clone(), plan);
        Ok(())
    }

    /// Parses `[[plan]]` tables from TOML.
    pub fn from_toml_str(text: &str) -> Result<Self> {
        let file: CatalogFile = toml::from_str(text)
            .map_err(|e| Error::invalid_config(format!("plan catalog: {e}")))?;
        Self::from_plans(file.plans)
    }

    /// Parses `{"plan": [...]}` from JSON.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let file: CatalogFile = serde_json::from_str(text)
            .map_err(|e| Error::invalid_config(format!("plan catalog: {e}")))?;
        Self::from_plans(file.plans)
    }

    /// Loads a `.toml` or `.json` file, by extension.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::invalid_config(format!("reading plan catalog {}", path.display())).with_source(e)
        })?;
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => Self::from_toml_str(&text),
            Some("json") => Self::from_json_str(&text),
            _ => Err(Error::invalid_config(format!(
                "plan catalog {} must end in .toml or .json",
                path.display()
            ))),
        }
    }

    /// The plan with `id`.
    pub fn get(&self, id: &PlanId) -> Option<&Plan> {
        self.plans.get(id)
    }

    /// All plans in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Plan> {
        self.plans.values()
    }

    /// Number of plans.
    pub fn len(&self) -> usize {
        self.plans.len()
    }

    /// True when there are no plans.
    pub fn is_empty(&self) -> bool {
        self.plans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn plan() -> Plan {
        Plan::new(
            "ubuntu-4g",
            "contabo",
            OsKind::UbuntuDesktop,
            "EU",
            "V92",
            Money::parse_major(Currency::Eur, "9.99").unwrap(),
        )
    }

    #[test]
    fn validates_plans() {
        assert!(plan().validate().is_ok());
        assert_eq!(plan().boot_deadline(), Duration::from_secs(1200));
        let crypto_price = Plan {
            price: Money::parse_major(crate::money::Asset::Btc, "0.001").unwrap(),
            ..plan()
        };
        assert!(crypto_price.validate().is_err());
        let free = Plan {
            price: Money::zero(Currency::Eur.into()),
            ..plan()
        };
        assert!(free.validate().is_err());
        for evil in [
            "vlc; rm -rf /",
            "$(reboot)",
            "-flag",
            "a b",
            "x\ny",
            "firefox`id`",
            "",
        ] {
            assert!(
                plan().with_packages([evil]).validate().is_err(),
                "{evil:?} accepted"
            );
        }
        assert!(
            plan()
                .with_packages([
                    "libreoffice",
                    "g++",
                    "python3.11",
                    "notepadplusplus.install"
                ])
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn loads_json_and_rejects_duplicates_and_unknown_fields() {
        let json = serde_json::json!({"plan": [serde_json::to_value(plan()).unwrap()]}).to_string();
        let c = PlanCatalog::from_json_str(&json).unwrap();
        assert_eq!(c.len(), 1);
        let twice = serde_json::json!({"plan": [serde_json::to_value(plan()).unwrap(), serde_json::to_value(plan()).unwrap()]});
        assert!(PlanCatalog::from_json_str(&twice.to_string()).is_err());
        let unknown = r#"[[plan]]
id = "a"
provider = "sim"
name = "a"
os = "windows_server"
region = "r"
size = "s"
price = "1.00 USD"
period = "monthly"
colour = "blue""#;
        let err = PlanCatalog::from_toml_str(unknown).unwrap_err();
        assert!(err.to_string().contains("colour"), "{err}");
        let float_price = unknown
            .replace("price = \"1.00 USD\"", "price = 1.0")
            .replace("colour = \"blue\"", "");
        assert!(PlanCatalog::from_toml_str(&float_price).is_err());
    }
}
