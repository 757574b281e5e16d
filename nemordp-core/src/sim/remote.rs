//! One [`SimCloud`] shared by several processes: [`serve`] answers requests for it over TCP
//! and [`RemoteSimCloud`] is the [`CloudProvider`] (and [`RdpProbe`]) that sends them.
//!
//! Multi-process tests need machines that every worker process sees: a process that owns the
//! cloud serves it, and workers in other processes provision against it. The wire format is
//! one JSON object per line each way over a plain TCP connection; a connection carries one
//! request at a time and the client keeps a small pool of them.
//!
//! A connection that breaks during a call behaves like a real provider's lost response: the
//! server may already have applied the request, so a broken create is `Ambiguous` (look the
//! label up) and every other broken call `Unavailable`. A worker killed mid-create therefore
//! leaves exactly what a real cloud would: maybe a machine, never a half-made one.
//!
//! ```
//! use nemordp_core::{CloudProvider, cloud::InstanceSpec, plan::OsKind, sim::{cloud::SimCloud, remote}};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> nemordp_core::Result<()> {
//! let cloud = SimCloud::builder().build();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = tokio::spawn(remote::serve(cloud.clone(), listener));
//! let client = remote::RemoteSimCloud::connect(addr).await?;
//! let image = client.resolve_image(OsKind::UbuntuDesktop, None).await?;
//! client.create_instance(&InstanceSpec::new("nemordp-x", "sim-1", "small", image)).await?;
//! assert_eq!(cloud.live_with_label("nemordp-x"), 1);
//! # server.abort();
//! # Ok(()) }
//! ```

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::{Mutex, PoisonError},
    time::Duration,
};

use async_trait::async_trait;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::{TcpListener, TcpStream},
};

use super::cloud::SimCloud;
use crate::{
    clock::Timestamp,
    cloud::{
        Capabilities, CloudProvider, ImageRef, Instance, InstanceSpec, InstanceStatus, Page,
        PageRequest, SizeRef,
    },
    error::{Error, ErrorKind, Result},
    ids::InstanceId,
    plan::OsKind,
    rdp::{Negotiation, ProbeOutcome, RdpProbe},
};

/// Longest request or response line accepted (a create carries a bootstrap script).
const MAX_LINE: usize = 1 << 20;
/// Idle connections the client keeps.
const POOL_KEEP: usize = 64;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Hello,
    ResolveImage { os: OsKind, hint: Option<String> },
    ResolveSize { region: String, size: String },
    Create { spec: WireSpec },
    Get { id: InstanceId },
    FindByLabel { label: String },
    List { cursor: Option<String>, limit: u32 },
    Reboot { id: InstanceId },
    Stop { id: InstanceId },
    Start { id: InstanceId },
    Delete { id: InstanceId },
    RdpOpen { addr: IpAddr },
}

#[derive(Debug, Serialize, Deserialize)]
struct Hello {
    name: String,
    capabilities: Capabilities,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireSpec {
    label: String,
    region: String,
    size: String,
    image: ImageRef,
    hostname: String,
    tags: Vec<String>,
    user_data: Option<String>,
    admin_password: Option<String>,
    rdp_source: Option<IpAddr>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireInstance {
    id: InstanceId,
    label: String,
    status: InstanceStatus,
    address: Option<IpAddr>,
    region: String,
    created_at: Option<Timestamp>,
    admin_password: Option<String>,
}

impl From<Instance> for WireInstance {
    fn from(i: Instance) -> Self {
        Self {
            id: i.id,
            label: i.label,
            status: i.status,
            address: i.address,
            region: i.region,
            created_at: i.created_at,
            admin_password: i.admin_password.map(|p| p.expose_secret().to_owned()),
        }
    }
}

impl From<WireInstance> for Instance {
    fn from(w: WireInstance) -> Self {
        Self {
            id: w.id,
            label: w.label,
            status: w.status,
            address: w.address,
            region: w.region,
            created_at: w.created_at,
            admin_password: w.admin_password.map(SecretString::from),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct WirePage {
    items: Vec<WireInstance>,
    next: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireError {
    kind: String,
    message: String,
    retry_after_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Response {
    Ok(serde_json::Value),
    Err(WireError),
}

const KINDS: [ErrorKind; 13] = [
    ErrorKind::NotFound,
    ErrorKind::AlreadyExists,
    ErrorKind::Conflict,
    ErrorKind::InvalidInput,
    ErrorKind::InvalidConfig,
    ErrorKind::Unauthenticated,
    ErrorKind::PermissionDenied,
    ErrorKind::RateLimited,
    ErrorKind::Unavailable,
    ErrorKind::Rejected,
    ErrorKind::NotSupported,
    ErrorKind::Ambiguous,
    ErrorKind::Unexpected,
];

fn kind_from_str(s: &str) -> ErrorKind {
    KINDS
        .into_iter()
        .find(|k| k.as_str() == s)
        .unwrap_or(ErrorKind::Unexpected)
}

fn to_value<T: Serialize>(v: &T) -> Result<serde_json::Value> {
    serde_json::to_value(v)
        .map_err(|e| Error::new(ErrorKind::Unexpected, format!("cannot encode a reply: {e}")))
}

/// Answers one request from `cloud`.
async fn dispatch(cloud: &SimCloud, request: Request) -> Result<serde_json::Value> {
    match request {
        Request::Hello => to_value(&Hello {
            name: cloud.name().to_owned(),
            capabilities: cloud.capabilities(),
        }),
        Request::ResolveImage { os, hint } => {
            to_value(&cloud.resolve_image(os, hint.as_deref()).await?)
        }
        Request::ResolveSize { region, size } => {
            let s = cloud.resolve_size(&region, &size).await?;
            to_value(&(s.id, s.region, s.vcpus, s.ram_mib, s.disk_gib))
        }
        Request::Create { spec: w } => {
            let mut spec = InstanceSpec::new(w.label, w.region, w.size, w.image);
            spec.hostname = w.hostname;
            spec.tags = w.tags;
            spec.user_data = w.user_data;
            spec.admin_password = w.admin_password.map(SecretString::from);
            spec.rdp_source = w.rdp_source;
            to_value(&WireInstance::from(cloud.create_instance(&spec).await?))
        }
        Request::Get { id } => to_value(&WireInstance::from(cloud.get_instance(&id).await?)),
        Request::FindByLabel { label } => {
            let found = cloud.find_by_label(&label).await?;
            to_value(
                &found
                    .into_iter()
                    .map(WireInstance::from)
                    .collect::<Vec<_>>(),
            )
        }
        Request::List { cursor, limit } => {
            let page = cloud.list_instances(PageRequest { cursor, limit }).await?;
            to_value(&WirePage {
                items: page.items.into_iter().map(WireInstance::from).collect(),
                next: page.next,
            })
        }
        Request::Reboot { id } => to_value(&cloud.reboot(&id).await?),
        Request::Stop { id } => to_value(&cloud.stop(&id).await?),
        Request::Start { id } => to_value(&cloud.start(&id).await?),
        Request::Delete { id } => to_value(&cloud.delete_instance(&id).await?),
        Request::RdpOpen { addr } => to_value(&cloud.is_rdp_open(addr)),
    }
}

/// Serves `cloud` to every connection on `listener` until the task is dropped or aborted.
/// Each connection is handled on its own task; a malformed line ends that connection.
pub async fn serve(cloud: SimCloud, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let cloud = cloud.clone();
        tokio::spawn(async move {
            // Many small replies: send each at once.
            let _ = stream.set_nodelay(true);
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read);
            let mut line = String::new();
            loop {
                line.clear();
                // A partial last line (the client died mid-write) is never applied.
                match lines.read_line(&mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) if !line.ends_with('\n') || line.len() > MAX_LINE => return,
                    Ok(_) => {}
                }
                let Ok(request) = serde_json::from_str::<Request>(&line) else {
                    return;
                };
                let response = match dispatch(&cloud, request).await {
                    Ok(v) => Response::Ok(v),
                    Err(e) => Response::Err(WireError {
                        kind: e.kind().as_str().to_owned(),
                        message: e.message().to_owned(),
                        retry_after_ms: e
                            .retry_after()
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                    }),
                };
                let Ok(mut out) = serde_json::to_string(&response) else {
                    return;
                };
                out.push('\n');
                if write.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

struct Conn {
    read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

/// A [`CloudProvider`] and [`RdpProbe`] talking to a [`serve`]d [`SimCloud`] in another
/// process. Reports the served cloud's name and capabilities.
pub struct RemoteSimCloud {
    addr: SocketAddr,
    name: &'static str,
    capabilities: Capabilities,
    idle: Mutex<Vec<Conn>>,
}

impl fmt::Debug for RemoteSimCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSimCloud")
            .field("addr", &self.addr)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RemoteSimCloud {
    /// Connects to a server at `addr` and learns the cloud's name and capabilities.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let mut client = Self {
            addr,
            name: "sim",
            capabilities: Capabilities::default(),
            idle: Mutex::new(Vec::new()),
        };
        let hello: Hello = client.call("hello", &Request::Hello).await?;
        client.capabilities = hello.capabilities;
        // One small string per client, so `name` can be `&'static str` like every provider's.
        client.name = if hello.name == "sim" {
            "sim"
        } else {
            Box::leak(hello.name.into_boxed_str())
        };
        Ok(client)
    }

    fn err(&self, kind: ErrorKind, operation: &'static str, message: impl Into<String>) -> Error {
        Error::new(kind, message)
            .with_backend(self.name)
            .with_operation(operation)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        request: &Request,
    ) -> Result<T> {
        let pooled = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let mut conn = if let Some(c) = pooled {
            c
        } else {
            let stream = TcpStream::connect(self.addr).await.map_err(|e| {
                self.err(
                    ErrorKind::Unavailable,
                    operation,
                    format!("cannot reach the sim cloud server: {e}"),
                )
            })?;
            let _ = stream.set_nodelay(true);
            let (read, write) = stream.into_split();
            Conn {
                read: BufReader::new(read),
                write,
            }
        };
        let mut line = serde_json::to_string(request).map_err(|e| {
            self.err(
                ErrorKind::Unexpected,
                operation,
                format!("cannot encode request: {e}"),
            )
        })?;
        line.push('\n');
        // Once bytes may have left, the outcome of a create is unknown.
        let broken = if matches!(request, Request::Create { .. }) {
            ErrorKind::Ambiguous
        } else {
            ErrorKind::Unavailable
        };
        if let Err(e) = conn.write.write_all(line.as_bytes()).await {
            return Err(self.err(broken, operation, format!("request lost: {e}")));
        }
        line.clear();
        match conn.read.read_line(&mut line).await {
            Ok(n) if n > 0 && line.ends_with('\n') => {}
            Ok(_) => {
                return Err(self.err(broken, operation, "server closed the connection"));
            }
            Err(e) => return Err(self.err(broken, operation, format!("response lost: {e}"))),
        }
        let response: Response = serde_json::from_str(&line).map_err(|e| {
            self.err(
                ErrorKind::Unexpected,
                operation,
                format!("malformed reply: {e}"),
            )
        })?;
        {
            let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
            if idle.len() < POOL_KEEP {
                idle.push(conn);
            }
        }
        match response {
            Response::Ok(v) => serde_json::from_value(v).map_err(|e| {
                self.err(
                    ErrorKind::Unexpected,
                    operation,
                    format!("malformed reply: {e}"),
                )
            }),
            Response::Err(w) => Err(self
                .err(kind_from_str(&w.kind), operation, w.message)
                .with_retry_after(w.retry_after_ms.map(Duration::from_millis))),
        }
    }
}

#[async_trait]
impl CloudProvider for RemoteSimCloud {
    fn name(&self) -> &'static str {
        self.name
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    async fn resolve_image(&self, os: OsKind, hint: Option<&str>) -> Result<ImageRef> {
        let hint = hint.map(str::to_owned);
        self.call("resolve_image", &Request::ResolveImage { os, hint })
            .await
    }

    async fn resolve_size(&self, region: &str, size: &str) -> Result<SizeRef> {
        let (id, region, vcpus, ram_mib, disk_gib): (String, String, u32, u32, u32) = self
            .call(
                "resolve_size",
                &Request::ResolveSize {
                    region: region.to_owned(),
                    size: size.to_owned(),
                },
            )
            .await?;
        Ok(SizeRef::new(id, region, vcpus, ram_mib, disk_gib))
    }

    async fn create_instance(&self, spec: &InstanceSpec) -> Result<Instance> {
        let spec = WireSpec {
            label: spec.label.clone(),
            region: spec.region.clone(),
            size: spec.size.clone(),
            image: spec.image.clone(),
            hostname: spec.hostname.clone(),
            tags: spec.tags.clone(),
            user_data: spec.user_data.clone(),
            admin_password: spec
                .admin_password
                .as_ref()
                .map(|p| p.expose_secret().to_owned()),
            rdp_source: spec.rdp_source,
        };
        let got: WireInstance = self
            .call("create_instance", &Request::Create { spec })
            .await?;
        Ok(got.into())
    }

    async fn get_instance(&self, id: &InstanceId) -> Result<Instance> {
        let got: WireInstance = self
            .call("get_instance", &Request::Get { id: id.clone() })
            .await?;
        Ok(got.into())
    }

    async fn find_by_label(&self, label: &str) -> Result<Vec<Instance>> {
        let found: Vec<WireInstance> = self
            .call(
                "find_by_label",
                &Request::FindByLabel {
                    label: label.to_owned(),
                },
            )
            .await?;
        Ok(found.into_iter().map(Into::into).collect())
    }

    async fn list_instances(&self, page: PageRequest) -> Result<Page<Instance>> {
        let got: WirePage = self
            .call(
                "list_instances",
                &Request::List {
                    cursor: page.cursor,
                    limit: page.limit,
                },
            )
            .await?;
        Ok(Page {
            items: got.items.into_iter().map(Into::into).collect(),
            next: got.next,
        })
    }

    async fn reboot(&self, id: &InstanceId) -> Result<()> {
        self.call("reboot", &Request::Reboot { id: id.clone() })
            .await
    }

    async fn stop(&self, id: &InstanceId) -> Result<()> {
        self.call("stop", &Request::Stop { id: id.clone() }).await
    }

    async fn start(&self, id: &InstanceId) -> Result<()> {
        self.call("start", &Request::Start { id: id.clone() }).await
    }

    async fn delete_instance(&self, id: &InstanceId) -> Result<()> {
        self.call("delete_instance", &Request::Delete { id: id.clone() })
            .await
    }
}

/// Answers like [`SimCloud::rdp_probe`], asking the server; an unreachable server is an
/// unreachable machine.
#[async_trait]
impl RdpProbe for RemoteSimCloud {
    async fn probe(&self, addr: SocketAddr) -> ProbeOutcome {
        match self
            .call::<bool>("rdp_probe", &Request::RdpOpen { addr: addr.ip() })
            .await
        {
            Ok(true) => {
                ProbeOutcome::Rdp(Negotiation::Selected(crate::rdp::probe::protocol::HYBRID))
            }
            Ok(false) => ProbeOutcome::Unreachable("connection refused (simulated)".into()),
            Err(e) => ProbeOutcome::Unreachable(format!("sim cloud server: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{
        cloud::CloudProviderExt as _,
        sim::cloud::{Fault, SimOp},
    };

    async fn pair(cloud: &SimCloud) -> (RemoteSimCloud, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(cloud.clone(), listener));
        (RemoteSimCloud::connect(addr).await.unwrap(), server)
    }

    #[tokio::test]
    async fn a_remote_client_sees_and_changes_the_served_cloud() {
        let cloud = SimCloud::builder()
            .name("shared")
            .boot_time(OsKind::UbuntuDesktop, Duration::ZERO, Duration::ZERO)
            .install_delay(Duration::ZERO)
            .rdp_delay(Duration::ZERO)
            .build();
        let (client, server) = pair(&cloud).await;
        assert_eq!(client.name(), "shared");
        assert_eq!(client.capabilities(), cloud.capabilities());
        let image = client
            .resolve_image(OsKind::UbuntuDesktop, None)
            .await
            .unwrap();
        let size = client.resolve_size("sim-1", "large").await.unwrap();
        assert_eq!((size.vcpus, size.ram_mib), (4, 8192));
        let spec = InstanceSpec::new("nemordp-remote", "sim-1", "small", image)
            .with_admin_password(SecretString::from("ours-Secret-1"));
        let created = client.create_instance(&spec).await.unwrap();
        assert!(created.admin_password.is_some());
        assert_eq!(cloud.creates_applied(), 1);
        let found = client
            .find_one_by_label("nemordp-remote")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, created.id);
        let got = client.get_instance(&created.id).await.unwrap();
        assert!(got.is_ready_for_probe());
        let rdp = SocketAddr::new(got.address.unwrap(), 3389);
        assert!(client.probe(rdp).await.is_ready());
        client.stop(&created.id).await.unwrap();
        assert!(!client.probe(rdp).await.is_ready());
        assert_eq!(client.list_all_instances().await.unwrap().len(), 1);
        client.delete_instance(&created.id).await.unwrap();
        assert_eq!(cloud.live_with_label("nemordp-remote"), 0);
        server.abort();
    }

    #[tokio::test]
    async fn errors_keep_their_kind_and_retry_after() {
        let cloud = SimCloud::builder().build();
        let (client, server) = pair(&cloud).await;
        let unknown = client.get_instance(&"nope".into()).await.unwrap_err();
        assert_eq!(unknown.kind(), ErrorKind::NotFound);
        cloud.push_fault(SimOp::Get, Fault::RateLimited(Duration::from_secs(7)));
        let limited = client.get_instance(&"nope".into()).await.unwrap_err();
        assert_eq!(limited.kind(), ErrorKind::RateLimited);
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(7)));
        cloud.push_fault(SimOp::Create, Fault::LostResponse);
        let image = client
            .resolve_image(OsKind::WindowsServer, None)
            .await
            .unwrap();
        let lost = client
            .create_instance(&InstanceSpec::new("nemordp-lost", "sim-1", "small", image))
            .await
            .unwrap_err();
        assert_eq!(lost.kind(), ErrorKind::Ambiguous);
        assert_eq!(cloud.live_with_label("nemordp-lost"), 1);
        server.abort();
    }

    #[tokio::test]
    async fn a_dead_server_is_unavailable_and_a_dead_create_ambiguous() {
        let cloud = SimCloud::builder().build();
        let (client, server) = pair(&cloud).await;
        let image = client
            .resolve_image(OsKind::WindowsServer, None)
            .await
            .unwrap();
        server.abort();
        // Nothing listens here any more: connecting is refused.
        let gone = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = gone.local_addr().unwrap();
        drop(gone);
        let dead = RemoteSimCloud {
            addr,
            name: "sim",
            capabilities: Capabilities::default(),
            idle: Mutex::new(Vec::new()),
        };
        let e = dead.get_instance(&"x".into()).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        // A server that reads the request and hangs up: the create may have happened.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hangup = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut lines = BufReader::new(stream);
            let mut line = String::new();
            lines.read_line(&mut line).await.unwrap();
        });
        let flaky = RemoteSimCloud {
            addr,
            name: "sim",
            capabilities: Capabilities::default(),
            idle: Mutex::new(Vec::new()),
        };
        let e = flaky
            .create_instance(&InstanceSpec::new("nemordp-gone", "sim-1", "small", image))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Ambiguous);
        hangup.await.unwrap();
    }
}
