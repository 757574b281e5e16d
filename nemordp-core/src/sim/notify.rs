//! Notifiers for tests and demos: [`RecordingNotifier`] keeps every delivery in memory,
//! [`FileNotifier`] writes each one into a directory.

use std::{
    collections::HashSet,
    fmt,
    fmt::Write as _,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use async_trait::async_trait;
use secrecy::ExposeSecret;

use crate::{
    error::{Error, ErrorKind, Result},
    ids::{NotificationId, OrderId},
    notify::{Delivery, Notification, NotificationKind, Notifier},
};

/// A [`Notifier`] that records every delivered notification, in order.
///
/// Cloning shares the record. Each successful [`Notifier::send`] is recorded, including
/// repeats of the same id, so tests can check at-least-once delivery
/// ([`RecordingNotifier::count`]) against deduplicated delivery
/// ([`RecordingNotifier::distinct_ids`]). Failures scripted with
/// [`RecordingNotifier::fail_next`] are not recorded.
#[derive(Clone, Default)]
pub struct RecordingNotifier {
    state: Arc<Mutex<Recorded>>,
}

#[derive(Default)]
struct Recorded {
    sent: Vec<Notification>,
    fail_remaining: u32,
    fail_kind: Option<ErrorKind>,
}

impl RecordingNotifier {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, Recorded> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every notification delivered so far, in order.
    pub fn sent(&self) -> Vec<Notification> {
        self.state().sent.clone()
    }

    /// The kinds of every notification delivered so far, in order.
    pub fn sent_kinds(&self) -> Vec<NotificationKind> {
        self.state().sent.iter().map(|n| n.kind.clone()).collect()
    }

    /// The notifications delivered for `order_id`, in order.
    pub fn sent_for(&self, order_id: OrderId) -> Vec<Notification> {
        self.state()
            .sent
            .iter()
            .filter(|n| n.order_id == order_id)
            .cloned()
            .collect()
    }

    /// How many deliveries succeeded, counting repeats of the same id.
    pub fn count(&self) -> usize {
        self.state().sent.len()
    }

    /// How many distinct notification ids were delivered (what a deduplicating receiver sees).
    pub fn distinct_ids(&self) -> usize {
        self.state()
            .sent
            .iter()
            .map(|n| n.id)
            .collect::<HashSet<NotificationId>>()
            .len()
    }

    /// Makes the next `n` sends fail with `kind` (replacing any failures still scripted).
    /// `RateLimited` failures carry a one-second `retry_after`.
    pub fn fail_next(&self, n: u32, kind: ErrorKind) {
        let mut state = self.state();
        state.fail_remaining = n;
        state.fail_kind = Some(kind);
    }

    /// Forgets everything recorded and any scripted failures.
    pub fn clear(&self) {
        *self.state() = Recorded::default();
    }
}

impl fmt::Debug for RecordingNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state();
        f.debug_struct("RecordingNotifier")
            .field("sent", &state.sent.len())
            .field("fail_remaining", &state.fail_remaining)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl Notifier for RecordingNotifier {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn send(&self, notification: &Notification) -> Result<Delivery> {
        let mut state = self.state();
        if state.fail_remaining > 0 {
            state.fail_remaining -= 1;
            let kind = state.fail_kind.unwrap_or(ErrorKind::Unavailable);
            let retry_after =
                (kind == ErrorKind::RateLimited).then_some(std::time::Duration::from_secs(1));
            return Err(Error::new(kind, "scripted failure")
                .with_retry_after(retry_after)
                .with_backend("recording")
                .with_operation("send"));
        }
        state.sent.push(notification.clone());
        Ok(Delivery::new(
            "recording",
            Some(format!("#{}", state.sent.len())),
        ))
    }
}

/// A [`Notifier`] that writes each notification as `<id>.txt` into a directory, plus the
/// `.rdp` file as `<id>.rdp` for [`NotificationKind::Ready`]: for demos without a mail server.
///
/// Files are named by notification id, so a repeated delivery overwrites the same file. The
/// `.txt` of a `Ready` notification contains the machine's password in clear text (it is what
/// the customer would receive); on Unix the files are created readable by the owner only. File
/// I/O is blocking and unbuffered: fine for demos, not for production.
#[derive(Debug, Clone)]
pub struct FileNotifier {
    dir: PathBuf,
}

impl FileNotifier {
    /// Writes into `dir`, which must exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory written to.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The text a notification is written as.
    fn render(n: &Notification) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(text, "notification: {}", n.id);
        let _ = writeln!(text, "order: {}", n.order_id);
        let _ = writeln!(text, "customer: {}", n.customer.id);
        if let Some(email) = &n.customer.email {
            let _ = writeln!(text, "email: {email}");
        }
        let _ = writeln!(text, "kind: {}", n.kind.as_str());
        match &n.kind {
            NotificationKind::PaymentReceived { amount } => {
                let _ = writeln!(text, "amount: {amount}");
            }
            NotificationKind::Failed { reason } => {
                let _ = writeln!(text, "reason: {reason}");
            }
            NotificationKind::Suspended { reason } | NotificationKind::RenewalFailed { reason } => {
                let _ = writeln!(text, "reason: {reason}");
            }
            _ => {}
        }
        if let Some(c) = &n.connection {
            let _ = writeln!(text, "host: {}", c.host);
            let _ = writeln!(text, "port: {}", c.port);
            let _ = writeln!(text, "username: {}", c.username);
            let _ = writeln!(text, "password: {}", c.password.expose_secret());
        }
        text
    }

    fn write(&self, name: &str, contents: &str) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let io = |e: std::io::Error| {
            Error::unavailable(format!("cannot write {}", path.display()))
                .with_source(e)
                .with_backend("file")
                .with_operation("send")
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp).map_err(io)?;
        file.write_all(contents.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &path).map_err(io)
    }
}

#[async_trait]
impl Notifier for FileNotifier {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn send(&self, notification: &Notification) -> Result<Delivery> {
        let id = notification.id;
        if let Some(c) = &notification.connection {
            self.write(&format!("{id}.rdp"), &c.rdp_file)?;
        }
        self.write(&format!("{id}.txt"), &Self::render(notification))?;
        Ok(Delivery::new(
            "file",
            Some(self.dir.join(format!("{id}.txt")).display().to_string()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{money::Money, notify::ConnectionDetails, order::Customer};
    use secrecy::SecretString;

    fn note(order: OrderId, kind: NotificationKind) -> Notification {
        Notification::new(NotificationId::new(), order, Customer::new("c-1"), kind)
    }

    #[tokio::test]
    async fn records_in_order_and_counts_repeats() {
        let rec = RecordingNotifier::new();
        let (a, b) = (OrderId::new(), OrderId::new());
        let first = note(a, NotificationKind::ProvisioningStarted);
        rec.send(&first).await.unwrap();
        rec.send(&note(b, NotificationKind::Terminated))
            .await
            .unwrap();
        let d = rec.clone().send(&first).await.unwrap();
        assert_eq!(d.channel, "recording");
        assert_eq!(rec.count(), 3);
        assert_eq!(rec.distinct_ids(), 2);
        assert_eq!(
            rec.sent_kinds(),
            [
                NotificationKind::ProvisioningStarted,
                NotificationKind::Terminated,
                NotificationKind::ProvisioningStarted
            ]
        );
        assert_eq!(rec.sent_for(a).len(), 2);
        assert!(rec.sent_for(a).iter().all(|n| n.id == first.id));
        assert_eq!(rec.sent()[1].order_id, b);
        rec.clear();
        assert_eq!(rec.count(), 0);
    }

    #[tokio::test]
    async fn fail_next_fails_exactly_n_sends() {
        let rec = RecordingNotifier::new();
        let n = note(OrderId::new(), NotificationKind::Ready);
        rec.fail_next(2, ErrorKind::RateLimited);
        for _ in 0..2 {
            let e = rec.send(&n).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::RateLimited);
            assert!(e.is_retryable());
            assert!(e.retry_after().is_some());
        }
        assert_eq!(rec.count(), 0, "failed sends are not recorded");
        rec.send(&n).await.unwrap();
        assert_eq!(rec.count(), 1);
        rec.fail_next(1, ErrorKind::Rejected);
        assert_eq!(rec.send(&n).await.unwrap_err().kind(), ErrorKind::Rejected);
        rec.send(&n).await.unwrap();
        assert_eq!((rec.count(), rec.distinct_ids()), (2, 1));
    }

    #[tokio::test]
    async fn file_notifier_writes_text_and_rdp() {
        let dir =
            std::env::temp_dir().join(format!("nemordp-file-notifier-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let files = FileNotifier::new(&dir);
        let ready =
            note(OrderId::new(), NotificationKind::Ready).with_connection(ConnectionDetails::new(
                "203.0.113.7",
                3389,
                "Administrator",
                SecretString::from("s3cret-pw"),
                "full address:s:203.0.113.7:3389\r\n",
            ));
        let d = files.send(&ready).await.unwrap();
        assert_eq!(d.channel, "file");
        let text = std::fs::read_to_string(dir.join(format!("{}.txt", ready.id))).unwrap();
        assert!(text.contains("kind: ready") && text.contains("password: s3cret-pw"));
        let rdp = std::fs::read_to_string(dir.join(format!("{}.rdp", ready.id))).unwrap();
        assert!(rdp.starts_with("full address:s:203.0.113.7:3389"));
        let paid = note(
            OrderId::new(),
            NotificationKind::PaymentReceived {
                amount: Money::from_minor(crate::money::Asset::Usdt, 1_500_000_u64),
            },
        );
        files.send(&paid).await.unwrap();
        files.send(&paid).await.unwrap();
        let text = std::fs::read_to_string(dir.join(format!("{}.txt", paid.id))).unwrap();
        assert!(text.contains("amount: 1.500000 USDT"));
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            3,
            "repeats overwrite"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
