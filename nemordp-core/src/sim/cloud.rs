//! Simulated cloud backend: [`SimCloud`], an in-process [`CloudProvider`].
//!
//! Machines move `Pending → Installing → Running` on `tokio::time` (so `tokio::time::pause`
//! runs a 45-minute Windows boot in microseconds), get an address from the benchmark range
//! `198.18.0.0/15` (never contacted), and answer RDP (see [`SimCloud::is_rdp_open`]) a little
//! after they report `Running`. Every random choice comes from one `StdRng` seeded with
//! [`SimCloudBuilder::seed`]: the same seed and the same call sequence give the same
//! behaviour. Failures are scripted per operation ([`SimCloud::push_fault`]), drawn at random
//! ([`SimCloudBuilder::random_faults`]), or switched on for everything
//! ([`SimCloud::set_outage`]).
//!
//! Status is computed lazily when read: there are no background tasks, so a thousand
//! concurrent provisions cost a thousand small records.
//!
//! Power operations: `stop` reports `Stopped` and closes RDP; `start` (and `reboot`, which
//! also powers a stopped machine on) reports `Running` again if the first boot has finished,
//! and RDP answers once the RDP delay has passed since. Deleted machines are `NotFound` for
//! `get_instance` and the power operations, and vanish from `find_by_label` and
//! `list_instances` at once; deleting an unknown or deleted id succeeds.
//!
//! ```
//! use std::time::Duration;
//! use nemordp_core::{CloudProvider, cloud::InstanceSpec, plan::OsKind, sim::cloud::SimCloud};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> nemordp_core::Result<()> {
//! let cloud = SimCloud::builder()
//!     .seed(42)
//!     .boot_time(OsKind::UbuntuDesktop, Duration::ZERO, Duration::ZERO)
//!     .rdp_delay(Duration::ZERO)
//!     .build();
//! let image = cloud.resolve_image(OsKind::UbuntuDesktop, None).await?;
//! let spec = InstanceSpec::new("nemordp-example", "sim-1", "small", image);
//! let created = cloud.create_instance(&spec).await?;
//! assert!(created.admin_password.is_some()); // only ever in the create result
//! let got = cloud.get_instance(&created.id).await?;
//! assert!(got.status.is_running());
//! assert!(cloud.is_rdp_open(got.address.unwrap()));
//! # Ok(()) }
//! ```

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use rand::{Rng, SeedableRng, rngs::StdRng};
use secrecy::SecretString;
use tokio::time::Instant;

use crate::{
    clock::{Clock, Timestamp, TokioClock},
    cloud::{
        Capabilities, CloudProvider, ImageRef, Instance, InstanceSpec, InstanceStatus, Page,
        PageRequest, Removal, SizeRef,
    },
    error::{Error, ErrorKind, Result},
    ids::InstanceId,
    plan::OsKind,
    rdp::{Negotiation, ProbeOutcome, RdpProbe},
};

/// The first address handed out: `198.18.0.0/15` is reserved for benchmarking (RFC 2544).
const ADDR_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
/// Usable host addresses in the /15 (skipping `.0.0` and the last one).
const ADDR_COUNT: u32 = (1 << 17) - 2;
/// Length of the generated administrator password.
const PASSWORD_LEN: usize = 20;
/// Where [`SimCloudBuilder::clock`] starts by default: 2026-01-01T00:00:00Z.
const DEFAULT_EPOCH: Timestamp = Timestamp::from_unix_secs(1_767_225_600);

/// One fallible operation of [`CloudProvider`]: counted by [`SimCloud::calls_of`] and
/// scripted by [`SimCloud::push_fault`].
///
/// `name` and `capabilities` are infallible, free and not counted, so they have no variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SimOp {
    /// [`CloudProvider::resolve_image`].
    ResolveImage,
    /// [`CloudProvider::resolve_size`].
    ResolveSize,
    /// [`CloudProvider::create_instance`].
    Create,
    /// [`CloudProvider::get_instance`].
    Get,
    /// [`CloudProvider::find_by_label`].
    FindByLabel,
    /// [`CloudProvider::list_instances`].
    List,
    /// [`CloudProvider::reboot`].
    Reboot,
    /// [`CloudProvider::stop`].
    Stop,
    /// [`CloudProvider::start`].
    Start,
    /// [`CloudProvider::delete_instance`].
    Delete,
}

impl SimOp {
    /// Every operation, in trait order.
    pub const ALL: [Self; 10] = [
        Self::ResolveImage,
        Self::ResolveSize,
        Self::Create,
        Self::Get,
        Self::FindByLabel,
        Self::List,
        Self::Reboot,
        Self::Stop,
        Self::Start,
        Self::Delete,
    ];

    /// The trait method name, used as the error's operation.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ResolveImage => "resolve_image",
            Self::ResolveSize => "resolve_size",
            Self::Create => "create_instance",
            Self::Get => "get_instance",
            Self::FindByLabel => "find_by_label",
            Self::List => "list_instances",
            Self::Reboot => "reboot",
            Self::Stop => "stop",
            Self::Start => "start",
            Self::Delete => "delete_instance",
        }
    }

    const fn index(self) -> usize {
        match self {
            Self::ResolveImage => 0,
            Self::ResolveSize => 1,
            Self::Create => 2,
            Self::Get => 3,
            Self::FindByLabel => 4,
            Self::List => 5,
            Self::Reboot => 6,
            Self::Stop => 7,
            Self::Start => 8,
            Self::Delete => 9,
        }
    }
}

impl fmt::Display for SimOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A scripted outcome for the next call of one [`SimOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// A 5xx before anything happens: `Unavailable`, nothing applied.
    Unavailable,
    /// A 429: `RateLimited` with this `retry_after`, nothing applied.
    RateLimited(Duration),
    /// The request timed out before reaching the provider: nothing applied; `Ambiguous` for
    /// a create (the caller cannot know), `Unavailable` for every other operation.
    Timeout,
    /// The provider applied the request and the response was lost: `Ambiguous` for a create
    /// (the instance exists and a label lookup finds it), `Unavailable` for every other
    /// operation (which is applied too, e.g. a delete really deletes).
    LostResponse,
    /// A 4xx refusal: `Rejected` with this message, nothing applied.
    Rejected(String),
}

/// How a new instance's boot ends.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// Boots normally.
    Normal,
    /// Never leaves `Installing`.
    Stuck,
    /// Reports `Failed(detail)` once its boot time elapses.
    Fail(String),
}

/// One size of the catalogue, available in every region unless [`SimCloud::sold_out`].
#[derive(Debug, Clone, PartialEq, Eq)]
struct SimSize {
    id: String,
    vcpus: u32,
    ram_mib: u32,
    disk_gib: u32,
}

/// One image of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SimImage {
    image: ImageRef,
    desktop: bool,
}

/// Configures a [`SimCloud`]; see [`SimCloud::builder`].
#[derive(Debug, Clone)]
pub struct SimCloudBuilder {
    seed: u64,
    name: &'static str,
    windows_boot: (Duration, Duration),
    ubuntu_boot: (Duration, Duration),
    install_delay: Duration,
    rdp_delay: Duration,
    rate_limit: Option<u32>,
    latency: Duration,
    random_faults: u32,
    stuck_booting: u32,
    listing_lag: Duration,
    capabilities: Option<Capabilities>,
    regions: Vec<String>,
    sizes: Vec<SimSize>,
    images: Vec<SimImage>,
    clock: Option<Arc<dyn Clock>>,
}

impl Default for SimCloudBuilder {
    fn default() -> Self {
        Self {
            seed: 0,
            name: "sim",
            windows_boot: (Duration::from_secs(30 * 60), Duration::from_secs(40 * 60)),
            ubuntu_boot: (Duration::from_secs(4 * 60), Duration::from_secs(8 * 60)),
            install_delay: Duration::from_secs(5),
            rdp_delay: Duration::from_secs(30),
            rate_limit: None,
            latency: Duration::ZERO,
            random_faults: 0,
            stuck_booting: 0,
            listing_lag: Duration::ZERO,
            capabilities: None,
            regions: vec!["sim-1".to_owned()],
            sizes: vec![
                SimSize {
                    id: "small".to_owned(),
                    vcpus: 1,
                    ram_mib: 2048,
                    disk_gib: 50,
                },
                SimSize {
                    id: "large".to_owned(),
                    vcpus: 4,
                    ram_mib: 8192,
                    disk_gib: 160,
                },
            ],
            images: vec![
                SimImage {
                    image: ImageRef::new(
                        "win2022",
                        "Windows Server 2022 Standard (Desktop Experience)",
                        OsKind::WindowsServer,
                    ),
                    desktop: true,
                },
                SimImage {
                    image: ImageRef::new(
                        "win2022-core",
                        "Windows Server 2022 Standard (Server Core)",
                        OsKind::WindowsServer,
                    ),
                    desktop: false,
                },
                SimImage {
                    image: ImageRef::new(
                        "ubuntu-24.04-desktop",
                        "Ubuntu 24.04 LTS Desktop",
                        OsKind::UbuntuDesktop,
                    ),
                    desktop: true,
                },
            ],
            clock: None,
        }
    }
}

impl SimCloudBuilder {
    /// Seeds the random number generator (default 0). Same seed and same call sequence give
    /// the same ids, passwords, boot times and random faults.
    #[must_use]
    pub const fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The backend name (default `"sim"`).
    #[must_use]
    pub const fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// First-boot time of `os`, uniform in `min..=max` (swapped if reversed; millisecond
    /// resolution). Defaults: Windows 30–40 min, Ubuntu 4–8 min.
    #[must_use]
    pub fn boot_time(mut self, os: OsKind, min: Duration, max: Duration) -> Self {
        let range = if min <= max { (min, max) } else { (max, min) };
        match os {
            OsKind::WindowsServer => self.windows_boot = range,
            OsKind::UbuntuDesktop => self.ubuntu_boot = range,
        }
        self
    }

    /// How long a new instance reports `Pending` before `Installing` (default 5 s).
    #[must_use]
    pub const fn install_delay(mut self, delay: Duration) -> Self {
        self.install_delay = delay;
        self
    }

    /// Extra time after `Running` (and after a start or reboot) before RDP answers
    /// (default 30 s).
    #[must_use]
    pub const fn rdp_delay(mut self, delay: Duration) -> Self {
        self.rdp_delay = delay;
        self
    }

    /// Limits calls to `per_second` with a burst of `per_second` (a token bucket refilled on
    /// `tokio::time::Instant`; `0` is treated as `1`). Every call except `name` and
    /// `capabilities` costs a token; a call without one fails with `RateLimited` and the
    /// time until the next token as `retry_after`. Default: no limit.
    #[must_use]
    pub fn rate_limit(mut self, per_second: u32) -> Self {
        self.rate_limit = Some(per_second.max(1));
        self
    }

    /// Sleeps (with `tokio::time::sleep`) this long in every call (default zero: no sleep).
    #[must_use]
    pub const fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Fails this many calls per million, at random, with `Unavailable` (nothing applied).
    /// Default 0.
    #[must_use]
    pub const fn random_faults(mut self, per_million: u32) -> Self {
        self.random_faults = per_million;
        self
    }

    /// Makes this many new instances per million never leave `Installing`. Default 0.
    #[must_use]
    pub const fn stuck_booting_per_million(mut self, per_million: u32) -> Self {
        self.stuck_booting = per_million;
        self
    }

    /// Hides new instances from `find_by_label` and `list_instances` for this long after
    /// creation, like an eventually consistent listing (default zero).
    #[must_use]
    pub const fn listing_lag(mut self, lag: Duration) -> Self {
        self.listing_lag = lag;
        self
    }

    /// Overrides the reported [`Capabilities`]. Default: password at create, delete removal,
    /// firewall, user data, pages of 100, and the rate limit (or 30) requests per second.
    /// With `password_at_create` off, creates return no password.
    #[must_use]
    pub const fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = Some(capabilities);
        self
    }

    /// Replaces the region list (default `["sim-1"]`).
    #[must_use]
    pub fn regions<I, S>(mut self, regions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.regions = regions.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a size available in every region, or replaces the size with the same id.
    /// Defaults: `small` (1 vCPU, 2048 MiB, 50 GiB) and `large` (4 vCPU, 8192 MiB, 160 GiB).
    #[must_use]
    pub fn size(mut self, id: impl Into<String>, vcpus: u32, ram_mib: u32, disk_gib: u32) -> Self {
        let size = SimSize {
            id: id.into(),
            vcpus,
            ram_mib,
            disk_gib,
        };
        match self.sizes.iter_mut().find(|s| s.id == size.id) {
            Some(slot) => *slot = size,
            None => self.sizes.push(size),
        }
        self
    }

    /// Adds an image, or replaces the image with the same id. `has_desktop = false` marks a
    /// Server Core style image, never returned for [`OsKind::WindowsServer`]. Defaults:
    /// `win2022` (Desktop Experience), `win2022-core` (Server Core), `ubuntu-24.04-desktop`.
    #[must_use]
    pub fn image(mut self, image: ImageRef, has_desktop: bool) -> Self {
        let image = SimImage {
            image,
            desktop: has_desktop,
        };
        match self
            .images
            .iter_mut()
            .find(|i| i.image.id == image.image.id)
        {
            Some(slot) => *slot = image,
            None => self.images.push(image),
        }
        self
    }

    /// The clock for `created_at` timestamps. Default: a [`TokioClock`] starting at
    /// 2026-01-01T00:00:00Z when the cloud is built, so timestamps follow paused time and do
    /// not depend on the wall clock.
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Builds the cloud.
    pub fn build(mut self) -> SimCloud {
        let clock = self
            .clock
            .take()
            .unwrap_or_else(|| Arc::new(TokioClock::starting_at(DEFAULT_EPOCH)));
        let capabilities = self.capabilities.unwrap_or(Capabilities {
            password_at_create: true,
            password_from_us: false,
            removal: Removal::Delete,
            firewall: true,
            user_data: true,
            max_page_size: 100,
            requests_per_second: self.rate_limit.unwrap_or(30),
        });
        let state = State {
            rng: StdRng::seed_from_u64(self.seed),
            instances: Vec::new(),
            by_id: HashMap::new(),
            by_label: HashMap::new(),
            by_addr: HashMap::new(),
            next_addr: 0,
            faults: HashMap::new(),
            outage: false,
            tat: None,
            calls: 0,
            calls_of: [0; SimOp::ALL.len()],
            rate_limited: 0,
            creates: 0,
            sold_out: HashSet::new(),
            next_fate: None,
        };
        SimCloud {
            inner: Arc::new(Shared {
                cfg: self,
                capabilities,
                clock,
                state: Mutex::new(state),
            }),
        }
    }
}

/// One instance as the simulator keeps it.
#[derive(Debug)]
struct SimInstance {
    id: InstanceId,
    label: String,
    region: String,
    created: Instant,
    created_at: Timestamp,
    boot: Duration,
    fate: Fate,
    address: IpAddr,
    powered_off: bool,
    rdp_not_before: Instant,
    deleted: bool,
}

impl SimInstance {
    fn boot_finished(&self, now: Instant) -> bool {
        self.fate == Fate::Normal && now >= self.created + self.boot
    }

    fn status(&self, now: Instant, install_delay: Duration) -> InstanceStatus {
        if self.deleted {
            return InstanceStatus::Terminated;
        }
        if self.powered_off {
            return InstanceStatus::Stopped;
        }
        let installing_at = self.created + install_delay.min(self.boot);
        let booted = now >= self.created + self.boot;
        match &self.fate {
            Fate::Fail(detail) if booted => InstanceStatus::Failed(detail.clone()),
            Fate::Normal if booted => InstanceStatus::Running,
            _ if now < installing_at => InstanceStatus::Pending,
            _ => InstanceStatus::Installing,
        }
    }
}

struct State {
    rng: StdRng,
    /// Every instance ever created, in creation order (list cursors index into it).
    instances: Vec<SimInstance>,
    by_id: HashMap<InstanceId, usize>,
    /// Live instances only.
    by_label: HashMap<String, Vec<usize>>,
    by_addr: HashMap<IpAddr, usize>,
    next_addr: u32,
    faults: HashMap<SimOp, VecDeque<Fault>>,
    outage: bool,
    /// GCRA "theoretical arrival time" of the token bucket.
    tat: Option<Instant>,
    calls: u64,
    calls_of: [u64; SimOp::ALL.len()],
    rate_limited: u64,
    creates: u64,
    sold_out: HashSet<(String, String)>,
    next_fate: Option<Fate>,
}

struct Shared {
    cfg: SimCloudBuilder,
    capabilities: Capabilities,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// An in-process cloud for docs, examples, tests and benchmarks; see the [module
/// docs](self). Cloning shares the same machines, faults and counters.
#[derive(Clone)]
pub struct SimCloud {
    inner: Arc<Shared>,
}

impl fmt::Debug for SimCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("SimCloud");
        d.field("name", &self.inner.cfg.name)
            .field("seed", &self.inner.cfg.seed);
        if let Ok(st) = self.inner.state.try_lock() {
            let live = st.instances.iter().filter(|i| !i.deleted).count();
            d.field("live_instances", &live)
                .field("calls", &st.calls)
                .field("outage", &st.outage);
        }
        d.finish_non_exhaustive()
    }
}

impl Default for SimCloud {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl SimCloud {
    /// A builder with the defaults described on its setters.
    pub fn builder() -> SimCloudBuilder {
        SimCloudBuilder::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn err(&self, kind: ErrorKind, op: SimOp, message: impl Into<String>) -> Error {
        Error::new(kind, message)
            .with_backend(self.inner.cfg.name)
            .with_operation(op.as_str())
    }

    // ----- scripting -----

    /// Queues `fault` as the outcome of the next call of `op` (FIFO per operation). Scripted
    /// faults apply after the rate limit and the outage switch.
    pub fn push_fault(&self, op: SimOp, fault: Fault) {
        self.lock().faults.entry(op).or_default().push_back(fault);
    }

    /// Drops every queued fault.
    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    /// While on, every call fails with `Unavailable` and nothing is applied.
    pub fn set_outage(&self, on: bool) {
        self.lock().outage = on;
    }

    /// The next created instance never leaves `Installing`.
    pub fn stick_next_boot(&self) {
        self.lock().next_fate = Some(Fate::Stuck);
    }

    /// The next created instance reports `Failed(detail)` once its boot time elapses.
    pub fn fail_next_boot(&self, detail: impl Into<String>) {
        self.lock().next_fate = Some(Fate::Fail(detail.into()));
    }

    /// Marks `size` sold out in `region`: `resolve_size` and creates there are `Rejected`.
    pub fn sold_out(&self, region: &str, size: &str) {
        self.lock()
            .sold_out
            .insert((region.to_owned(), size.to_owned()));
    }

    /// Undoes [`SimCloud::sold_out`].
    pub fn restock(&self, region: &str, size: &str) {
        self.lock()
            .sold_out
            .remove(&(region.to_owned(), size.to_owned()));
    }

    // ----- inspection -----

    /// Every counted call so far, including failed and rate-limited ones.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Calls of one operation so far, including failed and rate-limited ones.
    pub fn calls_of(&self, op: SimOp) -> u64 {
        self.lock().calls_of[op.index()]
    }

    /// Calls refused with `RateLimited` (by the token bucket or a scripted fault).
    pub fn rate_limited_calls(&self) -> u64 {
        self.lock().rate_limited
    }

    /// Instances ever created (including ones whose response was lost, and deleted ones).
    pub fn creates_applied(&self) -> u64 {
        self.lock().creates
    }

    /// Every instance not deleted, in creation order, ignoring any listing lag.
    pub fn live_instances(&self) -> Vec<Instance> {
        let now = Instant::now();
        let st = self.lock();
        st.instances
            .iter()
            .filter(|i| !i.deleted)
            .map(|i| self.view(i, now))
            .collect()
    }

    /// How many live instances carry exactly `label`, ignoring any listing lag.
    pub fn live_with_label(&self, label: &str) -> usize {
        self.lock().by_label.get(label).map_or(0, Vec::len)
    }

    /// The drawn first-boot time of an instance (deleted ones too), if it was ever created.
    pub fn boot_time_of(&self, id: &InstanceId) -> Option<Duration> {
        let st = self.lock();
        st.by_id.get(id).map(|&i| st.instances[i].boot)
    }

    /// Whether RDP answers on `addr`: the instance there booted, has been up for the RDP
    /// delay since boot (or since its last start or reboot), and is neither stopped nor
    /// deleted.
    pub fn is_rdp_open(&self, addr: IpAddr) -> bool {
        let now = Instant::now();
        let st = self.lock();
        st.by_addr.get(&addr).is_some_and(|&i| {
            let inst = &st.instances[i];
            !inst.deleted
                && !inst.powered_off
                && inst.boot_finished(now)
                && now >= inst.rdp_not_before
        })
    }

    /// A fake [`RdpProbe`] answering from this cloud's state: RDP (with NLA) where
    /// [`SimCloud::is_rdp_open`] says so, unreachable elsewhere. For paused-clock tests, where
    /// real sockets would time out instantly.
    pub fn rdp_probe(&self) -> SimRdpProbe {
        SimRdpProbe {
            cloud: self.clone(),
        }
    }

    // ----- internals -----

    /// Counts the call, then applies the rate limit, outage, scripted and random faults.
    /// `Ok(true)` means "apply, then lose the response".
    fn gate(&self, st: &mut State, op: SimOp, now: Instant) -> Result<bool> {
        st.calls += 1;
        st.calls_of[op.index()] += 1;
        if let Some(per_second) = self.inner.cfg.rate_limit {
            let interval = Duration::from_secs(1) / per_second;
            let tolerance = interval * (per_second - 1);
            let tat = st.tat.map_or(now, |t| t.max(now));
            let ahead = tat - now;
            if ahead > tolerance {
                st.rate_limited += 1;
                return Err(self
                    .err(
                        ErrorKind::RateLimited,
                        op,
                        format!("more than {per_second} requests per second"),
                    )
                    .with_retry_after(Some(ahead.saturating_sub(tolerance))));
            }
            st.tat = Some(tat + interval);
        }
        if st.outage {
            return Err(self.err(ErrorKind::Unavailable, op, "simulated provider outage"));
        }
        if let Some(fault) = st.faults.get_mut(&op).and_then(VecDeque::pop_front) {
            return match fault {
                Fault::Unavailable => Err(self.err(
                    ErrorKind::Unavailable,
                    op,
                    "scripted 503 service unavailable",
                )),
                Fault::RateLimited(after) => {
                    st.rate_limited += 1;
                    Err(self
                        .err(ErrorKind::RateLimited, op, "scripted 429 too many requests")
                        .with_retry_after(Some(after)))
                }
                Fault::Timeout => Err(self.lost(op, "scripted timeout before delivery")),
                Fault::Rejected(message) => Err(self.err(ErrorKind::Rejected, op, message)),
                Fault::LostResponse => Ok(true),
            };
        }
        let per_million = self.inner.cfg.random_faults;
        if per_million > 0 && st.rng.random_range(0..1_000_000) < per_million {
            return Err(self.err(ErrorKind::Unavailable, op, "random 503 service unavailable"));
        }
        Ok(false)
    }

    /// The error of a call whose outcome the caller cannot know.
    fn lost(&self, op: SimOp, message: &str) -> Error {
        let kind = if op == SimOp::Create {
            ErrorKind::Ambiguous
        } else {
            ErrorKind::Unavailable
        };
        self.err(kind, op, message)
    }

    /// Runs one call: latency, gate, the operation, and a lost response if scripted.
    async fn call<T>(
        &self,
        op: SimOp,
        apply: impl FnOnce(&Self, &mut State, Instant) -> Result<T>,
    ) -> Result<T> {
        let latency = self.inner.cfg.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let now = Instant::now();
        let mut st = self.lock();
        let lose = self.gate(&mut st, op, now)?;
        let out = apply(self, &mut st, now);
        drop(st);
        if lose {
            Err(self.lost(op, "scripted lost response after the request was applied"))
        } else {
            out
        }
    }

    fn view(&self, inst: &SimInstance, now: Instant) -> Instance {
        let status = inst.status(now, self.inner.cfg.install_delay);
        let mut out = Instance::new(inst.id.clone(), inst.label.clone(), status);
        out.region.clone_from(&inst.region);
        out.created_at = Some(inst.created_at);
        // Like Vultr's `main_ip`, the address is assigned once installation starts, long
        // before the OS answers RDP.
        if now >= inst.created + self.inner.cfg.install_delay || inst.boot_finished(now) {
            out.address = Some(inst.address);
        }
        out
    }

    fn visible(&self, inst: &SimInstance, now: Instant) -> bool {
        !inst.deleted && now >= inst.created + self.inner.cfg.listing_lag
    }

    /// The index of a live instance, or `NotFound`.
    fn live_index(&self, st: &State, op: SimOp, id: &InstanceId) -> Result<usize> {
        match st.by_id.get(id) {
            Some(&i) if !st.instances[i].deleted => Ok(i),
            _ => Err(self.err(ErrorKind::NotFound, op, format!("no instance {id}"))),
        }
    }

    fn find_size(
        &self,
        st: &State,
        op: SimOp,
        region: &str,
        size: &str,
        missing: ErrorKind,
    ) -> Result<SizeRef> {
        let cfg = &self.inner.cfg;
        if !cfg.regions.iter().any(|r| r == region) {
            return Err(self.err(missing, op, format!("unknown region {region:?}")));
        }
        let Some(found) = cfg.sizes.iter().find(|s| s.id == size) else {
            return Err(self.err(missing, op, format!("unknown size {size:?}")));
        };
        if st.sold_out.contains(&(region.to_owned(), size.to_owned())) {
            return Err(self.err(
                ErrorKind::Rejected,
                op,
                format!("size {size:?} is sold out in {region:?}"),
            ));
        }
        Ok(SizeRef::new(
            found.id.clone(),
            region,
            found.vcpus,
            found.ram_mib,
            found.disk_gib,
        ))
    }

    fn resolve_image_in(&self, os: OsKind, hint: Option<&str>) -> Result<ImageRef> {
        let op = SimOp::ResolveImage;
        let usable = |i: &&SimImage| i.image.os == os && (i.desktop || os != OsKind::WindowsServer);
        let images = &self.inner.cfg.images;
        let Some(hint) = hint else {
            return images
                .iter()
                .find(usable)
                .map(|i| i.image.clone())
                .ok_or_else(|| self.err(ErrorKind::NotFound, op, format!("no image for {os}")));
        };
        match images
            .iter()
            .find(|i| i.image.os == os && (i.image.id == hint || i.image.name == hint))
        {
            Some(i) if usable(&i) => Ok(i.image.clone()),
            Some(_) => Err(self.err(
                ErrorKind::NotFound,
                op,
                format!("image {hint:?} has no desktop and cannot serve {os}"),
            )),
            None => Err(self.err(
                ErrorKind::NotFound,
                op,
                format!("no {os} image with id or name {hint:?}"),
            )),
        }
    }

    fn create_in(&self, st: &mut State, spec: &InstanceSpec, now: Instant) -> Result<Instance> {
        let op = SimOp::Create;
        let cfg = &self.inner.cfg;
        self.find_size(st, op, &spec.region, &spec.size, ErrorKind::Rejected)?;
        let Some(image) = cfg.images.iter().find(|i| i.image.id == spec.image.id) else {
            return Err(self.err(
                ErrorKind::Rejected,
                op,
                format!("unknown image {:?}", spec.image.id),
            ));
        };
        let id = InstanceId::new(
            uuid::Builder::from_random_bytes(st.rng.random())
                .into_uuid()
                .hyphenated()
                .to_string(),
        );
        let (min, max) = match image.image.os {
            OsKind::WindowsServer => cfg.windows_boot,
            OsKind::UbuntuDesktop => cfg.ubuntu_boot,
        };
        let span = u64::try_from(max.saturating_sub(min).as_millis()).unwrap_or(u64::MAX);
        let boot = min + Duration::from_millis(st.rng.random_range(0..=span));
        let fate = match st.next_fate.take() {
            Some(f) => f,
            None if cfg.stuck_booting > 0
                && st.rng.random_range(0..1_000_000) < cfg.stuck_booting =>
            {
                Fate::Stuck
            }
            None => Fate::Normal,
        };
        let password = self
            .inner
            .capabilities
            .password_at_create
            .then(|| random_password(&mut st.rng));
        let address = IpAddr::V4(Ipv4Addr::from(ADDR_BASE + 1 + st.next_addr % ADDR_COUNT));
        st.next_addr = st.next_addr.wrapping_add(1);

        let index = st.instances.len();
        st.instances.push(SimInstance {
            id: id.clone(),
            label: spec.label.clone(),
            region: spec.region.clone(),
            created: now,
            created_at: self.inner.clock.now(),
            boot,
            fate,
            address,
            powered_off: false,
            rdp_not_before: now + boot + cfg.rdp_delay,
            deleted: false,
        });
        st.by_id.insert(id, index);
        st.by_label
            .entry(spec.label.clone())
            .or_default()
            .push(index);
        st.by_addr.insert(address, index);
        st.creates += 1;

        let mut out = self.view(&st.instances[index], now);
        out.admin_password = password.map(SecretString::from);
        Ok(out)
    }

    fn list_in(&self, st: &State, page: &PageRequest, now: Instant) -> Result<Page<Instance>> {
        let op = SimOp::List;
        let start = match &page.cursor {
            None => 0,
            Some(c) => match c.parse::<usize>() {
                Ok(n) if n <= st.instances.len() => n,
                _ => {
                    return Err(self.err(
                        ErrorKind::InvalidInput,
                        op,
                        format!("malformed page cursor {c:?}"),
                    ));
                }
            },
        };
        let max = self.inner.capabilities.max_page_size.max(1);
        let limit = if page.limit == 0 {
            max
        } else {
            page.limit.min(max)
        };
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let mut visible = st.instances[start..]
            .iter()
            .enumerate()
            .filter(|(_, i)| self.visible(i, now));
        let items: Vec<Instance> = visible
            .by_ref()
            .take(limit)
            .map(|(_, i)| self.view(i, now))
            .collect();
        let next = visible
            .next()
            .map(|(offset, _)| (start + offset).to_string());
        Ok(Page { items, next })
    }
}

/// A 20-character password with upper and lower case letters, digits and symbols.
fn random_password(rng: &mut StdRng) -> String {
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const DIGIT: &[u8] = b"23456789";
    const SYMBOL: &[u8] = b"!#$%*+-=?@^_";
    const CLASSES: [&[u8]; 4] = [UPPER, LOWER, DIGIT, SYMBOL];
    let mut chars: Vec<u8> = (0..PASSWORD_LEN)
        .map(|n| {
            // one of each class first, then any class
            let class = CLASSES
                .get(n)
                .copied()
                .unwrap_or_else(|| CLASSES[rng.random_range(0..CLASSES.len())]);
            class[rng.random_range(0..class.len())]
        })
        .collect();
    for n in (1..chars.len()).rev() {
        chars.swap(n, rng.random_range(0..=n));
    }
    String::from_utf8(chars).unwrap_or_default()
}

#[async_trait]
impl CloudProvider for SimCloud {
    fn name(&self) -> &'static str {
        self.inner.cfg.name
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities
    }

    async fn resolve_image(&self, os: OsKind, hint: Option<&str>) -> Result<ImageRef> {
        self.call(SimOp::ResolveImage, |s, _, _| s.resolve_image_in(os, hint))
            .await
    }

    async fn resolve_size(&self, region: &str, size: &str) -> Result<SizeRef> {
        self.call(SimOp::ResolveSize, |s, st, _| {
            s.find_size(st, SimOp::ResolveSize, region, size, ErrorKind::NotFound)
        })
        .await
    }

    async fn create_instance(&self, spec: &InstanceSpec) -> Result<Instance> {
        self.call(SimOp::Create, |s, st, now| s.create_in(st, spec, now))
            .await
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Instance> {
        self.call(SimOp::Get, |s, st, now| {
            let i = s.live_index(st, SimOp::Get, id)?;
            Ok(s.view(&st.instances[i], now))
        })
        .await
    }

    async fn find_by_label(&self, label: &str) -> Result<Vec<Instance>> {
        self.call(SimOp::FindByLabel, |s, st, now| {
            Ok(st.by_label.get(label).map_or_else(Vec::new, |found| {
                found
                    .iter()
                    .map(|&i| &st.instances[i])
                    .filter(|i| s.visible(i, now))
                    .map(|i| s.view(i, now))
                    .collect()
            }))
        })
        .await
    }

    async fn list_instances(&self, page: PageRequest) -> Result<Page<Instance>> {
        self.call(SimOp::List, |s, st, now| s.list_in(st, &page, now))
            .await
    }

    async fn reboot(&self, id: &InstanceId) -> Result<()> {
        self.call(SimOp::Reboot, |s, st, now| {
            let i = s.live_index(st, SimOp::Reboot, id)?;
            let inst = &mut st.instances[i];
            inst.powered_off = false;
            inst.rdp_not_before = inst.rdp_not_before.max(now + s.inner.cfg.rdp_delay);
            Ok(())
        })
        .await
    }

    async fn stop(&self, id: &InstanceId) -> Result<()> {
        self.call(SimOp::Stop, |s, st, _| {
            let i = s.live_index(st, SimOp::Stop, id)?;
            st.instances[i].powered_off = true;
            Ok(())
        })
        .await
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        self.call(SimOp::Start, |s, st, now| {
            let i = s.live_index(st, SimOp::Start, id)?;
            let inst = &mut st.instances[i];
            if inst.powered_off {
                inst.powered_off = false;
                inst.rdp_not_before = inst.rdp_not_before.max(now + s.inner.cfg.rdp_delay);
            }
            Ok(())
        })
        .await
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<()> {
        self.call(SimOp::Delete, |_, st, _| {
            if let Some(&i) = st.by_id.get(id)
                && !st.instances[i].deleted
            {
                st.instances[i].deleted = true;
                let label = st.instances[i].label.clone();
                if let Some(live) = st.by_label.get_mut(&label) {
                    live.retain(|&n| n != i);
                    if live.is_empty() {
                        st.by_label.remove(&label);
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn spec(cloud: &SimCloud, label: &str, os: OsKind) -> InstanceSpec {
        let image = cloud
            .inner
            .cfg
            .images
            .iter()
            .find(|i| i.image.os == os && i.desktop)
            .map(|i| i.image.clone())
            .unwrap();
        InstanceSpec::new(label, "sim-1", "small", image)
    }

    fn in_benchmark_range(addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(v4) => u32::from(v4) >> 17 == ADDR_BASE >> 17,
            IpAddr::V6(_) => false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_behaviour() {
        async fn run(seed: u64) -> Vec<(InstanceId, String, Duration, Option<IpAddr>)> {
            let cloud = SimCloud::builder()
                .seed(seed)
                .random_faults(200_000)
                .build();
            let mut out = Vec::new();
            for n in 0..20 {
                let label = format!("nemordp-{n}");
                match cloud
                    .create_instance(&spec(&cloud, &label, OsKind::WindowsServer))
                    .await
                {
                    Ok(i) => {
                        let password = i.admin_password.unwrap().expose_secret().to_owned();
                        assert_eq!(password.len(), PASSWORD_LEN);
                        let boot = cloud.boot_time_of(&i.id).unwrap();
                        out.push((i.id, password, boot, None));
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Unavailable);
                        out.push((
                            InstanceId::new("fault"),
                            String::new(),
                            Duration::ZERO,
                            None,
                        ));
                    }
                }
            }
            tokio::time::sleep(41 * MIN).await;
            for (id, _, _, addr) in &mut out {
                if let Ok(i) = cloud.get_instance(id).await {
                    *addr = i.address;
                }
            }
            out
        }
        let a = run(7).await;
        assert_eq!(a, run(7).await);
        assert_ne!(a, run(8).await);
        let faults = a.iter().filter(|r| r.1.is_empty()).count();
        assert!(
            faults > 0 && faults < 20,
            "{faults} random faults in 20 calls"
        );
        let boots: HashSet<_> = a.iter().map(|r| r.2).collect();
        assert!(boots.len() > 2, "boot times vary");
        assert!(a.iter().all(|r| r.2 <= 40 * MIN));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_refuses_the_call_beyond_the_burst() {
        let cloud = SimCloud::builder().rate_limit(5).build();
        assert_eq!(cloud.capabilities().requests_per_second, 5);
        let mut limited = Vec::new();
        for _ in 0..6 {
            if let Err(e) = cloud.resolve_size("sim-1", "small").await {
                assert_eq!(e.kind(), ErrorKind::RateLimited);
                limited.push(e.retry_after().unwrap());
            }
        }
        assert_eq!(limited.len(), 1);
        assert!(limited[0] > Duration::ZERO && limited[0] <= Duration::from_millis(200));
        assert_eq!(cloud.rate_limited_calls(), 1);
        assert_eq!(cloud.calls(), 6);
        assert_eq!(cloud.calls_of(SimOp::ResolveSize), 6);
        // name and capabilities are free
        for _ in 0..100 {
            let _ = (cloud.name(), cloud.capabilities());
        }
        tokio::time::advance(limited[0]).await;
        cloud.resolve_size("sim-1", "small").await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..5 {
            cloud.get_instance(&"x".into()).await.unwrap_err().kind();
        }
        assert_eq!(cloud.rate_limited_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn lost_response_creates_exactly_one_findable_instance() {
        let cloud = SimCloud::builder().build();
        cloud.push_fault(SimOp::Create, Fault::LostResponse);
        let s = spec(&cloud, "nemordp-lost", OsKind::UbuntuDesktop);
        let e = cloud.create_instance(&s).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Ambiguous);
        assert_eq!((e.backend(), e.operation()), ("sim", "create_instance"));
        assert_eq!(cloud.creates_applied(), 1);
        let found = cloud.find_by_label("nemordp-lost").await.unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].admin_password.is_none());
        assert_eq!(cloud.live_with_label("nemordp-lost"), 1);

        // a timeout applies nothing; other ops map both to Unavailable
        cloud.push_fault(SimOp::Create, Fault::Timeout);
        let e = cloud.create_instance(&s).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Ambiguous);
        assert_eq!(cloud.creates_applied(), 1);
        cloud.push_fault(SimOp::Delete, Fault::LostResponse);
        let e = cloud.delete_instance(&found[0].id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(
            cloud.live_with_label("nemordp-lost"),
            0,
            "delete was applied"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn scripted_faults_are_fifo_per_operation() {
        let cloud = SimCloud::builder().build();
        cloud.push_fault(SimOp::Get, Fault::Unavailable);
        cloud.push_fault(SimOp::Get, Fault::RateLimited(Duration::from_secs(7)));
        cloud.push_fault(SimOp::Get, Fault::Rejected("no".into()));
        let id = InstanceId::new("nope");
        cloud.resolve_size("sim-1", "small").await.unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            let e = cloud.get_instance(&id).await.unwrap_err();
            got.push((e.kind(), e.retry_after()));
        }
        assert_eq!(
            got,
            [
                (ErrorKind::Unavailable, None),
                (ErrorKind::RateLimited, Some(Duration::from_secs(7))),
                (ErrorKind::Rejected, None),
                (ErrorKind::NotFound, None),
            ]
        );
        assert_eq!(cloud.rate_limited_calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn windows_boot_takes_its_time_and_rdp_follows() {
        let cloud = SimCloud::builder()
            .boot_time(OsKind::WindowsServer, 45 * MIN, 45 * MIN)
            .build();
        let created = cloud
            .create_instance(&spec(&cloud, "nemordp-win", OsKind::WindowsServer))
            .await
            .unwrap();
        assert_eq!(created.status, InstanceStatus::Pending);
        assert!(created.address.is_none());
        tokio::time::sleep(Duration::from_secs(5)).await;
        let got = cloud.get_instance(&created.id).await.unwrap();
        assert_eq!(got.status, InstanceStatus::Installing);
        tokio::time::sleep(Duration::from_secs(45 * 60 - 6)).await;
        let got = cloud.get_instance(&created.id).await.unwrap();
        assert_eq!(got.status, InstanceStatus::Installing);
        assert!(got.address.is_some(), "address assigned while installing");
        assert!(!got.is_ready_for_probe());
        assert!(!cloud.is_rdp_open(got.address.unwrap()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got = cloud.get_instance(&created.id).await.unwrap();
        assert!(got.is_ready_for_probe(), "{got:?}");
        let addr = got.address.unwrap();
        assert!(in_benchmark_range(addr), "{addr}");
        assert!(!cloud.is_rdp_open(addr));
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert!(!cloud.is_rdp_open(addr));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(cloud.is_rdp_open(addr));

        // stop closes RDP; start reopens it after the RDP delay
        cloud.stop(&created.id).await.unwrap();
        cloud.stop(&created.id).await.unwrap();
        assert_eq!(
            cloud.get_instance(&created.id).await.unwrap().status,
            InstanceStatus::Stopped
        );
        assert!(!cloud.is_rdp_open(addr));
        cloud.start(&created.id).await.unwrap();
        assert!(
            cloud
                .get_instance(&created.id)
                .await
                .unwrap()
                .status
                .is_running()
        );
        assert!(!cloud.is_rdp_open(addr));
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(cloud.is_rdp_open(addr));
        cloud.delete_instance(&created.id).await.unwrap();
        assert!(!cloud.is_rdp_open(addr));
        let e = cloud.get_instance(&created.id).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }

    #[tokio::test(start_paused = true)]
    async fn outage_fails_everything_until_lifted() {
        let cloud = SimCloud::builder().build();
        cloud.set_outage(true);
        let e = cloud
            .resolve_image(OsKind::WindowsServer, None)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        let e = cloud
            .create_instance(&spec(&cloud, "nemordp-o", OsKind::WindowsServer))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert_eq!(cloud.creates_applied(), 0);
        cloud.set_outage(false);
        cloud
            .resolve_image(OsKind::WindowsServer, None)
            .await
            .unwrap();
        assert_eq!(cloud.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stuck_and_failed_boots() {
        let cloud = SimCloud::builder().build();
        cloud.stick_next_boot();
        let stuck = cloud
            .create_instance(&spec(&cloud, "nemordp-stuck", OsKind::UbuntuDesktop))
            .await
            .unwrap();
        cloud.fail_next_boot("disk error");
        let failed = cloud
            .create_instance(&spec(&cloud, "nemordp-failed", OsKind::UbuntuDesktop))
            .await
            .unwrap();
        let fine = cloud
            .create_instance(&spec(&cloud, "nemordp-fine", OsKind::UbuntuDesktop))
            .await
            .unwrap();
        tokio::time::sleep(120 * MIN).await;
        let status = |i: Instance| i.status;
        assert_eq!(
            status(cloud.get_instance(&stuck.id).await.unwrap()),
            InstanceStatus::Installing
        );
        assert_eq!(
            status(cloud.get_instance(&failed.id).await.unwrap()),
            InstanceStatus::Failed("disk error".into())
        );
        assert!(
            cloud
                .get_instance(&fine.id)
                .await
                .unwrap()
                .is_ready_for_probe()
        );
        let all = SimCloud::builder()
            .stuck_booting_per_million(1_000_000)
            .build();
        let i = all
            .create_instance(&spec(&all, "nemordp-s", OsKind::UbuntuDesktop))
            .await
            .unwrap();
        tokio::time::sleep(120 * MIN).await;
        assert_eq!(
            status(all.get_instance(&i.id).await.unwrap()),
            InstanceStatus::Installing
        );
    }

    #[tokio::test(start_paused = true)]
    async fn catalogue_rules() {
        let cloud = SimCloud::builder().build();
        let win = cloud
            .resolve_image(OsKind::WindowsServer, None)
            .await
            .unwrap();
        assert_eq!(win.id, "win2022");
        let by_name = cloud
            .resolve_image(OsKind::WindowsServer, Some(&win.name))
            .await
            .unwrap();
        assert_eq!(by_name, win);
        let core = cloud
            .resolve_image(OsKind::WindowsServer, Some("win2022-core"))
            .await
            .unwrap_err();
        assert_eq!(core.kind(), ErrorKind::NotFound);
        let wrong_os = cloud
            .resolve_image(OsKind::UbuntuDesktop, Some("win2022"))
            .await
            .unwrap_err();
        assert_eq!(wrong_os.kind(), ErrorKind::NotFound);

        let small = cloud.resolve_size("sim-1", "small").await.unwrap();
        assert_eq!(small, SizeRef::new("small", "sim-1", 1, 2048, 50));
        for (region, size) in [("sim-1", "huge"), ("nowhere", "small")] {
            let e = cloud.resolve_size(region, size).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::NotFound, "{region} {size}");
        }
        cloud.sold_out("sim-1", "small");
        let e = cloud.resolve_size("sim-1", "small").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected);
        let e = cloud
            .create_instance(&spec(&cloud, "nemordp-x", OsKind::UbuntuDesktop))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Rejected);
        cloud.restock("sim-1", "small");
        cloud.resolve_size("sim-1", "small").await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn listing_pages_in_creation_order() {
        let cloud = SimCloud::builder()
            .capabilities(Capabilities::default().with_max_page_size(2))
            .listing_lag(Duration::from_secs(10))
            .build();
        let mut ids = Vec::new();
        for n in 0..5 {
            let s = spec(&cloud, &format!("nemordp-{n}"), OsKind::UbuntuDesktop);
            let i = cloud.create_instance(&s).await.unwrap();
            assert!(i.admin_password.is_none(), "capability override honoured");
            ids.push(i.id);
        }
        assert!(
            cloud.find_by_label("nemordp-0").await.unwrap().is_empty(),
            "lag"
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        cloud.delete_instance(&ids[1]).await.unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = cloud
                .list_instances(PageRequest { cursor, limit: 50 })
                .await
                .unwrap();
            assert!(page.items.len() <= 2);
            seen.extend(page.items.into_iter().map(|i| i.id));
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, [&ids[0], &ids[2], &ids[3], &ids[4]].map(Clone::clone));
        for bad in ["x", "-1", "99"] {
            let e = cloud
                .list_instances(PageRequest {
                    cursor: Some(bad.into()),
                    limit: 1,
                })
                .await
                .unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
        assert_eq!(cloud.live_instances().len(), 4);
        assert!(format!("{cloud:?}").contains("live_instances: 4"));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_sleeps_on_tokio_time() {
        let cloud = SimCloud::builder()
            .latency(Duration::from_millis(250))
            .build();
        let t = Instant::now();
        cloud.resolve_size("sim-1", "small").await.unwrap();
        assert_eq!(t.elapsed(), Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn clones_share_state_and_addresses_are_sequential() {
        let cloud = SimCloud::builder()
            .boot_time(OsKind::UbuntuDesktop, Duration::ZERO, Duration::ZERO)
            .build();
        let other = cloud.clone();
        let a = cloud
            .create_instance(&spec(&cloud, "nemordp-a", OsKind::UbuntuDesktop))
            .await
            .unwrap();
        let b = other
            .create_instance(&spec(&other, "nemordp-b", OsKind::UbuntuDesktop))
            .await
            .unwrap();
        assert_eq!(a.address, Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
        assert_eq!(b.address, Some(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))));
        assert_eq!(cloud.creates_applied(), 2);
        assert_eq!(cloud.calls_of(SimOp::Create), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_thousand_concurrent_provisions() {
        let cloud = SimCloud::builder()
            .latency(Duration::from_millis(50))
            .seed(3)
            .build();
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..1000 {
            let cloud = cloud.clone();
            tasks.spawn(async move {
                let label = format!("nemordp-{n}");
                let created = cloud
                    .create_instance(&spec(&cloud, &label, OsKind::WindowsServer))
                    .await
                    .unwrap();
                tokio::time::sleep(41 * MIN).await;
                let got = cloud.get_instance(&created.id).await.unwrap();
                assert_eq!(cloud.find_by_label(&label).await.unwrap().len(), 1);
                got.address.unwrap()
            });
        }
        let addrs: HashSet<IpAddr> = tasks.join_all().await.into_iter().collect();
        assert_eq!(addrs.len(), 1000);
        assert!(addrs.iter().all(|a| in_benchmark_range(*a)));
        assert_eq!(cloud.creates_applied(), 1000);
        assert_eq!(cloud.calls(), 3000);
    }
}

/// The fake RDP probe of a [`SimCloud`]; see [`SimCloud::rdp_probe`].
#[derive(Debug, Clone)]
pub struct SimRdpProbe {
    cloud: SimCloud,
}

#[async_trait]
impl RdpProbe for SimRdpProbe {
    async fn probe(&self, addr: std::net::SocketAddr) -> ProbeOutcome {
        if self.cloud.is_rdp_open(addr.ip()) {
            ProbeOutcome::Rdp(Negotiation::Selected(crate::rdp::probe::protocol::HYBRID))
        } else {
            ProbeOutcome::Unreachable("connection refused (simulated)".into())
        }
    }
}
