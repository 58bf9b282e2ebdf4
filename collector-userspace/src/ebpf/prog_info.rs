//! Fields of `struct bpf_prog_info` that aya 0.14's `ProgramInfo` does not expose.

/// Byte offset of `recursion_misses` in `struct bpf_prog_info` (UAPI, Linux >= 5.12):
/// after `run_time_ns` (192) and `run_cnt` (200).
const RECURSION_MISSES_OFFSET: usize = 208;
/// Byte offset of `run_cnt`, read alongside to check the layout against aya's reading.
const RUN_CNT_OFFSET: usize = 200;
/// Bytes of `bpf_prog_info` asked for (the kernel fills what it knows, zeroes the rest).
const INFO_LEN: usize = 256;

/// `BPF_OBJ_GET_INFO_BY_FD` for a program fd; the raw info bytes.
fn prog_info(fd: i32) -> Option<[u8; INFO_LEN]> {
    #[repr(C)]
    struct InfoAttr {
        bpf_fd: u32,
        info_len: u32,
        info: u64,
    }
    let mut info = [0u8; INFO_LEN];
    let mut attr = InfoAttr {
        bpf_fd: fd as u32,
        info_len: INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
    // SAFETY: attr points at a valid, sized union prefix; info is INFO_LEN writable bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &mut attr as *mut InfoAttr,
            std::mem::size_of::<InfoAttr>() as u32,
        )
    };
    (rc == 0 && attr.info_len as usize > RECURSION_MISSES_OFFSET + 8).then_some(info)
}

fn u64_at(info: &[u8; INFO_LEN], offset: usize) -> u64 {
    u64::from_ne_bytes(info[offset..offset + 8].try_into().expect("8 bytes"))
}

/// `recursion_misses` of the program behind `fd`.
pub(crate) fn recursion_misses(fd: i32) -> Option<u64> {
    prog_info(fd).map(|info| u64_at(&info, RECURSION_MISSES_OFFSET))
}

/// `run_cnt` of the program behind `fd` (for checking the layout in tests).
pub(crate) fn run_count(fd: i32) -> Option<u64> {
    prog_info(fd).map(|info| u64_at(&info, RUN_CNT_OFFSET))
}
