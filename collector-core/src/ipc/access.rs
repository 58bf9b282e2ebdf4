//! Who can reach the socket file: its directory and its mode, optionally shared with a
//! group (`socket_group`).
//!
//! Without a group the socket is 0600 in a 0700 directory: only the collector's own uid
//! (and root) can connect, whatever the peer policy allows. With a group the socket is
//! 0660 and a directory the collector creates is 0750, both owned by that group, so its
//! members reach the socket and the peer policy decides who is served. A directory that
//! already exists is never changed (it may be `/run` or `/tmp`); if the group cannot
//! traverse it, a warning says so.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tracing::warn;

use crate::ipc::error::ServerError;

/// Where `/etc/group` lives; group names are resolved from it (numeric gids need nothing).
const GROUP_FILE: &str = "/etc/group";

/// The socket's group, resolved to a gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SocketAccess {
    gid: Option<u32>,
}

impl SocketAccess {
    /// Resolves `group` (a name in `/etc/group`, or a numeric gid).
    pub(crate) fn resolve(group: Option<&str>) -> Result<Self, ServerError> {
        let Some(group) = group else {
            return Ok(Self { gid: None });
        };
        if let Ok(gid) = group.parse::<u32>() {
            return Ok(Self { gid: Some(gid) });
        }
        let table = std::fs::read_to_string(GROUP_FILE).unwrap_or_default();
        match gid_in_group_file(&table, group) {
            Some(gid) => Ok(Self { gid: Some(gid) }),
            None => Err(ServerError::UnknownGroup {
                group: group.to_owned(),
            }),
        }
    }

    fn dir_mode(&self) -> u32 {
        if self.gid.is_some() {
            0o750
        } else {
            0o700
        }
    }

    fn socket_mode(&self) -> u32 {
        if self.gid.is_some() {
            0o660
        } else {
            0o600
        }
    }

    /// Creates the socket's directory if it is missing, with the directory mode and group.
    pub(crate) fn create_dir(&self, dir: &Path) -> Result<(), ServerError> {
        let err = |source| ServerError::CreateDir {
            path: dir.to_path_buf(),
            source,
        };
        if dir.exists() {
            self.warn_if_group_cannot_traverse(dir);
            return Ok(());
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(self.dir_mode())
            .create(dir)
            .map_err(err)?;
        if let Some(gid) = self.gid {
            std::os::unix::fs::chown(dir, None, Some(gid)).map_err(err)?;
            // mkdir(2) honours the umask, which may have cleared the group bits.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(self.dir_mode()))
                .map_err(err)?;
        }
        Ok(())
    }

    /// Sets the freshly bound socket's group and mode.
    pub(crate) fn secure_socket(&self, path: &Path) -> Result<(), ServerError> {
        let err = |source| ServerError::Bind {
            path: path.to_path_buf(),
            source,
        };
        // bind(2) honours the umask: tighten first, then hand over to the group.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        if let Some(gid) = self.gid {
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| {
                ServerError::SocketGroup {
                    path: path.to_path_buf(),
                    gid,
                    source,
                }
            })?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(self.socket_mode()))
                .map_err(err)?;
        }
        Ok(())
    }

    fn warn_if_group_cannot_traverse(&self, dir: &Path) {
        let (Some(gid), Ok(meta)) = (self.gid, std::fs::metadata(dir)) else {
            return;
        };
        let mode = meta.mode();
        let traversable = mode & 0o001 != 0 || (meta.gid() == gid && mode & 0o010 != 0);
        if !traversable {
            warn!(
                dir = %dir.display(),
                gid,
                "members of the socket group cannot enter the socket's directory, so they \
                 cannot connect; `chgrp {gid} {0} && chmod g+x {0}`, or remove it and let \
                 the collector create it",
                dir.display()
            );
        }
    }
}

/// The gid of `name` in the text of an `/etc/group` file (`name:password:gid:members`).
fn gid_in_group_file(table: &str, name: &str) -> Option<u32> {
    table.lines().find_map(|line| {
        let mut parts = line.split(':');
        (parts.next()? == name)
            .then(|| parts.nth(1)?.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_file_lookup_matches_whole_names_only() {
        let table =
            "root:x:0:\n# comment\ncollector:x:4242:alice,bob\ncollectors:x:4343:\nbad:x:nope:\n";
        assert_eq!(gid_in_group_file(table, "collector"), Some(4242));
        assert_eq!(gid_in_group_file(table, "collectors"), Some(4343));
        assert_eq!(gid_in_group_file(table, "collect"), None);
        assert_eq!(gid_in_group_file(table, "bad"), None);
    }

    #[test]
    fn numeric_groups_need_no_lookup_and_unknown_names_are_errors() {
        assert_eq!(
            SocketAccess::resolve(Some("4242")).unwrap(),
            SocketAccess { gid: Some(4242) }
        );
        assert_eq!(
            SocketAccess::resolve(None).unwrap(),
            SocketAccess { gid: None }
        );
        let err = SocketAccess::resolve(Some("no-such-group-here")).unwrap_err();
        assert!(matches!(err, ServerError::UnknownGroup { .. }), "{err}");
        assert!(err.to_string().contains("groupadd"), "{err}");
    }
}
