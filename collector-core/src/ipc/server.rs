//! [`CollectorIpcServer`]: the Unix-socket server agents connect to.
//!
//! One task per connection, split into a reader (requests) and a writer (responses,
//! event batches, `Lagged` and `CapabilityUpdate` pushes). Admission happens before a
//! connection gets a task: peer credentials first, then a permit from the connection
//! semaphore; a refused client gets one Error frame and is closed. A connection's
//! failure (bad frames, timeouts, a panic) ends that connection only.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use collector_proto::v1 as pb;
use collector_proto::v1::envelope::Body;
use collector_proto::PROTOCOL_VERSION;

use crate::caps::SourceCaps;
use crate::event::Domain;
use crate::ipc::access::SocketAccess;
use crate::ipc::codec::{EnvelopeCodec, FrameError, DEFAULT_MAX_FRAME_BYTES, HEADER_BYTES};
use crate::ipc::convert::{caps_to_proto, domain_from_proto, domain_to_proto, status_to_proto};
use crate::ipc::filter::EventFilter;
use crate::ipc::provider::StatusProvider;
use crate::ipc::sink::{IpcSink, Subscription};
use crate::ipc::task::{error_result, task_domain, Peer, TaskHandler};
use crate::ipc::wire::{EventBatchFrame, SizedEvent};
use crate::ipc::DEFAULT_SOCKET_PATH;
use crate::sink::EventBatch;

/// Who may connect, judged from the peer's `SO_PEERCRED`.
///
/// The socket file is mode 0600 unless a socket group is configured
/// ([`IpcServerConfig::socket_group`]), so in practice only its owner and root reach the
/// check; the allow-list matters once group members can reach the socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerPolicy {
    /// Admit uid 0.
    pub allow_root: bool,
    /// Admit the uid the collector runs as (the socket file's owner).
    pub allow_own_uid: bool,
    /// Admit these uids.
    pub allowed_uids: Vec<u32>,
    /// Admit peers whose primary or supplementary gid is one of these.
    pub allowed_gids: Vec<u32>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self {
            allow_root: true,
            allow_own_uid: true,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
        }
    }
}

impl PeerPolicy {
    /// Whether a peer with these credentials may connect to a collector running as
    /// `own_uid`.
    pub fn permits(&self, uid: u32, gid: u32, own_uid: u32) -> bool {
        (self.allow_root && uid == 0)
            || (self.allow_own_uid && uid == own_uid)
            || self.allowed_uids.contains(&uid)
            || self.allowed_gids.contains(&gid)
    }

    /// Whether `peer` may connect: like [`permits`](Self::permits), with its
    /// supplementary groups counted for `allowed_gids`.
    pub fn permits_peer(&self, peer: &Peer, own_uid: u32) -> bool {
        self.permits(peer.uid, peer.gid, own_uid)
            || peer.groups.iter().any(|g| self.allowed_gids.contains(g))
    }
}

/// Server settings. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct IpcServerConfig {
    /// Socket path (default `/run/collector/collector.sock`).
    pub socket_path: PathBuf,
    /// Connections served at once; more are refused with an Error frame.
    pub max_connections: usize,
    /// Connections one non-root uid may hold at once, so no single peer takes them all.
    pub max_connections_per_uid: usize,
    /// Extra connections only uid 0 may use once `max_connections` are taken: root's
    /// `collector status` always gets in.
    pub root_reserved_connections: usize,
    /// A subscriber that receives no event and sends no request for this long is closed
    /// (a subscription to a domain nobody produces must not hold a slot for ever).
    pub subscriber_idle_timeout: Duration,
    /// Largest frame payload accepted or sent.
    pub max_frame_bytes: usize,
    /// Who may connect.
    pub peer_policy: PeerPolicy,
    /// A connection that has not subscribed is closed after this long without a request.
    pub idle_timeout: Duration,
    /// A write (one frame, or one batch of frames) that takes longer closes the connection.
    pub write_timeout: Duration,
    /// Longest a detection task may run before it is answered with a timeout error.
    pub task_timeout: Duration,
    /// Group (name or numeric gid) given the socket, mode 0660, and a directory the server
    /// creates, mode 0750; `None` keeps both owner-only (0600 / 0700).
    pub socket_group: Option<String>,
}

impl IpcServerConfig {
    /// The IPC settings of a collector configuration (`socket_path`, `max_ipc_connections`,
    /// `max_frame_bytes`, `ipc_allowed_uids`, `ipc_allowed_gids`, `socket_group`); timeouts
    /// keep their defaults.
    pub fn from_collector_config(config: &crate::config::CollectorConfig) -> Self {
        Self {
            socket_path: config.socket_path.clone(),
            max_connections: config.max_ipc_connections,
            max_frame_bytes: config.max_frame_bytes,
            peer_policy: PeerPolicy {
                allow_root: true,
                allow_own_uid: true,
                allowed_uids: config.ipc_allowed_uids.clone(),
                allowed_gids: config.ipc_allowed_gids.clone(),
            },
            socket_group: config.socket_group.clone(),
            ..Self::default()
        }
    }
}

impl Default for IpcServerConfig {
    fn default() -> Self {
        Self {
            socket_path: PathBuf::from(DEFAULT_SOCKET_PATH),
            max_connections: 64,
            max_connections_per_uid: 8,
            root_reserved_connections: 2,
            subscriber_idle_timeout: Duration::from_secs(600),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            peer_policy: PeerPolicy::default(),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            task_timeout: Duration::from_secs(30),
            socket_group: None,
        }
    }
}

/// Why the server could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The socket's directory could not be created.
    #[error("cannot create socket directory {path}")]
    CreateDir {
        /// Directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Something other than a socket sits at the socket path.
    #[error("{path} exists and is not a socket; remove it or choose another --socket path")]
    NotASocket {
        /// Socket path.
        path: PathBuf,
    },
    /// A live server answers on the socket path.
    #[error(
        "another collector is already serving on {path}; stop it or choose another --socket path"
    )]
    InUse {
        /// Socket path.
        path: PathBuf,
    },
    /// The configured socket group is neither a numeric gid nor in `/etc/group`.
    #[error(
        "socket_group `{group}` is not a group on this host; create it (`groupadd {group}`) \
         or give a numeric gid"
    )]
    UnknownGroup {
        /// The configured group.
        group: String,
    },
    /// The socket could not be handed to the configured group.
    #[error(
        "cannot give IPC socket {path} to gid {gid} (run the collector as root, or as a \
         member of that group)"
    )]
    SocketGroup {
        /// Socket path.
        path: PathBuf,
        /// The group's gid.
        gid: u32,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Binding or securing the socket failed.
    #[error("cannot bind IPC socket {path}")]
    Bind {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Everything a connection needs, shared by all of them.
struct Shared {
    /// Open connections per non-root uid.
    per_uid: std::sync::Mutex<std::collections::HashMap<u32, usize>>,
    config: IpcServerConfig,
    status: Arc<dyn StatusProvider>,
    sink: IpcSink,
    tasks: Option<Arc<dyn TaskHandler>>,
}

/// The IPC server: bind with [`bind`](Self::bind), then [`run`](Self::run) until shutdown.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use collector_core::ipc::{CollectorIpcServer, IpcServerConfig, IpcSink, ManualStatus};
/// use collector_core::SourceCaps;
///
/// let sink = IpcSink::default(); // also registered with the collector as a sink
/// let status = Arc::new(ManualStatus::new(SourceCaps::PROCESS));
/// let server = CollectorIpcServer::bind(IpcServerConfig::default(), status, sink, None).await?;
/// server.run(async { tokio::signal::ctrl_c().await.ok(); }).await;
/// # Ok(()) }
/// ```
pub struct CollectorIpcServer {
    listener: UnixListener,
    socket_path: PathBuf,
    /// (dev, inode) of the socket we bound, so shutdown never removes a successor's.
    socket_id: (u64, u64),
    /// Our effective uid: the owner of the socket we created.
    own_uid: u32,
    shared: Arc<Shared>,
}

impl CollectorIpcServer {
    /// Creates the socket directory (0700, or 0750 with the socket group) if missing,
    /// replaces a stale socket (a socket file nobody answers on), binds, and sets the
    /// socket file to 0600 (or 0660 with the socket group).
    pub async fn bind(
        config: IpcServerConfig,
        status: Arc<dyn StatusProvider>,
        sink: IpcSink,
        tasks: Option<Arc<dyn TaskHandler>>,
    ) -> Result<Self, ServerError> {
        let path = config.socket_path.clone();
        let access = SocketAccess::resolve(config.socket_group.as_deref())?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            access.create_dir(dir)?;
        }
        remove_stale_socket(&path).await?;
        let bind_err = |source| ServerError::Bind {
            path: path.clone(),
            source,
        };
        let listener = UnixListener::bind(&path).map_err(bind_err)?;
        // The owner-only (or group-only) directory covers the gap when we created it.
        access.secure_socket(&path)?;
        let meta = std::fs::symlink_metadata(&path).map_err(bind_err)?;
        info!(path = %path.display(), "IPC server listening");
        Ok(Self {
            listener,
            socket_path: path,
            socket_id: (meta.dev(), meta.ino()),
            own_uid: meta.uid(),
            shared: Arc::new(Shared {
                per_uid: Default::default(),
                config,
                status,
                sink,
                tasks,
            }),
        })
    }

    /// The socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Serves until `shutdown` completes, then closes every connection and removes the
    /// socket file.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let cfg = &self.shared.config;
        let permits = Arc::new(Semaphore::new(cfg.max_connections));
        let root_permits = Arc::new(Semaphore::new(cfg.root_reserved_connections));
        // Refusals are short writes, but a flood of them must not pile up tasks either.
        let refusals = Arc::new(Semaphore::new(cfg.max_connections.max(4)));
        let cancel = CancellationToken::new();
        let mut conns = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                Some(res) = conns.join_next(), if !conns.is_empty() => {
                    if let Err(e) = res {
                        if e.is_panic() {
                            warn!("IPC connection task panicked; other connections are unaffected");
                        }
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        self.admit(stream, [&permits, &root_permits], &refusals, &cancel, &mut conns);
                    }
                    Err(e) => {
                        // EMFILE and friends: back off rather than spin.
                        warn!(error = %e, "IPC accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        cancel.cancel();
        let drain = async { while conns.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(2), drain)
            .await
            .is_err()
        {
            conns.abort_all();
        }
        self.remove_socket();
        info!(path = %self.socket_path.display(), "IPC server stopped");
    }

    fn admit(
        &self,
        stream: UnixStream,
        [permits, root_permits]: [&Arc<Semaphore>; 2],
        refusals: &Arc<Semaphore>,
        cancel: &CancellationToken,
        conns: &mut JoinSet<()>,
    ) {
        let refuse = |stream, code: pb::ErrorCode, message: String, conns: &mut JoinSet<()>| {
            let Ok(permit) = refusals.clone().try_acquire_owned() else {
                return; // dropping the stream closes it
            };
            let write_timeout = self.shared.config.write_timeout.min(Duration::from_secs(1));
            conns.spawn(async move {
                let _permit = permit;
                let mut out = FramedWrite::new(stream, EnvelopeCodec::default());
                let _ =
                    tokio::time::timeout(write_timeout, out.send(error_envelope(0, code, message)))
                        .await;
            });
        };

        let cred = match stream.peer_cred() {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot read IPC peer credentials; refusing");
                return;
            }
        };
        let peer = Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: peer_groups(&stream),
        };
        if !self
            .shared
            .config
            .peer_policy
            .permits_peer(&peer, self.own_uid)
        {
            warn!(uid = cred.uid(), gid = cred.gid(), pid = ?cred.pid(), "IPC peer not allowed");
            let msg = format!(
                "uid {} / gid {} may not use the collector socket; run as root or add the uid \
                 to ipc_allowed_uids (or the gid to ipc_allowed_gids)",
                cred.uid(),
                cred.gid()
            );
            refuse(stream, pb::ErrorCode::PermissionDenied, msg, conns);
            return;
        }
        let uid_slot = if peer.is_root() {
            None
        } else {
            match UidSlot::take(&self.shared, peer.uid) {
                Some(slot) => Some(slot),
                None => {
                    let max = self.shared.config.max_connections_per_uid;
                    warn!(
                        uid = peer.uid,
                        max, "IPC per-uid connection cap reached; refusing"
                    );
                    let msg = format!(
                        "uid {} already holds {max} IPC connections; close some or raise \
                         max_connections_per_uid",
                        peer.uid
                    );
                    refuse(stream, pb::ErrorCode::TooManyConnections, msg, conns);
                    return;
                }
            }
        };
        let permit = permits.clone().try_acquire_owned().or_else(|e| {
            if peer.is_root() {
                root_permits.clone().try_acquire_owned()
            } else {
                Err(e)
            }
        });
        let Ok(permit) = permit else {
            let max = self.shared.config.max_connections;
            warn!(max, "IPC connection cap reached; refusing");
            let msg = format!(
                "the collector already serves {max} IPC connections; retry later or raise \
                 max_ipc_connections"
            );
            refuse(stream, pb::ErrorCode::TooManyConnections, msg, conns);
            return;
        };
        debug!(uid = cred.uid(), pid = ?cred.pid(), "IPC client connected");
        let conn = Connection {
            shared: self.shared.clone(),
            cancel: cancel.child_token(),
            server_stop: cancel.clone(),
            peer: Arc::new(peer),
        };
        conns.spawn(async move {
            let _permit = permit;
            let _uid_slot = uid_slot;
            conn.serve(stream).await;
        });
    }

    fn remove_socket(&self) {
        match std::fs::symlink_metadata(&self.socket_path) {
            Ok(m) if (m.dev(), m.ino()) == self.socket_id => {
                if let Err(e) = std::fs::remove_file(&self.socket_path) {
                    warn!(error = %e, path = %self.socket_path.display(), "cannot remove IPC socket");
                }
            }
            _ => {} // already gone, or replaced by someone else's
        }
    }
}

/// Removes `path` if it is a socket nobody answers on.
async fn remove_stale_socket(path: &Path) -> Result<(), ServerError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServerError::Bind {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ServerError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    let probe = tokio::time::timeout(Duration::from_secs(1), UnixStream::connect(path)).await;
    if matches!(probe, Ok(Ok(_))) {
        return Err(ServerError::InUse {
            path: path.to_path_buf(),
        });
    }
    info!(path = %path.display(), "replacing stale IPC socket");
    std::fs::remove_file(path).map_err(|source| ServerError::Bind {
        path: path.to_path_buf(),
        source,
    })
}

fn error_envelope(
    request_id: u64,
    code: pb::ErrorCode,
    message: impl Into<String>,
) -> pb::Envelope {
    pb::Envelope {
        request_id,
        body: Some(Body::Error(pb::Error {
            code: code as i32,
            message: message.into(),
        })),
    }
}

/// What the reader asks the writer to do.
enum Outbound {
    /// Send this.
    Send(pb::Envelope),
    /// Send this, then close the connection.
    Close(pb::Envelope),
    /// Start (or change) the subscription, then acknowledge request `request_id`.
    Subscribe {
        request_id: u64,
        filter: EventFilter,
    },
}

struct Connection {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    /// The server's own stop: set only when the whole server shuts down, so a
    /// subscriber then gets what is queued for it and an end-of-stream message.
    server_stop: CancellationToken,
    /// Who is on the other end, as the kernel said at connect time.
    peer: Arc<Peer>,
}

/// One of a uid's connection slots; given back on drop.
struct UidSlot {
    shared: Arc<Shared>,
    uid: u32,
}

impl UidSlot {
    fn take(shared: &Arc<Shared>, uid: u32) -> Option<Self> {
        let mut per_uid = shared.per_uid.lock().expect("per-uid lock");
        let held = per_uid.entry(uid).or_insert(0);
        if *held >= shared.config.max_connections_per_uid {
            return None;
        }
        *held += 1;
        Some(Self {
            shared: shared.clone(),
            uid,
        })
    }
}

impl Drop for UidSlot {
    fn drop(&mut self) {
        let mut per_uid = self.shared.per_uid.lock().expect("per-uid lock");
        if let Some(held) = per_uid.get_mut(&self.uid) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                per_uid.remove(&self.uid);
            }
        }
    }
}

/// The peer's supplementary groups at connect time (`SO_PEERGROUPS`, Linux 4.13+):
/// taken from the socket, not from `/proc/<pid>`, which a pid reuse could change.
/// Empty when the kernel cannot say (only the primary gid then counts).
fn peer_groups(stream: &UnixStream) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<u32>()) as libc::socklen_t;
        // SAFETY: `groups` has `len` writable bytes; the fd is open for the call.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<u32>();
        if rc == 0 {
            groups.truncate(n);
            return groups;
        }
        // ERANGE: `len` now says how much room the list needs.
        if std::io::Error::last_os_error().raw_os_error() == Some(libc::ERANGE)
            && n > groups.len()
            && n <= 65_536
        {
            groups.resize(n, 0);
            continue;
        }
        return Vec::new();
    }
}

impl Connection {
    async fn serve(self, stream: UnixStream) {
        let max = self.shared.config.max_frame_bytes;
        let (rd, wr) = stream.into_split();
        let reader = FramedRead::new(rd, EnvelopeCodec::new(max));
        let writer = FramedWrite::new(wr, EnvelopeCodec::new(max));
        let (out_tx, out_rx) = mpsc::channel(16);
        tokio::join!(
            self.read_loop(reader, out_tx),
            self.write_loop(writer, out_rx)
        );
        // The subscription (if any) was dropped with the writer.
        self.publish_subscribers();
    }

    fn publish_subscribers(&self) {
        let count = self.shared.sink.subscriber_count() as u64;
        self.shared.status.set_subscribers(count);
    }

    async fn read_loop(
        &self,
        mut reader: FramedRead<tokio::net::unix::OwnedReadHalf, EnvelopeCodec>,
        out: mpsc::Sender<Outbound>,
    ) {
        let mut negotiated = false;
        let mut subscribed = false;
        loop {
            let idle = (!subscribed).then_some(self.shared.config.idle_timeout);
            // A subscriber may stay silent for ever; anyone else must keep talking.
            let read = async {
                match idle {
                    Some(limit) => tokio::time::timeout(limit, reader.next()).await.ok(),
                    None => Some(reader.next().await),
                }
            };
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return,
                next = read => match next {
                    Some(next) => next,
                    None => {
                        let msg = "no request within the idle timeout; closing";
                        let _ = out
                            .send(Outbound::Close(error_envelope(0, pb::ErrorCode::Timeout, msg)))
                            .await;
                        return;
                    }
                },
            };
            let env = match next {
                None => break,
                Some(Ok(env)) => env,
                Some(Err(FrameError::Io(e))) => {
                    debug!(error = %crate::Report(&e), "IPC read failed");
                    break;
                }
                Some(Err(e)) => {
                    debug!(error = %crate::Report(&e), "bad IPC frame; closing connection");
                    let msg = format!("{}; closing the connection", crate::Report(&e));
                    let _ = out
                        .send(Outbound::Close(error_envelope(
                            0,
                            pb::ErrorCode::BadFrame,
                            msg,
                        )))
                        .await;
                    return;
                }
            };
            let id = env.request_id;
            let reply = match env.body {
                Some(Body::CapabilityRequest(req)) => {
                    if req.protocol_version != PROTOCOL_VERSION {
                        let msg = format!(
                            "protocol version {} is not supported (server speaks {PROTOCOL_VERSION}); \
                             upgrade the client or the collector",
                            req.protocol_version
                        );
                        Outbound::Close(error_envelope(id, pb::ErrorCode::UnsupportedVersion, msg))
                    } else {
                        negotiated = true;
                        debug!(client = %req.client_id, "IPC client negotiated");
                        Outbound::Send(self.capability_response(id, &req))
                    }
                }
                _ if !negotiated => Outbound::Close(error_envelope(
                    id,
                    pb::ErrorCode::NotNegotiated,
                    "send CapabilityRequest first",
                )),
                Some(Body::Subscribe(sub)) => match EventFilter::from_proto(&sub) {
                    Ok(filter) => {
                        subscribed = true;
                        Outbound::Subscribe {
                            request_id: id,
                            filter,
                        }
                    }
                    Err(e) => {
                        Outbound::Send(error_envelope(id, pb::ErrorCode::BadRequest, e.to_string()))
                    }
                },
                Some(Body::StatusRequest(_)) => {
                    let mut status = self.shared.status.status();
                    status.counters.subscribers = self.shared.sink.subscriber_count() as u64;
                    Outbound::Send(pb::Envelope {
                        request_id: id,
                        body: Some(Body::StatusResponse(status_to_proto(&status))),
                    })
                }
                Some(Body::DetectionTask(task)) => Outbound::Send(pb::Envelope {
                    request_id: id,
                    body: Some(Body::DetectionResult(self.run_task(task).await)),
                }),
                Some(_) | None => Outbound::Send(error_envelope(
                    id,
                    pb::ErrorCode::BadRequest,
                    "expected CapabilityRequest, Subscribe, StatusRequest or DetectionTask",
                )),
            };
            let closing = matches!(reply, Outbound::Close(_));
            if out.send(reply).await.is_err() || closing {
                return;
            }
        }
        // The client closed its end: nothing more to do for it.
        self.cancel.cancel();
    }

    fn capability_response(&self, id: u64, req: &pb::CapabilityRequest) -> pb::Envelope {
        let caps = *self.shared.status.watch_capabilities().borrow();
        let requested: Vec<Domain> = if req.requested_domains.is_empty() {
            Domain::ALL.to_vec()
        } else {
            req.requested_domains
                .iter()
                .filter_map(|&d| domain_from_proto(d).ok())
                .collect()
        };
        pb::Envelope {
            request_id: id,
            body: Some(Body::CapabilityResponse(pb::CapabilityResponse {
                protocol_version: PROTOCOL_VERSION,
                capabilities: Some(caps_to_proto(caps)),
                granted_domains: requested
                    .into_iter()
                    .filter(|d| caps.contains(d.capability()))
                    .map(|d| domain_to_proto(d) as i32)
                    .collect(),
                server_version: env!("CARGO_PKG_VERSION").to_string(),
            })),
        }
    }

    async fn run_task(&self, task: pb::DetectionTask) -> pb::DetectionResult {
        let task_id = task.task_id.clone();
        let Some(domain) = task_domain(&task) else {
            return error_result(task_id, pb::ErrorCode::BadRequest, "the task has no body");
        };
        let caps: SourceCaps = *self.shared.status.watch_capabilities().borrow();
        if !caps.contains(domain.capability()) {
            return error_result(
                task_id,
                pb::ErrorCode::UnsupportedDomain,
                format!(
                    "no registered source supports the {} domain, so this task cannot run",
                    domain.as_str()
                ),
            );
        }
        let Some(handler) = self.shared.tasks.clone() else {
            return error_result(
                task_id,
                pb::ErrorCode::UnsupportedDomain,
                "this collector has no detection-task handler",
            );
        };
        // Run on its own task so a panicking handler fails only this request.
        let peer = self.peer.clone();
        let run = tokio::spawn(async move { handler.handle_as(task, &peer).await });
        match tokio::time::timeout(self.shared.config.task_timeout, run).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => error_result(task_id, pb::ErrorCode::Internal, "the task handler failed"),
            Err(_) => error_result(
                task_id,
                pb::ErrorCode::Timeout,
                format!(
                    "the task did not finish within {:?}",
                    self.shared.config.task_timeout
                ),
            ),
        }
    }

    async fn write_loop(
        &self,
        mut writer: FramedWrite<tokio::net::unix::OwnedWriteHalf, EnvelopeCodec>,
        mut out: mpsc::Receiver<Outbound>,
    ) {
        let write_timeout = self.shared.config.write_timeout;
        let mut caps_rx = self.shared.status.watch_capabilities();
        caps_rx.mark_unchanged();
        let mut sub: Option<Subscription> = None;
        let sub_idle = self.shared.config.subscriber_idle_timeout;
        let mut last_activity = tokio::time::Instant::now();
        loop {
            let result = tokio::select! {
                biased;
                // A request answered is activity for the idle rule too.
                msg = out.recv() => match msg.inspect(|_| last_activity = tokio::time::Instant::now()) {
                    None => break,
                    Some(Outbound::Send(env)) => send(&mut writer, env, write_timeout).await,
                    Some(Outbound::Close(env)) => {
                        let _ = send(&mut writer, env, write_timeout).await;
                        break;
                    }
                    Some(Outbound::Subscribe { request_id, filter }) => {
                        match sub.as_mut() {
                            Some(s) => s.set_filter(filter),
                            None => {
                                sub = Some(self.shared.sink.subscribe(filter));
                                self.publish_subscribers();
                            }
                        }
                        let p = filter.to_proto();
                        let ack = pb::Envelope {
                            request_id,
                            body: Some(Body::SubscribeAck(pb::SubscribeAck {
                                domains: p.domains,
                                kinds: p.kinds,
                            })),
                        };
                        send(&mut writer, ack, write_timeout).await
                    }
                },
                _ = self.cancel.cancelled() => break,
                _ = tokio::time::sleep_until(last_activity + sub_idle), if sub.is_some() => {
                    let msg = "the subscription received no event and no request within the \
                               subscriber idle timeout; closing";
                    let _ = send(
                        &mut writer,
                        error_envelope(0, pb::ErrorCode::Timeout, msg),
                        write_timeout,
                    )
                    .await;
                    break;
                }
                Some(batch) = recv_batch(&mut sub) => {
                    last_activity = tokio::time::Instant::now();
                    let sub = sub.as_ref().expect("a batch implies a subscription");
                    self.write_batch(&mut writer, &batch, sub).await
                }
                Ok(()) = caps_rx.changed(), if sub.is_some() => {
                    let caps = *caps_rx.borrow_and_update();
                    let update = pb::Envelope {
                        request_id: 0,
                        body: Some(Body::CapabilityUpdate(pb::CapabilityUpdate {
                            capabilities: Some(caps_to_proto(caps)),
                        })),
                    };
                    send(&mut writer, update, write_timeout).await
                }
            };
            if let Err(e) = result {
                debug!(error = %crate::Report(&e), "IPC write failed; closing connection");
                sub = None;
                break;
            }
        }
        // The server is stopping (the reader may have ended first, closing `out`):
        // hand the subscriber what is still queued for it, then say it is the end.
        if let (true, Some(sub)) = (self.server_stop.is_cancelled(), sub.as_mut()) {
            self.end_stream(&mut writer, sub).await;
        }
        // Stop the reader too (it may be waiting on a client that is gone).
        self.cancel.cancel();
    }

    /// At server shutdown (run after the collector's final flush): sends every batch
    /// still queued for this subscriber, then an end-of-stream message, so nothing the
    /// pipeline counted as delivered to the subscriber's queue is lost silently.
    async fn end_stream(
        &self,
        writer: &mut FramedWrite<tokio::net::unix::OwnedWriteHalf, EnvelopeCodec>,
        sub: &mut Subscription,
    ) {
        while let Some(batch) = sub.try_recv() {
            if let Err(e) = self.write_batch(writer, &batch, sub).await {
                debug!(error = %crate::Report(&e), "IPC write failed during the final drain");
                return;
            }
        }
        let end = pb::Envelope {
            request_id: 0,
            body: Some(Body::EndOfStream(pb::EndOfStream {
                reason: "collector shutting down".into(),
                events_queued: sub.queued_events(),
            })),
        };
        if let Err(e) = send(writer, end, self.shared.config.write_timeout).await {
            debug!(error = %crate::Report(&e), "IPC end-of-stream not sent");
        }
    }

    /// Sends the events of `batch` that match the subscription, split into frames under
    /// the size cap, then a `Lagged` notice if the subscriber's queue overflowed.
    async fn write_batch(
        &self,
        writer: &mut FramedWrite<tokio::net::unix::OwnedWriteHalf, EnvelopeCodec>,
        batch: &EventBatch,
        sub: &Subscription,
    ) -> Result<(), FrameError> {
        let filter = sub.filter();
        // Room for the envelope's own tag and length prefix.
        let budget = self.shared.config.max_frame_bytes - HEADER_BYTES - 16;
        let mut oversize = 0u64;
        let events: Vec<SizedEvent<'_>> = batch
            .iter()
            .filter(|e| filter.matches(e))
            .map(SizedEvent::new)
            .filter(|e| {
                // Cannot happen with the collector's own caps; count it as missed.
                let fits = e.entry_len() <= budget;
                oversize += u64::from(!fits);
                fits
            })
            .collect();
        let work = async {
            let (mut first, mut size) = (0, 0);
            for (i, ev) in events.iter().enumerate() {
                let len = ev.entry_len();
                if size + len > budget {
                    writer.feed(EventBatchFrame::new(&events[first..i])).await?;
                    (first, size) = (i, 0);
                }
                size += len;
            }
            if first < events.len() {
                writer.feed(EventBatchFrame::new(&events[first..])).await?;
            }
            let missed = sub.take_missed() + oversize;
            if missed > 0 {
                let lagged = pb::Envelope {
                    request_id: 0,
                    body: Some(Body::Lagged(pb::Lagged {
                        missed_events: missed,
                    })),
                };
                writer.feed(lagged).await?;
            }
            SinkExt::<pb::Envelope>::flush(writer).await
        };
        timed(self.shared.config.write_timeout, work).await
    }
}

async fn recv_batch(sub: &mut Option<Subscription>) -> Option<EventBatch> {
    match sub {
        Some(s) => s.recv().await,
        None => std::future::pending().await,
    }
}

async fn send(
    writer: &mut FramedWrite<tokio::net::unix::OwnedWriteHalf, EnvelopeCodec>,
    env: pb::Envelope,
    write_timeout: Duration,
) -> Result<(), FrameError> {
    timed(write_timeout, writer.send(env)).await
}

async fn timed(
    limit: Duration,
    fut: impl Future<Output = Result<(), FrameError>>,
) -> Result<(), FrameError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "IPC write timed out",
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_policy_admits_root_and_listed_ids_only() {
        let p = PeerPolicy {
            allow_root: true,
            allow_own_uid: true,
            allowed_uids: vec![1000],
            allowed_gids: vec![50],
        };
        assert!(p.permits(0, 0, 999));
        assert!(p.permits(999, 999, 999), "the collector's own uid");
        assert!(p.permits(1000, 1000, 999));
        assert!(p.permits(1001, 50, 999));
        assert!(!p.permits(1001, 1001, 999));
        let strict = PeerPolicy {
            allow_root: false,
            allow_own_uid: false,
            ..PeerPolicy::default()
        };
        assert!(!strict.permits(0, 0, 0));
        assert!(!strict.permits(999, 999, 999));
    }
}
