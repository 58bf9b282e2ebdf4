//! Turns raw ring-buffer records into [`CollectionEvent`]s. Pure: tested without a kernel.

//!
//! One module per domain: [`process`], [`network`], [`filesystem`]; this file holds what
//! they share (the record reader and string helpers).

mod filesystem;
mod network;
mod process;

pub use filesystem::decode_filesystem;
pub use network::{decode_network, tcp_state_name};
pub use process::{decode_process, exec_file_version};

use std::cell::RefCell;
use std::thread::LocalKey;

use collector_common::RecordKind;
use collector_core::event::CompactString;

/// Why a record could not be decoded (counted as `decode_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Shorter than its kind's record.
    #[error("record of {got} bytes is shorter than {kind:?} ({need} bytes)")]
    Short {
        /// Kind from the header.
        kind: u32,
        /// Bytes received.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// Unknown kind value.
    #[error("unknown record kind {0}")]
    UnknownKind(u32),
}

pub(super) fn read<T: Copy>(bytes: &[u8], kind: u32) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::Short {
            kind,
            got: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked; T is a repr(C) record of integers and byte arrays (every bit
    // pattern valid); read_unaligned copes with any alignment of the ring buffer slot.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The record kind of a raw record.
pub fn record_kind(bytes: &[u8]) -> Result<RecordKind, DecodeError> {
    let kind = bytes
        .get(..4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DecodeError::Short {
            kind: 0,
            got: bytes.len(),
            need: 4,
        })?;
    RecordKind::from_u32(kind).ok_or(DecodeError::UnknownKind(kind))
}

/// NUL-terminated (or full) byte string -> String.
pub fn c_str(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    lossy_string(&bytes[..end])
}

/// A thread's last input and result of a pure function, reused for the same input: a
/// storm's records come from one task, so record after record carries the same name and
/// process key.
type Last<K, V> = RefCell<Option<(K, V)>>;

/// `make()`, the value for `key`, taken from `slot` when `key` is the one seen there
/// last. A slot busy (re-entered) or gone (the thread is exiting) is passed by.
fn reuse_last<K: PartialEq, V: Clone>(
    slot: &'static LocalKey<Last<K, V>>,
    key: K,
    make: impl Fn() -> V,
) -> V {
    slot.try_with(|cell| {
        let mut last = cell.try_borrow_mut().ok()?;
        Some(match &*last {
            Some((seen, value)) if *seen == key => value.clone(),
            _ => {
                let value = make();
                *last = Some((key, value.clone()));
                value
            }
        })
    })
    .ok()
    .flatten()
    .unwrap_or_else(make)
}

thread_local! {
    /// The `comm` bytes decoded last and their string.
    static LAST_COMM: Last<[u8; 16], CompactString> = const { RefCell::new(None) };
}

/// A task's `comm` (NUL-terminated, at most 16 bytes): held inline, no allocation.
pub fn comm(bytes: &[u8]) -> CompactString {
    match <[u8; 16]>::try_from(bytes) {
        Ok(raw) => reuse_last(&LAST_COMM, raw, || comm_uncached(bytes)),
        Err(_) => comm_uncached(bytes),
    }
}

fn comm_uncached(bytes: &[u8]) -> CompactString {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let bytes = &bytes[..end];
    match std::str::from_utf8(bytes) {
        Ok(valid) => CompactString::from(valid),
        Err(_) => CompactString::from_utf8_lossy(bytes),
    }
}

/// Bytes -> String with invalid UTF-8 replaced, as `String::from_utf8_lossy`. Nearly
/// every name and path is valid: it is checked once by `str::from_utf8` (which skips
/// ASCII a word at a time, unlike the lossy chunk iterator) and copied once; only
/// invalid input pays for the lossy pass.
pub fn lossy_string(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(valid) => valid.to_owned(),
        Err(_) => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// NUL-separated argument block -> arguments.
pub fn split_args(block: &[u8]) -> Vec<String> {
    let block = block.strip_suffix(&[0]).unwrap_or(block);
    if block.is_empty() {
        return Vec::new();
    }
    block
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Wait status -> exit code: `code` for a normal exit, `128 + signal` when killed.
pub fn exit_code_from_status(status: u32) -> i32 {
    let signal = status & 0x7f;
    if signal == 0 {
        ((status >> 8) & 0xff) as i32
    } else {
        128 + signal as i32
    }
}

/// Builders of raw records for the domain modules' tests.
#[cfg(test)]
pub(crate) mod test_util {
    use collector_common::{RecordHeader, RecordKind};

    pub(crate) fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: records are plain old data.
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    pub(crate) fn header(kind: RecordKind) -> RecordHeader {
        let mut comm = [0u8; 16];
        comm[..4].copy_from_slice(b"true");
        RecordHeader {
            kind: kind as u32,
            flags: 0,
            ktime_ns: 1_000,
            pid: 42,
            tid: 42,
            uid: 1000,
            gid: 100,
            cgroup_id: 7,
            process_start_ns: 5_000,
            comm,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::clock::BootClock;

    #[test]
    fn short_and_unknown_records_are_errors() {
        let r = test_util::header(RecordKind::Exec);
        assert!(matches!(
            process::decode_process(&test_util::bytes_of(&r), &BootClock::new(), &"t".into()),
            Err(DecodeError::Short { .. })
        ));
        assert_eq!(
            record_kind(&99u32.to_ne_bytes()),
            Err(DecodeError::UnknownKind(99))
        );
        assert!(record_kind(&[1, 0]).is_err());
    }

    #[test]
    fn lossy_string_is_from_utf8_lossy() {
        for bytes in [
            &b""[..],
            b"/etc/hostname",
            "/tmp/caf\u{e9}/\u{1f600}".as_bytes(),
            b"/tmp/\xff\xfe/x",
            b"\xc3",
            b"ok\xe2\x82",
        ] {
            assert_eq!(lossy_string(bytes), String::from_utf8_lossy(bytes));
        }
        assert_eq!(c_str(b"comm\0junk"), "comm");
        assert_eq!(c_str(b"\xffcomm\0"), "\u{fffd}comm");
        assert_eq!(comm(b"comm\0junk"), "comm");
        assert_eq!(comm(b"\xffcomm\0"), "\u{fffd}comm");
        assert_eq!(comm(b"0123456789abcdef"), "0123456789abcdef");
    }

    /// `comm` and the header's process key reuse the last result only for the same
    /// input: names and keys that alternate, repeat and differ in one byte or digit.
    #[test]
    fn memoised_names_and_keys_follow_their_input() {
        let names: [&[u8; 16]; 4] = [
            b"cat\0\0\0\0\0\0\0\0\0\0\0\0\0",
            b"cat\0junk\0\0\0\0\0\0\0\0",
            b"cau\0\0\0\0\0\0\0\0\0\0\0\0\0",
            b"\xffcomm\0\0\0\0\0\0\0\0\0\0\0",
        ];
        for i in [0, 0, 1, 2, 2, 0, 3, 3, 1] {
            assert_eq!(comm(names[i]), comm_uncached(names[i]));
        }
        let mut h = test_util::header(RecordKind::Open);
        for (pid, start) in [
            (7, 1000),
            (7, 1000),
            (7, 1001),
            (8, 1001),
            (7, 1000),
            (7, 0),
        ] {
            h.pid = pid;
            h.process_start_ns = start;
            let want = (start != 0).then(|| process::process_key(pid, start));
            assert_eq!(process::header_process_key(&h), want);
        }
    }

    #[test]
    fn split_args_handles_edges() {
        assert!(split_args(b"").is_empty());
        assert_eq!(split_args(b"a\0\0b\0"), ["a", "", "b"]);
        assert_eq!(split_args(b"cut-off"), ["cut-off"]);
    }
}
