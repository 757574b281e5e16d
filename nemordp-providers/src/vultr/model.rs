//! Wire types of the Vultr API v2 (only the fields nemordp reads or sends; unknown fields are
//! ignored).

use serde::{Deserialize, Serialize};

/// `meta` of a paged list.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Meta {
    #[serde(default)]
    pub(crate) links: Links,
}

/// `meta.links`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Links {
    #[serde(default)]
    pub(crate) next: String,
}

/// One entry of `GET /os`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Os {
    pub(crate) id: i64,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) family: String,
}

/// One entry of `GET /plans`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Plan {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) vcpu_count: u32,
    #[serde(default)]
    pub(crate) ram: u32,
    #[serde(default)]
    pub(crate) disk: u32,
    #[serde(default)]
    pub(crate) locations: Vec<String>,
}

/// One entry of `GET /regions`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Region {
    pub(crate) id: String,
}

/// `GET /regions/{id}/availability`.
#[derive(Debug, Deserialize)]
pub(crate) struct Availability {
    #[serde(default)]
    pub(crate) available_plans: Vec<String>,
}

/// An instance as Vultr reports it.
#[derive(Deserialize)]
pub(crate) struct Instance {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) label: String,
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) power_status: String,
    #[serde(default)]
    pub(crate) server_status: String,
    #[serde(default)]
    pub(crate) main_ip: String,
    #[serde(default)]
    pub(crate) region: String,
    #[serde(default)]
    pub(crate) date_created: String,
    /// Only in the 202 body of a create.
    #[serde(default)]
    pub(crate) default_password: Option<String>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("id", &self.id)
            .field("label", &self.label)
            .field("status", &self.status)
            .field("power_status", &self.power_status)
            .field("server_status", &self.server_status)
            .field("main_ip", &self.main_ip)
            .field("region", &self.region)
            .field(
                "default_password",
                &self.default_password.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

/// `{"instance": {…}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct InstanceEnvelope {
    pub(crate) instance: Instance,
}

/// Body of `POST /instances`.
#[derive(Debug, Serialize)]
pub(crate) struct CreateInstance<'a> {
    pub(crate) region: &'a str,
    pub(crate) plan: &'a str,
    pub(crate) os_id: i64,
    pub(crate) label: &'a str,
    pub(crate) hostname: &'a str,
    pub(crate) tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) firewall_group_id: Option<String>,
    /// `"enabled"` or `"disabled"`: a string on the wire, not a bool.
    pub(crate) backups: &'static str,
    pub(crate) activation_email: bool,
}

/// A firewall group.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FirewallGroup {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) description: String,
    #[serde(default)]
    pub(crate) rule_count: u32,
}

/// `{"firewall_group": {…}}`.
#[derive(Debug, Deserialize)]
pub(crate) struct FirewallEnvelope {
    pub(crate) firewall_group: FirewallGroup,
}

/// Body of `POST /firewalls`.
#[derive(Debug, Serialize)]
pub(crate) struct CreateFirewall<'a> {
    pub(crate) description: &'a str,
}

/// Body of `POST /firewalls/{id}/rules`.
#[derive(Debug, Serialize)]
pub(crate) struct CreateFirewallRule {
    pub(crate) ip_type: &'static str,
    pub(crate) protocol: &'static str,
    pub(crate) port: &'static str,
    pub(crate) subnet: String,
    pub(crate) subnet_size: u8,
    pub(crate) notes: &'static str,
}

/// `{"error": "...", "status": N}`.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub(crate) error: String,
}
