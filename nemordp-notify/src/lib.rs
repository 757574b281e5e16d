//! # nemordp-notify
//!
//! [`Notifier`] implementations for [nemordp](https://example.invalid/nemordp), delivered
//! through the store's outbox by the Provisioner's relay (written in the same transaction as
//! the state change, retried with backoff, marked failed with its history when it keeps
//! failing):
//!
//! - feature `smtp`: [`smtp::SmtpNotifier`], customer e-mail (STARTTLS or implicit TLS, auth,
//!   pooled connections) with a plain-text and an HTML part rendered from overridable
//!   [`template::Templates`] and the `.rdp` file attached to the "ready" message; plus
//!   [`smtp::EmlDirNotifier`], which writes the same messages into a folder.
//! - feature `webhook`: [`webhook::WebhookNotifier`], Standard Webhooks-signed JSON events for
//!   the host's own systems, and [`webhook::WebhookVerifier`] for receivers.
//!
//! This crate also re-exports `nemordp_core::notify`, so `nemordp::notify::Notifier` and
//! `nemordp::notify::smtp::SmtpNotifier` sit side by side.
//!
//! Idempotency: a notification's id is its outbox row id; the e-mail `Message-ID` and the
//! `webhook-id` are derived from it, so a resend after a crash is recognisably the same.
//!
//! Secrets: the machine password leaves its `SecretString` only while rendering the "ready"
//! message body (and the "ready" webhook event, if enabled). SMTP URLs and webhook secrets are
//! secrets; no `Debug` output, log line or error message contains them.
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use nemordp_core::notify::*;

#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub mod smtp;
#[cfg(feature = "smtp")]
#[cfg_attr(docsrs, doc(cfg(feature = "smtp")))]
pub mod template;
#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub mod webhook;
