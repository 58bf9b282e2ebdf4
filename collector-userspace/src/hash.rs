//! Hashing files without hurting the host: only regular files, opened without following
//! symlinks and without blocking (`O_NOFOLLOW | O_NONBLOCK`), checked with `fstat` on
//! the open descriptor (no TOCTOU between the check and the read), a size cap, and a
//! deadline checked inside the read loop so the work really stops.
//!
//! [`ExecutableHasher`] adds a cache keyed by (device, inode, size, mtime, ctime): a
//! binary is hashed once until it changes.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Hash algorithms the collector computes. SHA-256 only: it is what threat-intel feeds
/// and `expected_sha256` use; a second algorithm would double the I/O for no match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HashAlgorithm {
    /// SHA-256, lower-case hex.
    #[default]
    Sha256,
}

impl HashAlgorithm {
    /// The name used in events (`hash_algorithm`) and task answers.
    pub fn name(&self) -> &'static str {
        match self {
            HashAlgorithm::Sha256 => "sha256",
        }
    }
}

/// Bounds of one hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashLimits {
    /// Files larger than this are refused (before reading and while reading).
    pub max_bytes: u64,
    /// Reading stops with an error once this much time has passed.
    pub max_time: Duration,
}

impl Default for HashLimits {
    fn default() -> Self {
        Self {
            max_bytes: 512 * 1024 * 1024,
            max_time: Duration::from_secs(20),
        }
    }
}

/// Why a file was not hashed.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    /// open(2) failed (missing, a symlink with `O_NOFOLLOW`, permission denied...).
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What open(2) said.
        #[source]
        source: std::io::Error,
    },
    /// fstat or read failed.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not (or no longer) the version that was executed.
    #[error("{path} changed since it was executed; its digest would not be of the executed file")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// Not a regular file (FIFO, device, directory, socket).
    #[error("{path} is not a regular file ({kind}); only regular files are hashed")]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// Larger than the size cap.
    #[error("{path} is {size} bytes, over the {max} byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size (or how much was read before giving up).
        size: u64,
        /// The cap.
        max: u64,
    },
    /// The deadline passed while reading.
    #[error("hashing {path} took longer than {max:?}; stopped after {read} bytes")]
    Deadline {
        /// The file.
        path: PathBuf,
        /// Bytes read before stopping.
        read: u64,
        /// The deadline.
        max: Duration,
    },
}

/// What a file is, from its mode bits.
pub fn file_kind(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFREG => "file",
        libc::S_IFDIR => "dir",
        libc::S_IFLNK => "symlink",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        libc::S_IFBLK => "block",
        libc::S_IFCHR => "char",
        _ => "unknown",
    }
}

/// Opens `path` read-only without blocking (a FIFO with no writer or a device that
/// waits does not hang the open) and, unless `follow`, without following a final
/// symlink. `follow` is for `/proc/<pid>/exe`, a magic link to the process's image.
pub fn open_nonblocking(path: &Path, follow: bool) -> Result<File, HashError> {
    let mut flags = libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY;
    if !follow {
        flags |= libc::O_NOFOLLOW;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|source| HashError::Open {
            path: path.to_owned(),
            source,
        })
}

/// A finished hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHash {
    /// Lower-case hex digest.
    pub hex_digest: String,
    /// Bytes hashed.
    pub size_bytes: u64,
    /// The algorithm.
    pub algorithm: HashAlgorithm,
}

/// Hashes an open file: refuses anything but a regular file (checked on the descriptor),
/// refuses files over the size cap, and stops at the deadline or when more bytes than
/// the cap arrive (a file growing while read).
pub fn hash_open_file(
    file: &mut File,
    path: &Path,
    limits: HashLimits,
) -> Result<FileHash, HashError> {
    let read_err = |source| HashError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = file.metadata().map_err(read_err)?;
    if meta.mode() & libc::S_IFMT != libc::S_IFREG {
        return Err(HashError::NotRegular {
            path: path.to_owned(),
            kind: file_kind(meta.mode()),
        });
    }
    let too_large = |size| HashError::TooLarge {
        path: path.to_owned(),
        size,
        max: limits.max_bytes,
    };
    if meta.size() > limits.max_bytes {
        return Err(too_large(meta.size()));
    }
    let started = Instant::now();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = 0u64;
    loop {
        if started.elapsed() > limits.max_time {
            return Err(HashError::Deadline {
                path: path.to_owned(),
                read,
                max: limits.max_time,
            });
        }
        let n = match file.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_err(e)),
        };
        if n == 0 {
            break;
        }
        read += n as u64;
        if read > limits.max_bytes {
            return Err(too_large(read));
        }
        hasher.update(&buf[..n]);
    }
    Ok(FileHash {
        hex_digest: format!("{:x}", hasher.finalize()),
        size_bytes: read,
        algorithm: HashAlgorithm::Sha256,
    })
}

/// What identifies one version of a file: a rewrite changes size, mtime or ctime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileKey {
    /// The version of the file described by `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128,
            ctime_ns: meta.ctime() as i128 * 1_000_000_000 + meta.ctime_nsec() as i128,
        }
    }
}

impl FileKey {
    /// The version the kernel read at an exec: the inode's device (the kernel's
    /// `MKDEV(major, minor)`, which differs from `st_dev` and is only compared with
    /// itself), number, size, and the split time fields.
    pub fn from_kernel(
        dev: u32,
        ino: u64,
        size: u64,
        (mtime_sec, mtime_nsec): (i64, u32),
        (ctime_sec, ctime_nsec): (i64, u32),
    ) -> Self {
        Self {
            dev: u64::from(dev) | KERNEL_DEV,
            ino,
            size,
            mtime_ns: mtime_sec as i128 * 1_000_000_000 + mtime_nsec as i128,
            ctime_ns: ctime_sec as i128 * 1_000_000_000 + (ctime_nsec & KERNEL_NSEC_MASK) as i128,
        }
    }

    /// Whether `self` and `other` are the same version of the same file, whatever
    /// encoding of the device each carries (inode, size, mtime and ctime agree; a user
    /// can reset mtime but not ctime).
    pub fn same_version(&self, other: &FileKey) -> bool {
        self.ino == other.ino
            && self.size == other.size
            && self.mtime_ns == other.mtime_ns
            && self.ctime_ns == other.ctime_ns
    }
}

/// The nanoseconds of the kernel's `i_ctime_nsec`: its top bit is a flag of multigrain
/// timestamps (`I_CTIME_QUERIED`, 6.13+), not part of the time.
const KERNEL_NSEC_MASK: u32 = (1 << 30) - 1;

/// Marks a [`FileKey`] device in the kernel's encoding, so it never equals an `st_dev`.
const KERNEL_DEV: u64 = 1 << 63;

/// Cache counters of an [`ExecutableHasher`].
#[derive(Debug, Default)]
pub struct HashStats {
    /// Answers from the cache.
    pub hits: AtomicU64,
    /// Files read and hashed.
    pub misses: AtomicU64,
    /// Files that could not be hashed.
    pub failures: AtomicU64,
}

/// Hashes executables with a cache keyed by [`FileKey`].
#[derive(Debug)]
pub struct ExecutableHasher {
    limits: HashLimits,
    max_entries: usize,
    cache: Mutex<HashMap<FileKey, FileHash>>,
    stats: HashStats,
}

impl ExecutableHasher {
    /// A hasher keeping at most `max_entries` digests (the cache is cleared when full:
    /// simple, and a host runs far fewer distinct binaries than that).
    pub fn new(limits: HashLimits, max_entries: usize) -> Self {
        Self {
            limits,
            max_entries: max_entries.max(1),
            cache: Mutex::default(),
            stats: HashStats::default(),
        }
    }

    /// Counters.
    pub fn stats(&self) -> &HashStats {
        &self.stats
    }

    /// The executable image of `pid`, read through `/proc/<pid>/exe` (which still works
    /// when the file was replaced or deleted on disk).
    pub fn hash_pid(&self, pid: u32) -> Result<FileHash, HashError> {
        self.hash_path(Path::new(&format!("/proc/{pid}/exe")), true)
    }

    /// The digest of `key`'s version, if it was hashed (counted as a hit).
    pub fn cached(&self, key: &FileKey) -> Option<FileHash> {
        let hit = self.cache.lock().expect("hash cache").get(key).cloned();
        if hit.is_some() {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
        }
        hit
    }

    /// Hashes the file at `path` only if it is still the version `expect` (what the
    /// kernel saw at an exec): the digest is then also cached under `expect`. A file
    /// changed or replaced since is refused ([`HashError::Changed`]), never reported as
    /// the executed one.
    pub fn hash_version(
        &self,
        path: &Path,
        follow: bool,
        expect: &FileKey,
    ) -> Result<FileHash, HashError> {
        let result = self.hash_checked(path, follow, Some(expect));
        if result.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        let hash = result?;
        self.insert(*expect, hash.clone());
        Ok(hash)
    }

    fn insert(&self, key: FileKey, hash: FileHash) {
        let mut cache = self.cache.lock().expect("hash cache");
        if cache.len() >= self.max_entries {
            cache.clear();
        }
        cache.insert(key, hash);
    }

    /// Hashes `path` (a cache hit when the same version was hashed before).
    pub fn hash_path(&self, path: &Path, follow: bool) -> Result<FileHash, HashError> {
        let result = self.hash_uncounted(path, follow);
        if result.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn hash_uncounted(&self, path: &Path, follow: bool) -> Result<FileHash, HashError> {
        self.hash_checked(path, follow, None)
    }

    fn hash_checked(
        &self,
        path: &Path,
        follow: bool,
        expect: Option<&FileKey>,
    ) -> Result<FileHash, HashError> {
        let mut file = open_nonblocking(path, follow)?;
        let meta = file.metadata().map_err(|source| HashError::Read {
            path: path.to_owned(),
            source,
        })?;
        let key = FileKey::of(&meta);
        if expect.is_some_and(|e| !e.same_version(&key)) {
            return Err(HashError::Changed {
                path: path.to_owned(),
            });
        }
        if let Some(hit) = self.cached(&key) {
            return Ok(hit);
        }
        let hash = hash_open_file(&mut file, path, self.limits)?;
        // The digest is of what was read: a rewrite while reading changes ctime.
        let after = file.metadata().map(|m| FileKey::of(&m));
        if after.as_ref().is_ok_and(|a| *a != key) {
            return Err(HashError::Changed {
                path: path.to_owned(),
            });
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        self.insert(key, hash.clone());
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hashes_a_regular_file_once_and_again_after_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bin");
        std::fs::write(&path, b"abc").unwrap();
        let hasher = ExecutableHasher::new(HashLimits::default(), 16);
        let h = hasher.hash_path(&path, false).unwrap();
        // SHA-256("abc"), FIPS 180-2 test vector.
        assert_eq!(
            h.hex_digest,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.size_bytes, 3);
        assert_eq!(hasher.hash_path(&path, false).unwrap(), h);
        assert_eq!(hasher.stats().misses.load(Ordering::Relaxed), 1);
        assert_eq!(hasher.stats().hits.load(Ordering::Relaxed), 1);
        // A rewrite changes the key (size here), so the new content is hashed.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"d").unwrap();
        drop(f);
        let h2 = hasher.hash_path(&path, false).unwrap();
        assert_eq!(
            h2.hex_digest,
            "88d4266fd4e6338d13b845fcf289579d209c897823b9217da3e161936f031589"
        );
        assert_eq!(hasher.stats().misses.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_kernel_version_matches_the_stat_of_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        let stat = FileKey::of(&meta);
        // The kernel's ctime nanoseconds may carry the multigrain "queried" flag.
        let kernel = FileKey::from_kernel(
            42,
            meta.ino(),
            meta.size(),
            (meta.mtime(), meta.mtime_nsec() as u32),
            (meta.ctime(), meta.ctime_nsec() as u32 | 1 << 31),
        );
        assert!(kernel.same_version(&stat));
        assert_ne!(kernel, stat, "the device encodings are never mixed up");
        let other = FileKey::from_kernel(
            42,
            meta.ino(),
            meta.size(),
            (meta.mtime(), meta.mtime_nsec() as u32),
            (meta.ctime() + 1, meta.ctime_nsec() as u32),
        );
        assert!(!other.same_version(&stat));
    }

    #[test]
    fn refuses_fifos_devices_symlinks_and_large_files() {
        let dir = tempfile::tempdir().unwrap();
        let hasher = ExecutableHasher::new(
            HashLimits {
                max_bytes: 1024,
                max_time: Duration::from_secs(5),
            },
            16,
        );
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let started = Instant::now();
        assert!(matches!(
            hasher.hash_path(&fifo, false),
            Err(HashError::NotRegular { kind: "fifo", .. })
        ));
        assert!(matches!(
            hasher.hash_path(Path::new("/dev/zero"), false),
            Err(HashError::NotRegular { kind: "char", .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(2));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/etc/hostname", &link).unwrap();
        assert!(matches!(
            hasher.hash_path(&link, false),
            Err(HashError::Open { .. })
        ));
        let big = dir.path().join("big");
        let f = File::create(&big).unwrap();
        f.set_len(10 * 1024 * 1024 * 1024).unwrap();
        assert!(matches!(
            hasher.hash_path(&big, false),
            Err(HashError::TooLarge { .. })
        ));
        assert_eq!(hasher.stats().failures.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn the_deadline_stops_the_read_loop() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("sparse");
        File::create(&big)
            .unwrap()
            .set_len(4 * 1024 * 1024 * 1024)
            .unwrap();
        let mut file = open_nonblocking(&big, false).unwrap();
        let started = Instant::now();
        let r = hash_open_file(
            &mut file,
            &big,
            HashLimits {
                max_bytes: u64::MAX,
                max_time: Duration::from_millis(100),
            },
        );
        assert!(matches!(r, Err(HashError::Deadline { .. })), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
