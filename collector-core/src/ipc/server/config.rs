//! What the IPC server is configured with: who may connect ([`PeerPolicy`]) and its
//! limits and timeouts ([`IpcServerConfig`]).

use std::path::PathBuf;
use std::time::Duration;

use crate::ipc::codec::DEFAULT_MAX_FRAME_BYTES;
use crate::ipc::task::Peer;
use crate::ipc::DEFAULT_SOCKET_PATH;

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
