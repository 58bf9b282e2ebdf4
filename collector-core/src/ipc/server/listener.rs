//! The listening side: binding the socket file, the accept loop, and admission
//! (peer credentials, the peer policy, per-uid slots and the connection caps).

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use collector_proto::v1 as pb;

use super::connection::Connection;
use super::{error_envelope, IpcServerConfig, ServerError, Shared};
use crate::ipc::access::SocketAccess;
use crate::ipc::codec::EnvelopeCodec;
use crate::ipc::provider::StatusProvider;
use crate::ipc::sink::IpcSink;
use crate::ipc::task::{Peer, TaskHandler};

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
