//! Paystack wire types, read defensively: every field we do not strictly need is optional, and
//! amounts are integers in the currency's subunits (never floats).

use secrecy::SecretString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// An error body: `{status: false, message, type, code, meta}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub(crate) status: Option<bool>,
    #[serde(default)]
    pub(crate) message: Option<String>,
    #[serde(default)]
    pub(crate) code: Option<String>,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
}

/// `POST /transaction/initialize` body (`TransactionInitialize`).
#[derive(Debug, Serialize)]
pub(crate) struct InitializeRequest<'a> {
    pub(crate) email: &'a str,
    pub(crate) amount: u64,
    pub(crate) currency: &'a str,
    pub(crate) reference: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) callback_url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) channels: Option<&'a [String]>,
    pub(crate) metadata: Value,
}

/// `data` of the initialize answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Initialized {
    pub(crate) authorization_url: String,
    #[serde(default)]
    pub(crate) reference: String,
}

/// A transaction as `verify` and `charge.success` describe it.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Transaction {
    /// Paystack's transaction id.
    #[serde(default)]
    pub id: Option<u64>,
    /// `success`, `failed`, `abandoned`, `ongoing`, `pending`, `processing`, `queued`,
    /// `reversed`, …
    #[serde(default)]
    pub status: String,
    /// The reference (ours: the payment id).
    #[serde(default)]
    pub reference: String,
    /// Amount in subunits.
    #[serde(default)]
    pub amount: Option<u64>,
    /// The amount first requested, in subunits.
    #[serde(default)]
    pub requested_amount: Option<u64>,
    /// ISO currency code.
    #[serde(default)]
    pub currency: String,
    /// When it was paid.
    #[serde(default)]
    pub paid_at: Option<String>,
    /// `card`, `bank`, `ussd`, …
    #[serde(default)]
    pub channel: Option<String>,
    /// Payer's IP address as Paystack saw it.
    #[serde(default)]
    pub ip_address: Option<String>,
    /// Custom data given at initialize (an object, or JSON text).
    #[serde(default, deserialize_with = "metadata")]
    pub metadata: Option<Value>,
    /// The card or account used.
    #[serde(default)]
    pub authorization: Option<Authorization>,
    /// The paying customer.
    #[serde(default)]
    pub customer: Option<CustomerRef>,
    /// The plan, for subscription charges (a `PLN_…` code or a plan object).
    #[serde(default)]
    pub plan: Option<Value>,
}

impl Transaction {
    /// The plan code of a subscription charge.
    pub fn plan_code(&self) -> Option<&str> {
        match self.plan.as_ref()? {
            Value::String(s) => Some(s.as_str()),
            Value::Object(o) => o.get("plan_code")?.as_str(),
            _ => None,
        }
        .filter(|c| c.starts_with("PLN_"))
    }

    /// A string field of the metadata.
    pub fn metadata_str(&self, key: &str) -> Option<&str> {
        self.metadata.as_ref()?.get(key)?.as_str()
    }

    /// An integer field of the metadata (integers or integer text).
    pub fn metadata_u64(&self, key: &str) -> Option<u64> {
        match self.metadata.as_ref()?.get(key)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
    }
}

/// Metadata comes as an object, JSON text, `""` or `0`: keep objects only.
fn metadata<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        v @ Value::Object(_) => Some(v),
        Value::String(s) => serde_json::from_str::<Value>(&s)
            .ok()
            .filter(Value::is_object),
        _ => None,
    })
}

/// A card or account authorization. The code can charge the customer again: it is a secret.
#[derive(Clone, Deserialize)]
#[non_exhaustive]
pub struct Authorization {
    /// `AUTH_…`: charges the card again when `reusable`. Secret.
    #[serde(default)]
    pub authorization_code: Option<SecretString>,
    /// Stable card fingerprint across merchants' transactions.
    #[serde(default)]
    pub signature: Option<String>,
    /// First six digits.
    #[serde(default)]
    pub bin: Option<String>,
    /// Last four digits.
    #[serde(default)]
    pub last4: Option<String>,
    /// Issuing country.
    #[serde(default)]
    pub country_code: Option<String>,
    /// Card brand.
    #[serde(default)]
    pub brand: Option<String>,
    /// Whether the code can be charged again.
    #[serde(default)]
    pub reusable: Option<bool>,
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorization")
            .field(
                "authorization_code",
                &self.authorization_code.as_ref().map(|_| "[REDACTED]"),
            )
            .field("signature", &self.signature)
            .field("last4", &self.last4)
            .field("brand", &self.brand)
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

/// The customer as embedded in transactions and events.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct CustomerRef {
    /// Paystack's customer id.
    #[serde(default)]
    pub id: Option<u64>,
    /// E-mail.
    #[serde(default)]
    pub email: Option<String>,
    /// `CUS_…`.
    #[serde(default)]
    pub customer_code: Option<String>,
    /// `allow`, `deny` or `default`.
    #[serde(default)]
    pub risk_action: Option<String>,
}

/// A refund as the `refund.*` events describe it.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Refund {
    /// Paystack's refund id.
    #[serde(default)]
    pub id: Option<u64>,
    /// Refund status.
    #[serde(default)]
    pub status: Option<String>,
    /// The refunded transaction's reference.
    #[serde(default)]
    pub transaction_reference: Option<String>,
    /// Amount refunded, in subunits (an integer or integer text; anything else reads as
    /// unknown, which is handled as a full refund).
    #[serde(default, deserialize_with = "minor_units")]
    pub amount: Option<u64>,
    /// Currency code.
    #[serde(default)]
    pub currency: Option<String>,
}

/// Subunits sent as an integer or as integer text. Floats, negatives and anything else read
/// as `None` (unknown) rather than failing the whole event: callers treat unknown
/// conservatively.
fn minor_units<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                t.parse().ok()
            } else {
                None
            }
        }
        _ => None,
    })
}

/// A dispute as the `charge.dispute.*` events describe it.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Dispute {
    /// Paystack's dispute id.
    #[serde(default)]
    pub id: Option<u64>,
    /// Dispute status: `awaiting-merchant-feedback`, `awaiting-bank-feedback`, `pending`,
    /// `resolved`.
    #[serde(default)]
    pub status: Option<String>,
    /// How it was resolved (`charge.dispute.resolve`): `declined` (the merchant contested
    /// and the money stays) or `merchant-accepted` (the customer is refunded).
    #[serde(default)]
    pub resolution: Option<String>,
    /// The amount refunded to the customer, in subunits (same reading as refund amounts).
    #[serde(default, deserialize_with = "minor_units")]
    pub refund_amount: Option<u64>,
    /// Currency code.
    #[serde(default)]
    pub currency: Option<String>,
    /// The disputed transaction.
    #[serde(default)]
    pub transaction: Option<Transaction>,
}

impl Dispute {
    /// Whether a resolved dispute left the money with the merchant: resolution `declined`
    /// (or `merchant-declined`) and nothing refunded. Unknown resolutions are not.
    pub fn merchant_won(&self) -> bool {
        let declined = self.resolution.as_deref().is_some_and(|r| {
            let r = r.trim();
            r.eq_ignore_ascii_case("declined") || r.eq_ignore_ascii_case("merchant-declined")
        });
        declined && self.refund_amount.unwrap_or(0) == 0
    }
}

/// A subscription as the `subscription.*` and `invoice.*` events describe it.
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Subscription {
    /// `SUB_…`.
    #[serde(default)]
    pub subscription_code: Option<String>,
    /// Token needed to enable/disable: a secret.
    #[serde(default)]
    pub email_token: Option<SecretString>,
    /// `active`, `non-renewing`, `attention`, `completed`, `cancelled`.
    #[serde(default)]
    pub status: Option<String>,
    /// Next charge date.
    #[serde(default)]
    pub next_payment_date: Option<String>,
    /// Amount in subunits.
    #[serde(default)]
    pub amount: Option<u64>,
}

/// A subscription invoice (`invoice.*`).
#[derive(Debug, Clone, Deserialize)]
#[non_exhaustive]
pub struct Invoice {
    /// `INV_…`.
    #[serde(default)]
    pub invoice_code: Option<String>,
    /// Invoice status.
    #[serde(default)]
    pub status: Option<String>,
    /// Whether it was paid.
    #[serde(default)]
    pub paid: Option<bool>,
    /// Amount in subunits.
    #[serde(default)]
    pub amount: Option<u64>,
    /// The subscription it belongs to.
    #[serde(default)]
    pub subscription: Option<Subscription>,
    /// The charge for it, if any.
    #[serde(default)]
    pub transaction: Option<Transaction>,
}
