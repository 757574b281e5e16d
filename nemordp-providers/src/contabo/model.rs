//! Wire types of the Contabo API v1 (only the fields nemordp reads or sends; unknown fields are
//! ignored, and every field read is optional or defaulted so a thin answer still parses).
#![allow(
    clippy::struct_field_names,
    reason = "fields mirror Contabo's wire names (imageId, instanceId, ...)"
)]

use serde::{Deserialize, Serialize};

/// `_pagination` of a list.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Pagination {
    /// The spec types this as `number`, so floats are accepted.
    #[serde(default)]
    pub(crate) total_pages: Option<f64>,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    #[serde(default)]
    pub(crate) expires_in: Option<u64>,
    #[serde(default)]
    pub(crate) refresh_token: Option<String>,
    #[serde(default)]
    pub(crate) refresh_expires_in: Option<u64>,
}

impl std::fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenResponse")
            .field("expires_in", &self.expires_in)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .finish_non_exhaustive()
    }
}

/// The token endpoint's error body (`{"error", "error_description"}`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct TokenError {
    #[serde(default)]
    pub(crate) error: String,
    #[serde(default)]
    pub(crate) error_description: String,
}

/// One standard or custom image.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Image {
    pub(crate) image_id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) os_type: String,
    #[serde(default)]
    pub(crate) standard_image: Option<bool>,
}

/// `ipConfig.v4`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Ip {
    #[serde(default)]
    pub(crate) ip: String,
}

/// `ipConfig`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct IpConfig {
    #[serde(default)]
    pub(crate) v4: Option<Ip>,
}

/// An instance as `GET /v1/compute/instances[/{id}]` reports it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Instance {
    pub(crate) instance_id: i64,
    #[serde(default)]
    pub(crate) display_name: Option<String>,
    #[serde(default)]
    pub(crate) region: String,
    #[serde(default)]
    pub(crate) product_id: String,
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) error_message: Option<String>,
    #[serde(default)]
    pub(crate) created_date: Option<String>,
    /// Set once the instance is cancelled: the contract ends that day.
    #[serde(default)]
    pub(crate) cancel_date: Option<String>,
    #[serde(default)]
    pub(crate) ip_config: Option<IpConfig>,
}

impl Instance {
    /// Whether a cancellation is on record.
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel_date
            .as_deref()
            .is_some_and(|d| !d.trim().is_empty())
    }
}

/// `data[0]` of the 201 answer to a create.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Created {
    pub(crate) instance_id: i64,
    #[serde(default)]
    pub(crate) region: String,
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) created_date: Option<String>,
}

/// A secret as returned by `POST /v1/secrets` (the value is never read back).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Secret {
    /// `number` in the spec.
    pub(crate) secret_id: serde_json::Number,
}

/// A secret as listed by `GET /v1/secrets` (the value is never read).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NamedSecret {
    pub(crate) secret_id: serde_json::Number,
    #[serde(default)]
    pub(crate) name: String,
}

/// `{"data": [...]}` of every answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Data<T> {
    pub(crate) data: Vec<T>,
}

/// Body of `POST /v1/secrets`.
#[derive(Serialize)]
pub(crate) struct CreateSecret<'a> {
    pub(crate) name: &'a str,
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) value: &'a str,
}

impl std::fmt::Debug for CreateSecret<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecret")
            .field("name", &self.name)
            .field("type", &self.kind)
            .finish_non_exhaustive()
    }
}

/// Body of `POST /v1/compute/instances`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreateInstance<'a> {
    pub(crate) image_id: &'a str,
    pub(crate) product_id: &'a str,
    pub(crate) region: &'a str,
    pub(crate) period: u32,
    pub(crate) display_name: &'a str,
    pub(crate) default_user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) root_password: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) ssh_keys: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_data: Option<&'a str>,
}

/// Body of `PUT /v1/compute/instances/{id}` (reinstall).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Reinstall<'a> {
    pub(crate) image_id: &'a str,
    pub(crate) default_user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) root_password: Option<i64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) ssh_keys: Vec<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user_data: Option<&'a str>,
}

/// Body of `PATCH /v1/compute/instances/{id}`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Rename<'a> {
    pub(crate) display_name: &'a str,
}

/// `message` of an error body: a string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(crate) enum Message {
    One(String),
    Many(Vec<String>),
}

/// `{"statusCode": N, "message": ...}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub(crate) message: Option<Message>,
}

impl ErrorBody {
    /// The message as one line (list entries joined with `; `).
    pub(crate) fn text(self) -> Option<String> {
        match self.message? {
            Message::One(s) => Some(s),
            Message::Many(v) => Some(v.join("; ")),
        }
        .filter(|s| !s.trim().is_empty())
    }
}
