//! The protobuf wire format of event batches, written from and read into
//! [`CollectionEvent`](crate::event::CollectionEvent)s directly.
//!
//! Streaming is the one hot path of the IPC layer: every event goes through it once per
//! subscriber. Going through the prost messages of `collector-proto` costs an owned copy
//! of every string on the way out and a second message tree on the way in, so this module
//! speaks the same schema (`collector.v1.Envelope { event_batch = 9 }`) by hand:
//!
//! - [`encode`]: an `EventBatch` envelope from borrowed events, byte for byte what prost
//!   writes for the equivalent messages (property-tested against it).
//! - [`decode`]: an `EventBatch` envelope straight into events, for input laid out the way
//!   protobuf encoders write it (fields in ascending order, each message once). Anything
//!   else (unknown fields, merged duplicates, invalid values) makes it step aside, and the
//!   caller decodes with prost, whose answer is the reference.
//!
//! Everything else on the socket (negotiation, status, tasks) is rare and stays on prost.

pub mod decode;
pub mod encode;

pub use decode::{decode_event_batch, SourceNames};
pub use encode::{encode_event, encode_event_batch, BatchEntries, EventBatchFrame};

/// Protobuf wire types used by the schema.
mod wire_type {
    pub const VARINT: u8 = 0;
    pub const FIXED64: u8 = 1;
    pub const LEN: u8 = 2;
}

/// Field numbers, as in `proto/collector.proto`.
mod field {
    pub mod envelope {
        pub const REQUEST_ID: u32 = 1;
        pub const EVENT_BATCH: u32 = 9;
    }
    pub mod event_batch {
        pub const EVENTS: u32 = 1;
    }
    pub mod event {
        pub const PROCESS: u32 = 1;
        pub const NETWORK: u32 = 2;
        pub const FILESYSTEM: u32 = 3;
        pub const PERFORMANCE: u32 = 4;
    }
    pub mod timestamp {
        pub const SECONDS: u32 = 1;
        pub const NANOS: u32 = 2;
    }
    pub mod socket_address {
        pub const IP: u32 = 1;
        pub const PORT: u32 = 2;
        pub const FLOW_INFO: u32 = 3;
        pub const SCOPE_ID: u32 = 4;
    }
    /// Fields 1-4 are the same in every event message.
    pub mod common {
        pub const KIND: u32 = 1;
        pub const TIMESTAMP: u32 = 2;
        pub const PID: u32 = 3;
        pub const SOURCE: u32 = 4;
    }
    pub mod process {
        pub const PPID: u32 = 5;
        pub const UID: u32 = 6;
        pub const GID: u32 = 7;
        pub const NAME: u32 = 8;
        pub const EXECUTABLE_PATH: u32 = 9;
        pub const COMMAND_LINE: u32 = 10;
        pub const COMMAND_LINE_TRUNCATED: u32 = 11;
        pub const START_TIME: u32 = 12;
        pub const EXIT_CODE: u32 = 13;
        pub const CGROUP_ID: u32 = 14;
        pub const EXECUTABLE_HASH: u32 = 15;
        pub const HASH_ALGORITHM: u32 = 16;
        pub const CHILD_PID: u32 = 17;
        pub const CREDENTIALS: u32 = 18;
        pub const OLD_CREDENTIALS: u32 = 19;
        pub const SECURE_EXEC: u32 = 20;
        pub const ERRNO: u32 = 21;
        pub const SYSCALL_NR: u32 = 22;
        pub const COMPAT_SYSCALL: u32 = 23;
        pub const PROCESS_KEY: u32 = 24;
        pub const CHILD_START_TIME: u32 = 25;
        pub const EXECUTABLE_INODE: u32 = 26;
        pub const EXECUTABLE_DEVICE: u32 = 27;
        pub const EXECUTABLE_DELETED: u32 = 28;
        pub const MEMFD_NAME: u32 = 29;
        pub const INTERPRETER: u32 = 30;
        pub const NAMESPACE_PID: u32 = 31;
        pub const PID_NAMESPACE_INODE: u32 = 32;
        pub const CGROUP_PATH: u32 = 33;
        pub const CWD: u32 = 40;
        pub const EXECUTABLE_PATH_USER_SUPPLIED: u32 = 41;
        pub const EXECUTABLE_PATH_TRUNCATED: u32 = 42;
    }
    pub mod credentials {
        pub const UID: u32 = 1;
        pub const EUID: u32 = 2;
        pub const SUID: u32 = 3;
        pub const FSUID: u32 = 4;
        pub const GID: u32 = 5;
        pub const EGID: u32 = 6;
        pub const SGID: u32 = 7;
        pub const FSGID: u32 = 8;
        pub const CAP_EFFECTIVE: u32 = 9;
        pub const CAP_PERMITTED: u32 = 10;
        pub const LOGINUID: u32 = 11;
        pub const SESSIONID: u32 = 12;
    }
    pub mod network {
        pub const PROTOCOL: u32 = 5;
        pub const FAMILY: u32 = 6;
        pub const SOURCE_ADDR: u32 = 7;
        pub const DEST_ADDR: u32 = 8;
        pub const STATE: u32 = 9;
        pub const CONNECTION_ID: u32 = 10;
        pub const UID: u32 = 11;
        pub const NAME: u32 = 12;
        pub const ERRNO: u32 = 13;
        pub const PREVIOUS_STATE: u32 = 14;
        pub const SOCKET_ERROR: u32 = 15;
        pub const UNIX_PATH: u32 = 16;
        pub const SEND_COUNT: u32 = 17;
        pub const COUNT_UPDATE: u32 = 18;
        pub const IO_URING: u32 = 19;
        pub const COMPAT_SYSCALL: u32 = 20;
        pub const FD_RACED: u32 = 21;
        pub const PROCESS_KEY: u32 = 30;
        pub const PROCESS: u32 = 50;
    }
    pub mod filesystem {
        pub const PATH: u32 = 5;
        pub const NEW_PATH: u32 = 6;
        pub const PATH_RELATIVE: u32 = 7;
        pub const FLAGS: u32 = 8;
        pub const MODE: u32 = 9;
        pub const RESULT: u32 = 10;
        pub const UID: u32 = 11;
        pub const NAME: u32 = 12;
        pub const PATH_TRUNCATED: u32 = 13;
        pub const PATH_UNREADABLE: u32 = 14;
        pub const PATH_USER_SUPPLIED: u32 = 15;
        pub const COMPAT_SYSCALL: u32 = 16;
        pub const OWNER_UID: u32 = 17;
        pub const OWNER_GID: u32 = 18;
        pub const PROCESS_KEY: u32 = 30;
        pub const PATH_CHANGED: u32 = 40;
        pub const NEW_PATH_TRUNCATED: u32 = 41;
        pub const NEW_PATH_UNREADABLE: u32 = 42;
        pub const NEW_PATH_USER_SUPPLIED: u32 = 43;
        pub const NEW_PATH_CHANGED: u32 = 44;
        pub const IO_URING: u32 = 45;
        pub const DEVICE_MAJOR: u32 = 46;
        pub const DEVICE_MINOR: u32 = 47;
        pub const LENGTH: u32 = 48;
        pub const XATTR_NAME: u32 = 49;
        pub const PROCESS: u32 = 50;
        pub const FD_RACED: u32 = 51;
    }
    /// `ProcessContext`, in network and filesystem events.
    pub mod process_context {
        pub const PROCESS_KEY: u32 = 1;
        pub const EXECUTABLE_PATH: u32 = 2;
        pub const EXEC_NAME: u32 = 3;
        pub const PPID: u32 = 4;
        pub const PARENT_PROCESS_KEY: u32 = 5;
    }
    pub mod performance {
        pub const METRIC_NAME: u32 = 5;
        pub const VALUE: u32 = 6;
        pub const UNIT: u32 = 7;
        pub const COMPONENT: u32 = 8;
    }
}

/// Bytes a varint of `v` takes (1 to 10).
#[inline]
pub(crate) fn varint_len(v: u64) -> usize {
    // 7 payload bits per byte; `| 1` makes 0 take one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_prost() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u32::MAX as u64,
            u64::MAX >> 1,
            u64::MAX,
        ] {
            assert_eq!(varint_len(v), prost::encoding::encoded_len_varint(v), "{v}");
        }
    }
}
