//! Absolute paths from kernel objects, built in the kernel at the time of the call.
//!
//! Generic and domain-free: any program can turn a `struct path` (dentry + vfsmount), a
//! `struct file`, a descriptor, or the task's cwd into the absolute path the kernel would
//! print (like `d_path`), and optionally append a user-supplied component.
//!
//! How it works: a `bpf_loop` walks `dentry->d_parent` towards the root of the task's
//! mount namespace, crossing mounts through `struct mount` (`container_of` the `vfsmount`;
//! `mnt_parent`, `mnt_mountpoint`), and prepends each `d_name` at the END of the first
//! half of a per-CPU scratch buffer (`PATH_MAX` bytes), exactly as the kernel's
//! `prepend_path` does. The second half is room to append a user component after a
//! resolved directory. Nothing is zeroed: only the bytes of the path are written.
//!
//! API (stable; other domains copy this file as-is):
//! - `resolve_path(slot, path)`, `resolve_file(slot, file)`, `resolve_fd(slot, fd)`,
//!   `resolve_pwd(slot)`: walk, return a [`Resolved`] (pointer into the scratch, length,
//!   `PATH_FLAG_*`). `slot` < [`PATH_SLOTS`] picks an independent buffer, so two paths
//!   (rename, link) can be held at once.
//! - `append_user(slot, dir, user_ptr)`: `dir` + `/` + the user string (read now, from
//!   user memory); an absolute user string is taken alone. Flags `PATH_FLAG_USER`.
//!   `append_kernel` does the same with a string already in kernel memory.
//! - `entry_digest(slot, user_ptr, seed)` at a call's entry and `user_digest(slot, r,
//!   seed)` after the exit's `append_user`: equal unless the user buffer changed in
//!   between (then set `PATH_FLAG_CHANGED`).
//! - `copy_out(dst, r)`: copies `r.len` bytes (at most `PATH_MAX`) to `dst`, which must
//!   have `PATH_MAX` bytes of room. Returns the bytes copied.
//!
//! The path is NOT NUL-terminated; use `len`. Offsets come from BTF: the loader sets the
//! `OFF_PATHWALK_*` globals below (collector-userspace/src/ebpf/offsets.rs, `PATH_FIELDS`).
//!
//! Walks stop at the root of the task's mount namespace, not at the task's own root: a
//! chrooted process's paths are the namespace's, not the ones it sees (`walk_root`).
//!
//! What it cannot see: names of pseudo filesystems' files (pipes, sockets, anon inodes)
//! come out as `/` plus whatever `d_name` holds; a deleted file keeps its last name
//! (no " (deleted)" suffix); a file reached through a detached mount is printed from
//! that mount's root up.

use core::{ffi::c_void, mem::MaybeUninit, ptr::read_volatile};

use aya_ebpf::{
    helpers::generated::{
        bpf_get_current_task_btf, bpf_loop, bpf_probe_read_kernel, bpf_probe_read_kernel_str,
        bpf_probe_read_user_str,
    },
    macros::map,
    maps::PerCpuArray,
};

/// Longest path the kernel accepts (`PATH_MAX`, including the NUL it needs; we store
/// at most `PATH_MAX` bytes without one).
pub const PATH_MAX: u32 = 4096;
/// The path was longer than `PATH_MAX` (or deeper than the walk's bound): the bytes
/// kept are its END (the leaf-most part), like the kernel's `prepend` would keep.
pub const PATH_FLAG_TRUNCATED: u32 = 1;
/// A kernel object on the way could not be read: the path is partial (possibly empty).
pub const PATH_FLAG_UNREADABLE: u32 = 2;
/// The path (or its last part) is a user-supplied string, not resolved by the kernel:
/// it may hold `..`, symlinks, or name something other than what the call reached.
pub const PATH_FLAG_USER: u32 = 4;
/// The user string read at the call's entry differs from the one read at its exit
/// (`entry_digest` vs `user_digest`): another thread rewrote (or unmapped) the buffer.
pub const PATH_FLAG_CHANGED: u32 = 8;
/// The path is a descriptor's file, and another thread may have swapped the descriptor:
/// for the descriptor a call just returned (an open's new fd), its file was held more
/// than once or was gone when walked (`resolve_new_fd`); for a call that names its
/// file by a descriptor, the descriptor held another file at entry
/// (`resolve_fd_since`).
pub const PATH_FLAG_FD_RACED: u32 = 16;
/// Independent scratch buffers per CPU.
pub const PATH_SLOTS: u32 = 2;

/// Upper bound of `bpf_loop` iterations: one component (at least 2 bytes, "/x") or one
/// mount crossing each.
const MAX_STEPS: u32 = PATH_MAX;

macro_rules! walk_offsets {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {
        $(
            $(#[$doc])*
            #[unsafe(no_mangle)]
            static $name: u64 = 0;
        )*
        #[allow(non_snake_case)]
        mod off {
            $(
                #[inline(always)]
                pub fn $name() -> u64 {
                    unsafe { super::read_volatile(&super::$name) }
                }
            )*
        }
    };
}

walk_offsets! {
    /// `file.f_path`
    OFF_PATHWALK_FILE_F_PATH,
    /// `path.mnt`
    OFF_PATHWALK_PATH_MNT,
    /// `path.dentry`
    OFF_PATHWALK_PATH_DENTRY,
    /// `dentry.d_parent`
    OFF_PATHWALK_DENTRY_PARENT,
    /// `dentry.d_name.len`
    OFF_PATHWALK_DENTRY_NAME_LEN,
    /// `dentry.d_name.name`
    OFF_PATHWALK_DENTRY_NAME_NAME,
    /// `mount.mnt` (the embedded `vfsmount`)
    OFF_PATHWALK_MOUNT_MNT,
    /// `mount.mnt_parent`
    OFF_PATHWALK_MOUNT_PARENT,
    /// `mount.mnt_mountpoint`
    OFF_PATHWALK_MOUNT_MOUNTPOINT,
    /// `vfsmount.mnt_root`
    OFF_PATHWALK_VFSMOUNT_ROOT,
    /// `task_struct.fs`
    OFF_PATHWALK_TASK_FS,
    /// `fs_struct.root`
    OFF_PATHWALK_FS_ROOT,
    /// `fs_struct.pwd`
    OFF_PATHWALK_FS_PWD,
    /// `fs_struct.seq`'s sequence count (0: unknown on this kernel; `users` is at 0)
    OFF_PATHWALK_FS_SEQ,
    /// `task_struct.files`
    OFF_PATHWALK_TASK_FILES,
    /// `files_struct.fdt`
    OFF_PATHWALK_FILES_FDT,
    /// `fdtable.max_fds`
    OFF_PATHWALK_FDT_MAX_FDS,
    /// `fdtable.fd`
    OFF_PATHWALK_FDT_FD,
    /// `task_struct.nsproxy`
    OFF_PATHWALK_TASK_NSPROXY,
    /// `nsproxy.mnt_ns`
    OFF_PATHWALK_NSPROXY_MNT_NS,
    /// `mnt_namespace.root` (the namespace's root `struct mount`)
    OFF_PATHWALK_MNT_NS_ROOT,
    /// `file.f_ref` (6.13+) or `file.f_count`: the file's reference count
    OFF_PATHWALK_FILE_REF,
}

/// The raw value of `OFF_PATHWALK_FILE_REF` for a file held exactly once: 0 for a
/// `file_ref_t` (it counts from 0), 1 for an `atomic_long_t f_count`. `u64::MAX` when
/// the loader found neither field: the check is then not made.
#[unsafe(no_mangle)]
static PATHWALK_FILE_REF_ONE: u64 = u64::MAX;

/// Walk state and buffer, one per slot per CPU.
#[repr(C)]
pub struct PathScratch {
    dentry: u64,
    vfsmnt: u64,
    root_dentry: u64,
    root_mnt: u64,
    /// `vfsmnt->mnt_root`, read once per mount (not once per component).
    mnt_root: u64,
    /// The path occupies `buf[pos..PATH_MAX]`.
    pos: u32,
    flags: u32,
    /// Set when the walk reached the root (otherwise it ran out of steps).
    done: u32,
    _pad: u32,
    buf: [u8; 2 * PATH_MAX as usize],
    /// Room for the digest's last 8-byte load at the end of `buf` (never part of a path).
    _slack: [u8; 8],
}

#[map]
static PATH_SCRATCH: PerCpuArray<PathScratch> = PerCpuArray::with_max_entries(PATH_SLOTS, 0);

/// A path in a slot's scratch buffer (valid until that slot is used again on this CPU).
#[derive(Clone, Copy)]
pub struct Resolved {
    /// First byte (kernel memory; read it with `copy_out` / `bpf_probe_read_kernel`).
    pub ptr: *const u8,
    /// Bytes, at most `PATH_MAX` (a longer path is cut and flagged).
    pub len: u32,
    /// `PATH_FLAG_*`
    pub flags: u32,
    /// Bytes of the user (or kernel-copied) string `append_*` read into the slot's tail
    /// (0 otherwise): what `user_digest` hashes.
    pub user_len: u32,
}

impl Resolved {
    /// Nothing could be resolved.
    #[inline(always)]
    pub const fn unreadable() -> Self {
        Self {
            ptr: core::ptr::null(),
            len: 0,
            flags: PATH_FLAG_UNREADABLE,
            user_len: 0,
        }
    }

    /// No directory at all (a name that is not a path, a symlink target): `append_*`
    /// then reports the string alone.
    #[inline(always)]
    pub const fn none() -> Self {
        Self {
            ptr: core::ptr::null(),
            len: 0,
            flags: 0,
            user_len: 0,
        }
    }
}

#[inline(always)]
unsafe fn rd(base: u64, off: u64) -> Result<u64, ()> {
    let mut v = 0u64;
    let r = unsafe {
        bpf_probe_read_kernel(
            (&raw mut v).cast(),
            8,
            (base.wrapping_add(off)) as *const c_void,
        )
    };
    if r < 0 || base == 0 {
        Err(())
    } else {
        Ok(v)
    }
}

#[inline(always)]
unsafe fn rd_u32(base: u64, off: u64) -> Result<u32, ()> {
    let mut v = 0u32;
    let r = unsafe {
        bpf_probe_read_kernel(
            (&raw mut v).cast(),
            4,
            (base.wrapping_add(off)) as *const c_void,
        )
    };
    if r < 0 || base == 0 {
        Err(())
    } else {
        Ok(v)
    }
}

/// One step of the walk: prepend one name or cross one mount. 0 = go on, 1 = stop.
extern "C" fn walk_step(_index: u64, ctx: *mut c_void) -> i64 {
    let slot = unsafe { *(ctx as *const u32) };
    let Some(s) = PATH_SCRATCH.get_ptr_mut(slot) else {
        return 1;
    };
    unsafe { step(&mut *s) }
}

/// `dentry`'s parent, name length and name pointer. The kernel lays out `d_parent`
/// and `d_name` (`{ u32 hash; u32 len; const char *name }`) side by side: then one
/// 24-byte read instead of three (each probe read is a helper call, and this runs
/// once per path component).
#[inline(always)]
unsafe fn read_dentry(dentry: u64) -> Result<(u64, u32, u64), ()> {
    let parent_off = off::OFF_PATHWALK_DENTRY_PARENT();
    if off::OFF_PATHWALK_DENTRY_NAME_LEN() == parent_off + 12
        && off::OFF_PATHWALK_DENTRY_NAME_NAME() == parent_off + 16
    {
        // Uninitialised: a zeroed array costs a byte-wise `memset` subprogram call.
        let mut v = MaybeUninit::<[u64; 3]>::uninit();
        let r = unsafe {
            bpf_probe_read_kernel(
                v.as_mut_ptr().cast(),
                24,
                dentry.wrapping_add(parent_off) as *const c_void,
            )
        };
        if r < 0 || dentry == 0 {
            return Err(());
        }
        // Written by the helper (it zeroes the buffer on failure, handled above).
        let v = unsafe { v.assume_init() };
        // Little-endian: `len` is the high half of `hash_len`.
        return Ok((v[0], (v[1] >> 32) as u32, v[2]));
    }
    unsafe {
        Ok((
            rd(dentry, parent_off)?,
            rd_u32(dentry, off::OFF_PATHWALK_DENTRY_NAME_LEN())?,
            rd(dentry, off::OFF_PATHWALK_DENTRY_NAME_NAME())?,
        ))
    }
}

/// `mount->mnt_parent` and `mount->mnt_mountpoint` (adjacent in `struct mount`: one
/// read when they are).
#[inline(always)]
unsafe fn read_mount(mnt: u64) -> Result<(u64, u64), ()> {
    let parent_off = off::OFF_PATHWALK_MOUNT_PARENT();
    if off::OFF_PATHWALK_MOUNT_MOUNTPOINT() == parent_off + 8 {
        let mut v = MaybeUninit::<[u64; 2]>::uninit();
        let r = unsafe {
            bpf_probe_read_kernel(
                v.as_mut_ptr().cast(),
                16,
                mnt.wrapping_add(parent_off) as *const c_void,
            )
        };
        if r < 0 || mnt == 0 {
            return Err(());
        }
        let v = unsafe { v.assume_init() };
        return Ok((v[0], v[1]));
    }
    unsafe {
        Ok((
            rd(mnt, parent_off)?,
            rd(mnt, off::OFF_PATHWALK_MOUNT_MOUNTPOINT())?,
        ))
    }
}

#[inline(always)]
unsafe fn step(s: &mut PathScratch) -> i64 {
    let dentry = s.dentry;
    let vfsmnt = s.vfsmnt;
    if dentry == s.root_dentry && vfsmnt == s.root_mnt {
        s.done = 1;
        return 1;
    }
    let Ok((parent, len, name)) = (unsafe { read_dentry(dentry) }) else {
        s.flags |= PATH_FLAG_UNREADABLE;
        return 1;
    };
    let mnt_root = s.mnt_root;
    if dentry == mnt_root || dentry == parent {
        if dentry != mnt_root {
            // A disconnected tree (pseudo filesystem, or an unreachable dentry): the
            // kernel stops here too.
            s.done = 1;
            return 1;
        }
        let mnt = vfsmnt.wrapping_sub(off::OFF_PATHWALK_MOUNT_MNT());
        let Ok((mparent, mountpoint)) = (unsafe { read_mount(mnt) }) else {
            s.flags |= PATH_FLAG_UNREADABLE;
            return 1;
        };
        if mparent == mnt || mparent == 0 {
            // The namespace's root mount (or a detached one): the path is complete.
            s.done = 1;
            return 1;
        }
        let next = mparent.wrapping_add(off::OFF_PATHWALK_MOUNT_MNT());
        let Ok(next_root) = (unsafe { rd(next, off::OFF_PATHWALK_VFSMOUNT_ROOT()) }) else {
            s.flags |= PATH_FLAG_UNREADABLE;
            return 1;
        };
        s.dentry = mountpoint;
        s.vfsmnt = next;
        s.mnt_root = next_root;
        return 0;
    }
    let pos = s.pos;
    if len.saturating_add(1) > pos {
        // No room for "/name": keep the leaf-most part, like the kernel's prepend.
        s.flags |= PATH_FLAG_TRUNCATED;
        return 1;
    }
    let new_pos = pos - len;
    // Masks prove to the verifier that offset and size stay inside the buffer; both
    // are below PATH_MAX already, so they change nothing.
    let r = unsafe {
        bpf_probe_read_kernel(
            s.buf
                .as_mut_ptr()
                .add((new_pos & (PATH_MAX - 1)) as usize)
                .cast(),
            len & (PATH_MAX - 1),
            name as *const c_void,
        )
    };
    if r < 0 {
        s.flags |= PATH_FLAG_UNREADABLE;
        return 1;
    }
    let slash = (new_pos - 1) & (PATH_MAX - 1);
    s.buf[slash as usize] = b'/';
    s.pos = new_pos - 1;
    s.dentry = parent;
    0
}

#[inline(always)]
fn scratch(slot: u32) -> Option<*mut PathScratch> {
    PATH_SCRATCH.get_ptr_mut(slot)
}

/// A plain load of a `T` at `base + off`, where `base` is a BTF-typed kernel pointer
/// (the current task, or a pointer loaded from it the same way): the verifier checks it
/// against the type's BTF and makes it fault-safe, so no `bpf_probe_read_kernel` helper
/// call is needed. `read_volatile` keeps it one load of exactly `T` (a merged or widened
/// load would not match a field). A NULL `base` reads 0.
#[inline(always)]
unsafe fn load<T: Copy>(base: *const u8, off: u64) -> T {
    unsafe { read_volatile(base.wrapping_add(off as usize) as *const T) }
}

/// The current task as a BTF-typed pointer (`bpf_get_current_task_btf`, 5.11).
#[inline(always)]
fn task_btf() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// One of the current task's `fs->root` / `fs->pwd` (`which`) as (dentry, vfsmount):
/// typed loads, no helper call.
#[inline(always)]
unsafe fn task_fs_path(which: u64) -> Result<(u64, u64), ()> {
    unsafe {
        let fs: *const u8 = load(task_btf(), off::OFF_PATHWALK_TASK_FS());
        let p = which;
        let mnt: *const u8 = load(fs, p + off::OFF_PATHWALK_PATH_MNT());
        let dentry: *const u8 = load(fs, p + off::OFF_PATHWALK_PATH_DENTRY());
        if mnt.is_null() || dentry.is_null() {
            return Err(());
        }
        Ok((dentry as u64, mnt as u64))
    }
}

/// A `struct path { vfsmount *mnt; dentry *dentry; }` as (dentry, mnt): one read when
/// the two are adjacent, as they have always been.
#[inline(always)]
unsafe fn read_path_struct(p: u64) -> Result<(u64, u64), ()> {
    let (mnt_off, dentry_off) = (
        off::OFF_PATHWALK_PATH_MNT(),
        off::OFF_PATHWALK_PATH_DENTRY(),
    );
    if mnt_off == 0 && dentry_off == 8 {
        let mut v = MaybeUninit::<[u64; 2]>::uninit();
        let r = unsafe { bpf_probe_read_kernel(v.as_mut_ptr().cast(), 16, p as *const c_void) };
        if r < 0 || p == 0 {
            return Err(());
        }
        let v = unsafe { v.assume_init() };
        return Ok((v[1], v[0]));
    }
    unsafe { Ok((rd(p, dentry_off)?, rd(p, mnt_off)?)) }
}

#[inline(always)]
unsafe fn walk(slot: u32, dentry: u64, vfsmnt: u64) -> Resolved {
    let Some(s) = scratch(slot) else {
        return Resolved::unreadable();
    };
    let s = unsafe { &mut *s };
    s.dentry = dentry;
    s.vfsmnt = vfsmnt;
    s.pos = PATH_MAX;
    s.flags = 0;
    s.done = 0;
    if dentry == 0 || vfsmnt == 0 {
        return Resolved::unreadable();
    }
    match unsafe { rd(vfsmnt, off::OFF_PATHWALK_VFSMOUNT_ROOT()) } {
        Ok(root) => s.mnt_root = root,
        Err(()) => return Resolved::unreadable(),
    }
    match unsafe { walk_root() } {
        Ok((d, m)) => {
            s.root_dentry = d;
            s.root_mnt = m;
        }
        Err(()) => {
            // Without the root the walk goes up to the namespace root: still absolute.
            s.root_dentry = 0;
            s.root_mnt = 0;
        }
    }
    let mut ctx_slot: u32 = slot;
    unsafe {
        bpf_loop(
            MAX_STEPS,
            walk_step as *mut c_void,
            (&raw mut ctx_slot).cast(),
            0,
        );
    }
    if s.done == 0 && s.flags & (PATH_FLAG_UNREADABLE | PATH_FLAG_TRUNCATED) == 0 {
        // Ran out of steps before reaching the root.
        s.flags |= PATH_FLAG_TRUNCATED;
    }
    if s.pos == PATH_MAX {
        // The root itself.
        s.pos = PATH_MAX - 1;
        s.buf[(PATH_MAX - 1) as usize] = b'/';
    }
    let pos = s.pos & (PATH_MAX - 1);
    Resolved {
        ptr: unsafe { s.buf.as_ptr().add(pos as usize) },
        len: PATH_MAX - pos,
        flags: s.flags,
        user_len: 0,
    }
}

/// The root of the current task's mount namespace as (dentry, vfsmount): typed loads
/// (`task->nsproxy->mnt_ns->root`, then that mount's `mnt.mnt_root`).
#[inline(always)]
unsafe fn ns_root() -> Result<(u64, u64), ()> {
    unsafe {
        let nsproxy: *const u8 = load(task_btf(), off::OFF_PATHWALK_TASK_NSPROXY());
        let mnt_ns: *const u8 = load(nsproxy, off::OFF_PATHWALK_NSPROXY_MNT_NS());
        let root: *const u8 = load(mnt_ns, off::OFF_PATHWALK_MNT_NS_ROOT());
        let mnt_off = off::OFF_PATHWALK_MOUNT_MNT();
        let dentry: *const u8 = load(root, mnt_off + off::OFF_PATHWALK_VFSMOUNT_ROOT());
        if root.is_null() || dentry.is_null() {
            return Err(());
        }
        Ok((dentry as u64, root as u64 + mnt_off))
    }
}

/// Where every walk stops: the root of the task's mount namespace, not the task's own
/// root. In a chroot (which an unprivileged process can make inside a user namespace)
/// the kernel's `d_path` prints paths inside it: after `chroot("/etc")`, an open of
/// `/shadow` would read `/shadow`; walked up to the namespace's root it is
/// `/etc/shadow`. A container (`pivot_root` in its own mount namespace) is unchanged:
/// its root is its namespace's. A task without a namespace (exiting) stops at its own
/// root.
#[inline(always)]
unsafe fn walk_root() -> Result<(u64, u64), ()> {
    match unsafe { ns_root() } {
        Ok(root) => Ok(root),
        Err(()) => unsafe { task_fs_path(off::OFF_PATHWALK_FS_ROOT()) },
    }
}

/// Absolute path of a kernel `struct path *`.
#[inline(always)]
pub unsafe fn resolve_path(slot: u32, path: *const u8) -> Resolved {
    let Ok((dentry, mnt)) = (unsafe { read_path_struct(path as u64) }) else {
        return Resolved::unreadable();
    };
    unsafe { walk(slot, dentry, mnt) }
}

/// Absolute path of a kernel `struct file *` (its `f_path`).
#[inline(always)]
pub unsafe fn resolve_file(slot: u32, file: *const u8) -> Resolved {
    if file.is_null() {
        return Resolved::unreadable();
    }
    unsafe {
        resolve_path(
            slot,
            file.wrapping_add(off::OFF_PATHWALK_FILE_F_PATH() as usize),
        )
    }
}

/// The `struct file *` behind the current task's descriptor `fd`, if any.
#[inline(always)]
pub unsafe fn fd_file(fd: u64) -> Option<*const u8> {
    unsafe {
        // task -> files -> fdt are typed loads; `fdt->fd` is a `struct file **`, which
        // BTF does not type further, so the slot itself takes one helper read.
        let files: *const u8 = load(task_btf(), off::OFF_PATHWALK_TASK_FILES());
        let fdt: *const u8 = load(files, off::OFF_PATHWALK_FILES_FDT());
        let max_fds: u32 = load(fdt, off::OFF_PATHWALK_FDT_MAX_FDS());
        if fd >= max_fds as u64 {
            return None;
        }
        let array: u64 = load(fdt, off::OFF_PATHWALK_FDT_FD());
        let file = rd(array, fd.wrapping_mul(8)).ok()?;
        if file == 0 {
            None
        } else {
            Some(file as *const u8)
        }
    }
}

/// An identity of the directory a relative path string is looked up from, as it is now;
/// 0 when it cannot be read. For a descriptor, its file's dentry. For the cwd
/// (`at_cwd`), the cwd's dentry mixed with `fs->seq`, the count every chdir, fchdir and
/// chroot of the tasks sharing this `fs_struct` bumps: a cwd changed and changed back
/// within a call still differs.
#[inline(always)]
pub unsafe fn dir_key(at_cwd: bool, fd: u64) -> u64 {
    unsafe {
        if at_cwd {
            let fs: *const u8 = load(task_btf(), off::OFF_PATHWALK_TASK_FS());
            // A helper read, not a typed load: the verifier allows no arithmetic on a
            // typed pointer, and the key mixes the dentry's address with the count.
            let Ok(dentry) = rd(
                fs as u64,
                off::OFF_PATHWALK_FS_PWD() + off::OFF_PATHWALK_PATH_DENTRY(),
            ) else {
                return 0;
            };
            let seq_off = off::OFF_PATHWALK_FS_SEQ();
            let seq: u32 = if seq_off == 0 { 0 } else { load(fs, seq_off) };
            dentry ^ ((seq as u64) << 32)
        } else {
            match fd_file(fd) {
                Some(file) => rd(
                    file as u64,
                    off::OFF_PATHWALK_FILE_F_PATH() + off::OFF_PATHWALK_PATH_DENTRY(),
                )
                .unwrap_or(0),
                None => 0,
            }
        }
    }
}

/// Absolute path of the current task's descriptor `fd`.
#[inline(always)]
pub unsafe fn resolve_fd(slot: u32, fd: u64) -> Resolved {
    match unsafe { fd_file(fd) } {
        Some(file) => unsafe { resolve_file(slot, file) },
        None => Resolved::unreadable(),
    }
}

/// Absolute path of the descriptor `fd` that the current call has just returned (an
/// open's new fd), flagged `PATH_FLAG_FD_RACED` unless its file was held exactly once
/// and was still behind `fd` after the walk.
///
/// The walk cannot start from the file the call produced: no tracepoint inside the open
/// gives it, so the file is looked up by its descriptor at the exit. Between the
/// kernel's `fd_install` and that lookup another thread sharing the table can `dup2` a
/// file of its choice over the descriptor (after `dup`ing the opened one away to keep
/// it), and the record would name that file. A file just opened and installed is held
/// once, by the table; one put there by `dup2` is held at least twice (its source
/// descriptor too), and a duplicate taken of the new one makes two as well. The count
/// is read right after the descriptor, and the descriptor again after the walk: a swap
/// or close during the walk (the file could even be freed and reused) shows there.
/// Still not seen: a swap whose source descriptor was closed before the lookup (the
/// file is then held once), or a close and re-`dup2` of the same file exactly between
/// the first two reads.
#[inline(always)]
pub unsafe fn resolve_new_fd(slot: u32, fd: u64) -> Resolved {
    let Some(new) = (unsafe { NewFd::read(fd) }) else {
        // The call returned this descriptor: only another thread's close emptied it.
        let mut r = Resolved::unreadable();
        r.flags |= PATH_FLAG_FD_RACED;
        return r;
    };
    let mut r = unsafe { resolve_file(slot, new.file) };
    if unsafe { new.raced() } {
        r.flags |= PATH_FLAG_FD_RACED;
    }
    r
}

/// A descriptor the current call has just returned (an open's, an accept's), as first
/// read: its file, and whether that file was then held exactly once. Checked again
/// with [`NewFd::raced`] once the record is filled (see `resolve_new_fd`).
#[derive(Clone, Copy)]
pub struct NewFd {
    fd: u64,
    /// The file behind the descriptor when it was read.
    pub file: *const u8,
    once: bool,
}

impl NewFd {
    /// The file behind `fd`, with its reference count read right after; `None` when the
    /// descriptor holds none.
    #[inline(always)]
    pub unsafe fn read(fd: u64) -> Option<Self> {
        let file = unsafe { fd_file(fd) }?;
        Some(Self {
            fd,
            file,
            once: unsafe { held_once(file) },
        })
    }

    /// Whether another thread may have swapped the descriptor: its file was not held
    /// once when read, or is no longer behind it.
    #[inline(always)]
    pub unsafe fn raced(&self) -> bool {
        !self.once || unsafe { fd_file(self.fd) } != Some(self.file)
    }
}

/// Absolute path of the descriptor `fd`'s file, flagged `PATH_FLAG_FD_RACED` when that
/// file's dentry is not `entry_key` (the `dir_key` of the descriptor when the call
/// entered; 0 makes no claim). For calls that name their file by a descriptor: another
/// thread can `dup2` a file of its choice over it while the call runs, after the kernel
/// took the file it acts on. The file compared is the file walked (one lookup), and
/// the flag is set without a branch: `sys_exit_file` is close to the verifier's limit,
/// and a branch here doubled the states of everything after it.
#[inline(always)]
pub unsafe fn resolve_fd_since(slot: u32, fd: u64, entry_key: u64) -> Resolved {
    let Some(file) = (unsafe { fd_file(fd) }) else {
        // Closed since the entry (when a file was noted then): flagged too.
        let mut r = Resolved::unreadable();
        r.flags |= differs(entry_key, 0) * PATH_FLAG_FD_RACED;
        return r;
    };
    let mut now = 0u64;
    // A failed read leaves 0, which differs from any key taken (and flags).
    unsafe {
        bpf_probe_read_kernel(
            (&raw mut now).cast(),
            8,
            (file as u64)
                .wrapping_add(off::OFF_PATHWALK_FILE_F_PATH() + off::OFF_PATHWALK_PATH_DENTRY())
                as *const c_void,
        )
    };
    let mut r = unsafe { resolve_file(slot, file) };
    r.flags |= differs(entry_key, now) * PATH_FLAG_FD_RACED;
    r
}

/// 1 when `entry` is set (not 0) and differs from `now`, else 0, by arithmetic alone.
#[inline(always)]
fn differs(entry: u64, now: u64) -> u32 {
    let set = (entry | entry.wrapping_neg()) >> 63;
    let x = entry ^ now;
    let diff = (x | x.wrapping_neg()) >> 63;
    (set & diff) as u32
}

/// Whether `file`'s reference count says it is held exactly once (true when the count
/// cannot be read on this kernel: no claim either way).
#[inline(always)]
unsafe fn held_once(file: *const u8) -> bool {
    let one = unsafe { read_volatile(&PATHWALK_FILE_REF_ONE) };
    if one == u64::MAX {
        return true;
    }
    match unsafe { rd(file as u64, off::OFF_PATHWALK_FILE_REF()) } {
        Ok(count) => count == one,
        Err(()) => false,
    }
}

/// `dir` (a result of slot `from`'s last resolve, not yet appended to) copied into slot
/// `to` at the same place, so that `append_user(to, ..)` can extend it: one copy instead
/// of a second walk when two paths share a directory.
#[inline(always)]
pub unsafe fn copy_dir(from: u32, to: u32, dir: &Resolved) -> Resolved {
    let (Some(_), Some(t)) = (scratch(from), scratch(to)) else {
        return Resolved::unreadable();
    };
    if dir.ptr.is_null() || dir.len == 0 || dir.len > PATH_MAX {
        return *dir;
    }
    let t = unsafe { &mut *t };
    let pos = (PATH_MAX - dir.len) & (PATH_MAX - 1);
    let mut len = dir.len & (2 * PATH_MAX - 1);
    if len > PATH_MAX {
        len = PATH_MAX;
    }
    let dst = unsafe { t.buf.as_mut_ptr().add(pos as usize) };
    if unsafe { bpf_probe_read_kernel(dst.cast(), len, dir.ptr.cast()) } < 0 {
        return Resolved::unreadable();
    }
    Resolved {
        ptr: dst,
        len: dir.len,
        flags: dir.flags,
        user_len: 0,
    }
}

/// Absolute path of the current task's working directory.
#[inline(always)]
pub unsafe fn resolve_pwd(slot: u32) -> Resolved {
    match unsafe { task_fs_path(off::OFF_PATHWALK_FS_PWD()) } {
        Ok((dentry, mnt)) => unsafe { walk(slot, dentry, mnt) },
        Err(()) => Resolved::unreadable(),
    }
}

/// `len` bytes of kernel memory at `src` (a string, not a path: no directory, no NUL
/// needed) copied into the slot's tail, with `flags`: to keep a string whose source is
/// about to be overwritten.
#[inline(always)]
pub unsafe fn copy_string(slot: u32, src: *const u8, len: u32, flags: u32) -> Resolved {
    let Some(s) = scratch(slot) else {
        return Resolved::unreadable();
    };
    let s = unsafe { &mut *s };
    let tail = unsafe { s.buf.as_mut_ptr().add(PATH_MAX as usize + 1) };
    let len = if len > PATH_MAX - 1 {
        PATH_MAX - 1
    } else {
        len
    };
    if len > 0 && unsafe { bpf_probe_read_kernel(tail.cast(), len, src.cast()) } < 0 {
        return Resolved::unreadable();
    }
    Resolved {
        ptr: tail,
        len,
        flags,
        user_len: len,
    }
}

/// `dir` (a result of this slot's last resolve) + `/` + the user string at `user`,
/// read now. An absolute user string replaces `dir`. The result carries
/// `PATH_FLAG_USER` and `dir`'s flags; a user string that does not fit is flagged
/// truncated.
#[inline(always)]
pub unsafe fn append_user(slot: u32, dir: Resolved, user: *const u8) -> Resolved {
    unsafe { append_str(slot, dir, user, false) }
}

/// `append_user` for a string the kernel already copied (`struct filename.name`, as
/// io_uring holds it): exactly the bytes the kernel will use, no user-memory race.
#[inline(always)]
pub unsafe fn append_kernel(slot: u32, dir: Resolved, name: *const u8) -> Resolved {
    unsafe { append_str(slot, dir, name, true) }
}

/// Reads a string into the slot's tail (`buf[PATH_MAX + 1..]`); returns
/// `bpf_probe_read_*_str`'s result (bytes with the NUL, or a negative error).
#[inline(always)]
unsafe fn read_tail(s: &mut PathScratch, src: *const u8, kernel: bool) -> i64 {
    let tail = unsafe { s.buf.as_mut_ptr().add(PATH_MAX as usize + 1) };
    if kernel {
        (unsafe { bpf_probe_read_kernel_str(tail.cast(), PATH_MAX - 1, src.cast()) }) as i64
    } else {
        (unsafe { bpf_probe_read_user_str(tail.cast(), PATH_MAX - 1, src.cast()) }) as i64
    }
}

#[inline(always)]
unsafe fn append_str(slot: u32, dir: Resolved, src: *const u8, kernel: bool) -> Resolved {
    let Some(s) = scratch(slot) else {
        return Resolved::unreadable();
    };
    let s = unsafe { &mut *s };
    let tail = unsafe { s.buf.as_mut_ptr().add(PATH_MAX as usize + 1) };
    let n = unsafe { read_tail(s, src, kernel) };
    if n <= 0 {
        return Resolved {
            flags: dir.flags | PATH_FLAG_USER | PATH_FLAG_UNREADABLE,
            user_len: 0,
            ..dir
        };
    }
    // n counts the NUL; a string that filled the room may have been cut.
    let ulen = (n - 1) as u32;
    let mut flags = PATH_FLAG_USER;
    if n as u32 >= PATH_MAX - 1 {
        flags |= PATH_FLAG_TRUNCATED;
    }
    if s.buf[PATH_MAX as usize + 1] == b'/' {
        return Resolved {
            ptr: tail,
            len: ulen,
            flags,
            user_len: ulen,
        };
    }
    if dir.ptr.is_null() {
        // No directory: report the relative string alone, flagged.
        return Resolved {
            ptr: tail,
            len: ulen,
            flags: flags | dir.flags,
            user_len: ulen,
        };
    }
    s.buf[PATH_MAX as usize] = b'/';
    let (start, dlen) = if dir.len == 1 {
        // dir is "/": do not double the slash.
        (unsafe { s.buf.as_ptr().add(PATH_MAX as usize) }, 0)
    } else {
        (dir.ptr, dir.len)
    };
    let mut len = dlen + 1 + ulen;
    if len > PATH_MAX {
        // Keep the start; copy_out takes PATH_MAX bytes.
        len = PATH_MAX;
        flags |= PATH_FLAG_TRUNCATED;
    }
    Resolved {
        ptr: start,
        len,
        flags: flags | dir.flags,
        user_len: ulen,
    }
}

/// Digest state for `digest_step` (one slot's tail, 8 bytes per step).
#[repr(C)]
struct DigestCtx {
    slot: u32,
    len: u32,
    h: u64,
}

/// Words hashed inline before `bpf_loop` takes over (most paths are shorter: no
/// callback, no map lookup per word).
const DIGEST_INLINE_WORDS: u32 = 8;

/// Mixes word `at / 8` of the tail into `h` (`at` < `len`).
#[inline(always)]
fn mix(s: &PathScratch, at: u32, len: u32, h: u64) -> u64 {
    // Tail starts at PATH_MAX + 1; `at` < PATH_MAX - 1, so the 8-byte load ends inside
    // `buf` + `_slack`. The mask only restates that bound for the verifier.
    let off = (PATH_MAX + 1 + (at & (PATH_MAX - 1))) as usize;
    let mut w = unsafe { core::ptr::read_unaligned(s.buf.as_ptr().add(off) as *const u64) };
    let rest = len - at;
    if rest < 8 {
        // Bytes past the string are left over from earlier use: not part of it.
        w &= (1u64 << (rest * 8)) - 1;
    }
    let h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// One 8-byte word past the inline ones into the digest. 0 = go on, 1 = stop.
extern "C" fn digest_step(index: u64, ctx: *mut c_void) -> i64 {
    let c = unsafe { &mut *(ctx as *mut DigestCtx) };
    let Some(s) = PATH_SCRATCH.get_ptr_mut(c.slot) else {
        return 1;
    };
    let at = (index as u32 + DIGEST_INLINE_WORDS).wrapping_mul(8);
    if at >= c.len {
        return 1;
    }
    c.h = mix(unsafe { &*s }, at, c.len, c.h);
    0
}

/// Keyed digest of `len` bytes in the slot's tail (as `append_*`/`entry_digest` left
/// them). `seed` is drawn per call (`bpf_get_prandom_u32`), so a process cannot craft
/// two strings with equal digests ahead of time.
#[inline(always)]
unsafe fn tail_digest(slot: u32, len: u32, seed: u64) -> u64 {
    let len = if len > PATH_MAX - 1 {
        PATH_MAX - 1
    } else {
        len
    };
    let mut h = seed ^ (len as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let Some(s) = scratch(slot) else {
        return h;
    };
    let s = unsafe { &*s };
    for i in 0..DIGEST_INLINE_WORDS {
        let at = i * 8;
        if at >= len {
            return h;
        }
        h = mix(s, at, len, h);
    }
    let mut c = DigestCtx { slot, len, h };
    unsafe {
        bpf_loop(
            PATH_MAX / 8 - DIGEST_INLINE_WORDS,
            digest_step as *mut c_void,
            (&raw mut c).cast(),
            0,
        );
    }
    c.h
}

/// Reads the user string at `user` now (at the call's entry) and digests it; compare
/// with `user_digest` of the exit's `append_user` result to detect a rewritten buffer.
/// An unreadable string digests as empty.
#[inline(always)]
pub unsafe fn entry_digest(slot: u32, user: *const u8, seed: u64) -> u64 {
    let Some(s) = scratch(slot) else {
        return seed;
    };
    let n = unsafe { read_tail(&mut *s, user, false) };
    let len = if n <= 0 { 0 } else { (n - 1) as u32 };
    unsafe { tail_digest(slot, len, seed) }
}

/// Digest of the string the slot's last `append_user` read (`r` is its result).
#[inline(always)]
pub unsafe fn user_digest(slot: u32, r: &Resolved, seed: u64) -> u64 {
    unsafe { tail_digest(slot, r.user_len, seed) }
}

/// Copies the path to `dst` (room for `PATH_MAX` bytes). Returns the bytes copied.
#[inline(always)]
pub unsafe fn copy_out(dst: *mut u8, r: &Resolved) -> u32 {
    if r.ptr.is_null() || r.len == 0 {
        return 0;
    }
    // `& (2 * PATH_MAX - 1)` then min: the verifier sees a bound of PATH_MAX.
    let mut len = r.len & (2 * PATH_MAX - 1);
    if len > PATH_MAX {
        len = PATH_MAX;
    }
    if unsafe { bpf_probe_read_kernel(dst.cast(), len, r.ptr.cast()) } < 0 {
        return 0;
    }
    len
}
