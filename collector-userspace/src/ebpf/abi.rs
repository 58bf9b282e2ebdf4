//! The kernel/userspace ABI, checked against the built kernel object: every map, global
//! and program the loader names exists in it, and every program in it is attached by
//! some domain. The names are defined once (`collector_common::abi`, the offset tables,
//! the program catalogue); this catches a rename on one side only.

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use collector_common::abi;
    use object::{Object, ObjectSection, ObjectSymbol};

    use crate::ebpf::KernelDomain;

    static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/collector-ebpf.o"));

    /// (symbol, section) of every named symbol in the object.
    fn symbols() -> Vec<(String, String)> {
        assert!(
            !OBJECT.is_empty(),
            "the kernel object was not built (run `cargo xtask build-ebpf`)"
        );
        let file = object::File::parse(OBJECT).expect("the kernel object parses as ELF");
        file.symbols()
            .filter_map(|s| {
                let name = s.name().ok()?.to_owned();
                let section = s
                    .section_index()
                    .and_then(|i| file.section_by_index(i).ok())
                    .and_then(|sec| sec.name().ok().map(str::to_owned))
                    .unwrap_or_default();
                (!name.is_empty()).then_some((name, section))
            })
            .collect()
    }

    fn names() -> BTreeSet<String> {
        symbols().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn every_map_global_and_program_the_loader_names_is_in_the_kernel_object() {
        let have = names();
        let missing: Vec<&str> = abi::maps::ALL
            .iter()
            .chain(abi::globals::ALL)
            .copied()
            .chain(crate::ebpf::offsets::global_names())
            .chain(
                KernelDomain::ALL
                    .into_iter()
                    .flat_map(|d| d.program_names()),
            )
            .chain(["proc_resolve_self"])
            .filter(|n| !have.contains(*n))
            .collect();
        assert!(missing.is_empty(), "not in the kernel object: {missing:?}");
    }

    #[test]
    fn every_program_in_the_kernel_object_is_attached_by_some_domain() {
        let known: BTreeSet<&str> = KernelDomain::ALL
            .into_iter()
            .flat_map(|d| d.program_names())
            // Run once at load to learn the collector's host tgid, then detached.
            .chain(["proc_resolve_self"])
            .collect();
        let programs: Vec<(String, String)> = symbols()
            .into_iter()
            .filter(|(_, section)| {
                ["tracepoint/", "tp_btf/", "raw_tp/", "raw_tracepoint/"]
                    .iter()
                    .any(|p| section.starts_with(p))
            })
            .collect();
        assert!(programs.len() > 20, "programs found: {programs:?}");
        let orphans: Vec<&(String, String)> = programs
            .iter()
            .filter(|(name, _)| !known.contains(name.as_str()))
            .collect();
        assert!(
            orphans.is_empty(),
            "programs in the object that no domain attaches: {orphans:?}"
        );
    }

    #[test]
    fn the_kernel_constants_are_the_kernels() {
        // Spot checks against the values Linux has had since these were introduced.
        assert_eq!(abi::AT_FDCWD, -100);
        assert_eq!((abi::AF_UNIX, abi::AF_INET, abi::AF_INET6), (1, 2, 10));
        assert_eq!(abi::tcp_state::name(abi::tcp_state::CLOSE), Some("CLOSE"));
        assert_eq!(abi::tcp_state::name(13), None);
        let names: Vec<_> = (1..=12).filter_map(abi::tcp_state::name).collect();
        assert_eq!(names.len(), 12);
    }
}
