//! Attaching a domain's programs to their hooks (mounting tracefs when classic
//! tracepoints need it), detaching them, and re-attaching ones found without a link.

use std::collections::BTreeMap;

use aya::programs::{BtfTracePoint, ProgramError, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf};

use super::catalogue::{Hook, KernelDomain, ProgramSpec, Shared, OPTIONAL_PROGRAMS};
use super::config::SyscallHooks;
use super::error::{hint_for, LoadError};
use super::links::LinkCheck;
use super::loader::KernelPrograms;

/// The program that records each new thread's credentials (see `new_creds_epoch`).
const FORK_PROGRAM: &str = "sched_process_fork";

impl KernelPrograms {
    /// Verifies, loads and attaches every program of `domain`, choosing hooks by
    /// [`SyscallHooks`]. On failure the domain's programs that did attach are unloaded.
    pub fn attach(&self, domain: KernelDomain) -> Result<(), LoadError> {
        // A second attach would find its shared parts in and its other programs loaded;
        // refused before it touches anything, so the running domain keeps all of them.
        if self
            .attached
            .lock()
            .expect("attached lock poisoned")
            .contains_key(&domain)
        {
            return Err(LoadError::AlreadyAttached(domain));
        }
        // Without x86_64's `pt_regs` (another architecture) the programs that read
        // syscall arguments from the saved registers would decode garbage: they are
        // left out, and per-syscall tracepoints stand in where they can.
        let portable = self.config.syscall_hooks == SyscallHooks::Portable || !self.raw_syscalls;
        let preferred: Vec<&'static ProgramSpec> = if portable {
            tracing::warn!(
                ?domain,
                "syscall arguments cannot be read from saved registers here (not x86_64, \
                 or syscall_hooks = \"portable\"): per-syscall tracepoints stand in for the \
                 file and socket calls; calls through the 32-bit entry, cred changes and \
                 failed execs are not seen"
            );
            domain.portable_programs()
        } else if self.config.syscall_hooks == SyscallHooks::Tracepoints {
            if domain != KernelDomain::Process {
                tracing::warn!(
                    ?domain,
                    "syscall_hooks = \"tracepoints\": per-syscall tracepoints watch the file \
                     and socket calls; they cost every syscall more than the shared programs, \
                     and this domain's calls through the 32-bit entry are not seen"
                );
            }
            domain.tracepoint_programs()
        } else {
            domain.programs().iter().collect()
        };
        let needs_tracefs = preferred
            .iter()
            .any(|p| matches!(p.hook, Hook::Tracepoint(..)));
        let specs: Vec<&'static ProgramSpec> =
            match (self.config.syscall_hooks, domain.fallback_programs()) {
                (SyscallHooks::Raw, Some(raw)) if self.raw_syscalls => raw.iter().collect(),
                (SyscallHooks::Raw, Some(_)) => return Err(LoadError::NoRawSyscalls),
                (SyscallHooks::Auto, Some(raw)) if needs_tracefs => match ensure_tracefs() {
                    Ok(()) => preferred,
                    Err(e) if self.raw_syscalls => {
                        tracing::warn!(
                            "{:#}; using raw sys_enter/sys_exit tracepoints instead (costlier)",
                            anyhow::Error::from(e)
                        );
                        raw.iter().collect()
                    }
                    Err(e) => return Err(e),
                },
                _ => {
                    if needs_tracefs {
                        ensure_tracefs()?;
                    }
                    preferred
                }
            };
        let mut attached = Vec::new();
        for &spec in &specs {
            let result = if let Some(shared) = Shared::of(spec.name) {
                match self.join_shared(shared, domain) {
                    Ok(true) => Ok(()),
                    // Nothing this call did (no part there, or already in): not its
                    // to undo.
                    Ok(false) => continue,
                    Err(e) => Err(e),
                }
            } else {
                self.attach_one(spec)
            };
            match result {
                Ok(()) => attached.push(spec),
                Err(e) if OPTIONAL_PROGRAMS.contains(&spec.name) => {
                    tracing::warn!("{:#}; going on without it", anyhow::Error::from(e));
                }
                Err(e) => {
                    // In reverse: entry parts leave before the exits that take their
                    // stash.
                    for spec in attached.into_iter().rev() {
                        self.release(domain, spec.name);
                    }
                    return Err(e);
                }
            }
        }
        if attached.iter().any(|s| s.name == FORK_PROGRAM) {
            self.new_creds_epoch();
        }
        // Reattaches before now (of a program another domain shares, or from an earlier
        // run of this one) are not this attach's losses.
        for spec in &attached {
            self.saw_reattaches(domain, spec.name);
        }
        {
            // Released before `attached` is taken: `check_links` takes them the other
            // way round.
            let mut hooks = self.hooks.lock().expect("hooks lock poisoned");
            for spec in &attached {
                hooks.insert(spec.name.to_string(), spec.hook.describe());
            }
        }
        self.attached
            .lock()
            .expect("attached lock poisoned")
            .insert(domain, specs);
        Ok(())
    }

    /// Starts a new generation of the threads' known credentials: the fork hook just
    /// (re)attached, and a thread created while it was not may hold an id whose slot
    /// still has an earlier thread's credentials. Failing, it leaves them as they are
    /// (logged): a gap in the fork hook is rare, and the next attach tries again.
    fn new_creds_epoch(&self) {
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        let name = collector_common::abi::maps::TASK_CREDS_EPOCH;
        let result = ebpf
            .map_mut(name)
            .ok_or_else(|| anyhow::anyhow!("no map {name}"))
            .and_then(|map| Ok(aya::maps::Array::<_, u32>::try_from(map)?))
            .and_then(|mut epoch| {
                let next = epoch.get(&0, 0)?.wrapping_add(1);
                epoch.set(0, next, 0)?;
                Ok(())
            });
        if let Err(e) = result {
            tracing::warn!("threads' known credentials not renewed: {e:#}");
        }
    }

    /// Turns `domain`'s part of the shared syscall program `shared` on: loads the part
    /// and puts it in its slot, and attaches the shared program if this is the first
    /// domain to need it. One lock orders it all, so two domains starting at once
    /// attach the shared program once. `false`: the domain had its part in already, or
    /// has none there.
    fn join_shared(&self, shared: Shared, domain: KernelDomain) -> Result<bool, LoadError> {
        let (Some(slot), Some(part)) = (domain.shared_slot(shared), domain.shared_part(shared))
        else {
            // No part there (the catalogue never lists the program for such a
            // domain): nothing to join.
            return Ok(false);
        };
        let mut users = self
            .shared_users(shared)
            .lock()
            .expect("shared lock poisoned");
        if *users & 1 << slot != 0 {
            return Ok(false);
        }
        let loaded = {
            let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
            self.with_btf(|btf| load_part(&mut ebpf, shared, part, slot, btf))
        };
        if let Err(e) = loaded {
            self.unload_one(part);
            return Err(e);
        }
        if *users == 0 {
            if let Err(e) = self.attach_one(shared.spec()) {
                // Loaded but not attached: unloaded, or every later join would fail on
                // a program already loaded.
                self.unload_one(shared.spec().name);
                self.take_part_out(shared, domain);
                return Err(e);
            }
        }
        self.hooks.lock().expect("hooks lock poisoned").insert(
            part.to_string(),
            format!("tail call from {}", shared.spec().name),
        );
        *users |= 1 << slot;
        Ok(true)
    }

    /// The domains whose part of `shared` is in its slot (bit = 1 << slot).
    fn shared_users(&self, shared: Shared) -> &std::sync::Mutex<u32> {
        match shared {
            Shared::Enter => &self.sys_enter_users,
            Shared::Exit => &self.sys_exit_users,
        }
    }

    /// Loads and attaches one program, keeping its link.
    fn attach_one(&self, spec: &'static ProgramSpec) -> Result<(), LoadError> {
        let link = {
            let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
            self.with_btf(|btf| attach_program(&mut ebpf, spec, btf))?
        };
        self.links
            .lock()
            .expect("links lock poisoned")
            .insert(spec.name, link);
        Ok(())
    }

    /// Turns `domain`'s part of `shared` off, unloading the shared program when no
    /// domain needs it any more.
    fn leave_shared(&self, shared: Shared, domain: KernelDomain) {
        let Some(slot) = domain.shared_slot(shared) else {
            return;
        };
        let mut users = self
            .shared_users(shared)
            .lock()
            .expect("shared lock poisoned");
        let bit = 1 << slot;
        if *users & bit == 0 {
            return;
        }
        *users &= !bit;
        if *users == 0 {
            self.unload_one(shared.spec().name);
        }
        self.take_part_out(shared, domain);
    }

    /// Empties `domain`'s slot of `shared` and unloads its part.
    fn take_part_out(&self, shared: Shared, domain: KernelDomain) {
        let (Some(slot), Some(part)) = (domain.shared_slot(shared), domain.shared_part(shared))
        else {
            return;
        };
        let cleared = {
            let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
            parts_map(&mut ebpf, shared)
                .and_then(|mut parts| parts.clear_index(&slot).map_err(parts_update_error(shared)))
        };
        if let Err(e) = cleared {
            // Unloading the part below still leaves the slot's reference to it: the
            // part runs on, writing into a ring nobody reads (counted as lost).
            tracing::warn!(?domain, "{:#}", anyhow::Error::from(e));
        }
        self.unload_one(part);
    }

    /// Undoes one of `domain`'s programs: unloads it, or for a shared syscall program
    /// turns the domain's part off.
    fn release(&self, domain: KernelDomain, name: &str) {
        match Shared::of(name) {
            Some(shared) => self.leave_shared(shared, domain),
            None => self.unload_one(name),
        }
    }

    pub(super) fn unload_one(&self, name: &str) {
        // Unloading closes the link too (aya owns it).
        self.links.lock().expect("links lock poisoned").remove(name);
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        if let Some(program) = ebpf.program_mut(name) {
            let result = match program {
                aya::programs::Program::BtfTracePoint(p) => p.unload(),
                aya::programs::Program::TracePoint(p) => p.unload(),
                aya::programs::Program::RawTracePoint(p) => p.unload(),
                _ => Ok(()),
            };
            if let Err(e) = result {
                tracing::warn!(program = name, "unload failed: {e}");
            }
        }
        self.hooks.lock().expect("hooks lock poisoned").remove(name);
    }

    /// Detaches and unloads a domain's programs (a source's `stop`).
    pub fn detach(&self, domain: KernelDomain) {
        let specs = self
            .attached
            .lock()
            .expect("attached lock poisoned")
            .remove(&domain)
            .unwrap_or_default();
        // In reverse of the attach order (see the catalogue: exits before entries).
        for spec in specs.into_iter().rev() {
            self.release(domain, spec.name);
        }
    }

    /// The programs a domain got attached with (empty when not attached).
    pub fn attached_programs(&self, domain: KernelDomain) -> Vec<&'static str> {
        self.attached
            .lock()
            .expect("attached lock poisoned")
            .get(&domain)
            .map(|specs| specs.iter().map(|s| s.name).collect())
            .unwrap_or_default()
    }

    /// Looks for a link to each of `domain`'s attached programs in the kernel's list of
    /// links, and attaches again every program that has none (see `links`). Events its
    /// hook saw while it was detached are gone and cannot be counted.
    pub fn check_links(&self, domain: KernelDomain) -> Result<LinkCheck, LoadError> {
        // Held to the end: a `detach` (a source stopping) waits, so that a program it
        // unloads is never taken for one detached from outside and attached again.
        let attached = self.attached.lock().expect("attached lock poisoned");
        let specs: &[&'static ProgramSpec] = match attached.get(&domain) {
            Some(specs) => specs,
            None => return Ok(LinkCheck::default()),
        };
        let linked = super::links::linked_program_ids().map_err(LoadError::LinkList)?;
        let mut check = LinkCheck::default();
        let hooks = self.hooks();
        for spec in specs {
            // Optional programs that did not attach have no hook entry: nothing to check.
            if !hooks.contains_key(spec.name) {
                continue;
            }
            let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
            let id = super::links::program_id(&ebpf, spec.name);
            if id.is_some_and(|id| linked.contains(&id)) {
                continue;
            }
            let result = match id {
                Some(_) => {
                    super::links::attach_loaded(&mut ebpf, spec).map_err(|e| format!("{e:#}"))
                }
                None => self
                    .with_btf(|btf| Ok(super::links::load_and_attach(&mut ebpf, spec, btf)))
                    .map_err(|e| format!("{e:#}"))
                    .and_then(|r| r.map_err(|e| format!("{e:#}"))),
            };
            drop(ebpf);
            match result {
                Ok(link) => {
                    // The old link (if aya still holds one) stays with the program and
                    // goes when it is unloaded.
                    self.links
                        .lock()
                        .expect("links lock poisoned")
                        .insert(spec.name, link);
                    *self
                        .reattached
                        .lock()
                        .expect("reattached lock poisoned")
                        .entry(spec.name)
                        .or_default() += 1;
                    if spec.name == FORK_PROGRAM {
                        self.new_creds_epoch();
                    }
                }
                Err(e) => check.failed.push((spec.name, e)),
            }
        }
        // Reattached by this check, or by another domain's since this one last looked
        // (a program the domains share): each domain using it lost events.
        check.reattached = specs
            .iter()
            .map(|spec| spec.name)
            .filter(|&name| self.saw_reattaches(domain, name))
            .collect();
        if !check.reattached.is_empty() {
            // A reload parsed the kernel's BTF again: not kept for a rare next time.
            self.release_btf();
        }
        Ok(check)
    }

    /// Records that `domain` has seen every reattach of `program` so far; whether there
    /// were any it had not seen.
    fn saw_reattaches(&self, domain: KernelDomain, program: &'static str) -> bool {
        let count = self.reattach_count(program);
        let before = self
            .reattaches_seen
            .lock()
            .expect("reattach lock poisoned")
            .insert((domain, program), count)
            .unwrap_or(0);
        count > before
    }

    fn reattach_count(&self, program: &str) -> u64 {
        self.reattached
            .lock()
            .expect("reattached lock poisoned")
            .get(program)
            .copied()
            .unwrap_or(0)
    }

    /// Times each program was found detached and attached again.
    pub fn reattach_counts(&self) -> BTreeMap<&'static str, u64> {
        self.reattached
            .lock()
            .expect("reattached lock poisoned")
            .clone()
    }

    /// Closes one program's link and leaves the program loaded: what `BPF_LINK_DETACH`
    /// (`bpftool link detach`) does on link types that support it. Linux 6.18 refuses
    /// that for tracepoint links, so tests of [`KernelPrograms::check_links`] use this to
    /// make the same state. Returns whether the program had a link.
    #[doc(hidden)]
    pub fn close_link(&self, program: &str) -> Result<bool, LoadError> {
        let Some((name, link)) = self
            .links
            .lock()
            .expect("links lock poisoned")
            .remove_entry(program)
        else {
            return Ok(false);
        };
        let mut ebpf = self.ebpf.lock().expect("ebpf lock poisoned");
        super::links::close(&mut ebpf, name, link).map_err(|source| LoadError::Program {
            program: name.to_string(),
            hook: "its link".into(),
            hint: "",
            source: Box::new(source),
        })?;
        Ok(true)
    }

    /// The kernel's id of a loaded program (what `bpftool prog` and `bpftool link` show).
    pub fn program_id(&self, program: &str) -> Option<u32> {
        super::links::program_id(&self.ebpf.lock().expect("ebpf lock poisoned"), program)
    }
}

pub(super) fn attach_program(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    btf: &Btf,
) -> Result<super::links::AttachedLink, LoadError> {
    let wrap = |source: ProgramError| LoadError::Program {
        program: spec.name.to_string(),
        hook: spec.hook.describe(),
        hint: hint_for(&source),
        source: Box::new(source),
    };
    let program = ebpf
        .program_mut(spec.name)
        .ok_or(LoadError::Map("program missing from object"))?;
    match spec.hook {
        Hook::BtfTracepoint(function) => {
            let p: &mut BtfTracePoint = program.try_into().map_err(wrap)?;
            p.load(function, btf).map_err(wrap)?;
            Ok(super::links::AttachedLink::Btf(p.attach().map_err(wrap)?))
        }
        Hook::Tracepoint(category, name) => {
            let p: &mut TracePoint = program.try_into().map_err(wrap)?;
            p.load().map_err(wrap)?;
            Ok(super::links::AttachedLink::Tracepoint(
                p.attach(category, name).map_err(wrap)?,
            ))
        }
        Hook::RawTracepoint(name) => {
            let p: &mut RawTracePoint = program.try_into().map_err(wrap)?;
            p.load().map_err(wrap)?;
            Ok(super::links::AttachedLink::Raw(
                p.attach(name).map_err(wrap)?,
            ))
        }
    }
}

/// Loads the part program `name` (verified against the tracepoint of `shared`, like
/// the shared program that tail-calls it) and puts it in slot `slot` of its array.
fn load_part(
    ebpf: &mut Ebpf,
    shared: Shared,
    name: &'static str,
    slot: u32,
    btf: &Btf,
) -> Result<(), LoadError> {
    let wrap = |source: ProgramError| LoadError::Program {
        program: name.to_string(),
        hook: format!("tail call from {}", shared.spec().name),
        hint: hint_for(&source),
        source: Box::new(source),
    };
    let program = ebpf
        .program_mut(name)
        .ok_or(LoadError::Map("program missing from object"))?;
    let p: &mut BtfTracePoint = program.try_into().map_err(wrap)?;
    p.load(shared.tracepoint(), btf).map_err(wrap)?;
    let fd = p
        .fd()
        .map_err(wrap)?
        .try_clone()
        .map_err(|e| wrap(ProgramError::IOError(e)))?;
    parts_map(ebpf, shared)?
        .set(slot, &fd, 0)
        .map_err(parts_update_error(shared))
}

/// The array of the parts of `shared` (`SYS_ENTER_PARTS`, `SYS_EXIT_PARTS`).
fn parts_map(
    ebpf: &mut Ebpf,
    shared: Shared,
) -> Result<aya::maps::ProgramArray<&mut aya::maps::MapData>, LoadError> {
    let name = shared.parts_map();
    let map = ebpf.map_mut(name).ok_or(LoadError::Map(name))?;
    aya::maps::ProgramArray::try_from(map).map_err(|_| LoadError::Map(name))
}

fn parts_update_error(shared: Shared) -> impl Fn(aya::maps::MapError) -> LoadError {
    move |source| LoadError::MapUpdate {
        map: shared.parts_map(),
        source: Box::new(source),
    }
}

/// Classic tracepoints need tracefs; a fresh machine may not have it mounted.
pub(super) fn ensure_tracefs() -> Result<(), LoadError> {
    let dir = std::path::Path::new("/sys/kernel/tracing");
    if dir.join("events").exists()
        || std::path::Path::new("/sys/kernel/debug/tracing/events").exists()
    {
        return Ok(());
    }
    let target = std::ffi::CString::new("/sys/kernel/tracing").expect("no NUL");
    let fstype = std::ffi::CString::new("tracefs").expect("no NUL");
    let source = std::ffi::CString::new("nodev").expect("no NUL");
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Tracefs(std::io::Error::last_os_error()));
    }
    tracing::info!("mounted tracefs at /sys/kernel/tracing (classic tracepoints need it)");
    Ok(())
}
