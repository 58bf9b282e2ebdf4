//! [`ServerError`]: why the IPC server could not start. Its own module so that both the
//! server and the socket-file access code return it without importing
//! each other.

use std::path::PathBuf;

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
