//! Just enough of a BTF reader to find struct member offsets in the running kernel's
//! type information (`/sys/kernel/btf/vmlinux`).
//!
//! The kernel programs cannot use CO-RE relocations (Rust emits none), so the loader
//! resolves every field they read here and hands the offsets over as read-only globals.
//! Format: <https://docs.kernel.org/bpf/btf.html>.

use std::collections::HashMap;
use std::path::Path;

/// Errors reading BTF or resolving a field.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read kernel BTF at {path} (the kernel needs CONFIG_DEBUG_INFO_BTF=y, Linux >= 5.8 recommended)")]
    Read {
        /// File read.
        path: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The data is not valid BTF.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// A struct is missing from the kernel's BTF.
    #[error("kernel BTF has no struct `{0}`")]
    NoStruct(String),
    /// A member is missing from a struct.
    #[error("kernel struct `{ty}` has no member `{member}`")]
    NoMember {
        /// Struct searched.
        ty: String,
        /// Member asked for.
        member: String,
    },
    /// A function prototype is missing.
    #[error("kernel BTF has no typedef `{0}`")]
    NoTypedef(String),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Member {
    name: String,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
enum Type {
    /// struct or union
    Composite {
        members: Vec<Member>,
    },
    /// typedef, const, volatile, restrict, type tag: refers to another type
    Alias {
        type_id: u32,
    },
    /// pointer to another type
    Ptr {
        type_id: u32,
    },
    /// function prototype: parameter count
    FuncProto {
        params: u32,
    },
    Other,
}

/// Parsed kernel BTF: named structs/unions/typedefs and their members.
#[derive(Debug)]
pub struct KernelBtf {
    types: Vec<Type>, // index = type id; 0 is void
    structs: HashMap<String, u32>,
    typedefs: HashMap<String, u32>,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl KernelBtf {
    /// Reads `/sys/kernel/btf/vmlinux`.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    /// Reads BTF from a file.
    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    /// Parses raw little-endian BTF.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_data = data
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?;
        let name = |off: u32| -> Result<String, BtfError> {
            let rest = strings
                .get(off as usize..)
                .ok_or(BtfError::Malformed("string offset out of bounds"))?;
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        };

        let mut btf = KernelBtf {
            types: vec![Type::Other],
            structs: HashMap::new(),
            typedefs: HashMap::new(),
        };
        let mut at = 0usize;
        while at < types_data.len() {
            let name_off = u32_at(types_data, at)?;
            let info = u32_at(types_data, at + 4)?;
            let size_or_type = u32_at(types_data, at + 8)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let id = btf.types.len() as u32;
            let ty = match kind {
                KIND_INT => {
                    at += 4;
                    Type::Other
                }
                KIND_PTR => Type::Ptr {
                    type_id: size_or_type,
                },
                KIND_FWD | KIND_FUNC | KIND_FLOAT => Type::Other,
                KIND_ARRAY => {
                    at += 12;
                    Type::Other
                }
                KIND_STRUCT | KIND_UNION => {
                    let mut members = Vec::with_capacity(vlen);
                    for _ in 0..vlen {
                        let m_name = u32_at(types_data, at)?;
                        let m_type = u32_at(types_data, at + 4)?;
                        let m_off = u32_at(types_data, at + 8)?;
                        at += 12;
                        members.push(Member {
                            name: name(m_name)?,
                            type_id: m_type,
                            bit_offset: if kind_flag { m_off & 0xff_ffff } else { m_off },
                        });
                    }
                    let n = name(name_off)?;
                    if !n.is_empty() && !members.is_empty() {
                        // Keep the first full definition of a name.
                        btf.structs.entry(n).or_insert(id);
                    }
                    Type::Composite { members }
                }
                KIND_ENUM => {
                    at += 8 * vlen;
                    Type::Other
                }
                KIND_TYPEDEF => {
                    btf.typedefs.entry(name(name_off)?).or_insert(id);
                    Type::Alias {
                        type_id: size_or_type,
                    }
                }
                KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => Type::Alias {
                    type_id: size_or_type,
                },
                KIND_FUNC_PROTO => {
                    at += 8 * vlen;
                    Type::FuncProto {
                        params: vlen as u32,
                    }
                }
                KIND_VAR => {
                    at += 4;
                    Type::Other
                }
                KIND_DATASEC => {
                    at += 12 * vlen;
                    Type::Other
                }
                KIND_DECL_TAG => {
                    at += 4;
                    Type::Other
                }
                KIND_ENUM64 => {
                    at += 12 * vlen;
                    Type::Other
                }
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            btf.types.push(ty);
        }
        Ok(btf)
    }

    fn strip_aliases(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(Type::Alias { type_id }) => id = *type_id,
                _ => break,
            }
        }
        id
    }

    /// Finds `member` in composite `id`, looking through anonymous struct/union members.
    /// Returns (bit offset, member type id).
    fn find_member(&self, id: u32, member: &str) -> Option<(u32, u32)> {
        let Type::Composite { members } = self.types.get(self.strip_aliases(id) as usize)? else {
            return None;
        };
        for m in members {
            if m.name == member {
                return Some((m.bit_offset, m.type_id));
            }
        }
        for m in members.iter().filter(|m| m.name.is_empty()) {
            if let Some((off, ty)) = self.find_member(m.type_id, member) {
                return Some((m.bit_offset + off, ty));
            }
        }
        None
    }

    /// Byte offset of `path` (`"member"` or `"member.nested"`) inside struct `ty`.
    pub fn member_offset(&self, ty: &str, path: &str) -> Result<u64, BtfError> {
        Ok(self.member_bit_offset(ty, path)? / 8)
    }

    /// Bit offset of `path` inside struct `ty`: for bitfields such as
    /// `linux_binprm.secureexec`, which have no byte offset of their own.
    pub fn member_bit_offset(&self, ty: &str, path: &str) -> Result<u64, BtfError> {
        let mut id = *self
            .structs
            .get(ty)
            .ok_or_else(|| BtfError::NoStruct(ty.to_string()))?;
        let mut bits = 0u64;
        for part in path.split('.') {
            let (off, member_ty) =
                self.find_member(id, part)
                    .ok_or_else(|| BtfError::NoMember {
                        ty: ty.to_string(),
                        member: path.to_string(),
                    })?;
            bits += u64::from(off);
            id = member_ty;
        }
        Ok(bits)
    }

    /// Number of parameters of the function pointer typedef `name`
    /// (e.g. `btf_trace_sched_process_exit`, whose first parameter is the context).
    pub fn func_typedef_params(&self, name: &str) -> Result<u32, BtfError> {
        let id = *self
            .typedefs
            .get(name)
            .ok_or_else(|| BtfError::NoTypedef(name.to_string()))?;
        // typedef -> ptr -> func_proto
        let proto = match self.types.get(self.strip_aliases(id) as usize) {
            Some(Type::Ptr { type_id }) => self.types.get(self.strip_aliases(*type_id) as usize),
            _ => None,
        };
        match proto {
            Some(Type::FuncProto { params }) => Ok(*params),
            _ => Err(BtfError::NoTypedef(name.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage() {
        assert!(matches!(
            KernelBtf::parse(b"not btf at all, clearly not"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn resolves_running_kernel_offsets_when_available() {
        let Ok(btf) = KernelBtf::from_sys_fs() else {
            eprintln!("skipping: no /sys/kernel/btf/vmlinux");
            return;
        };
        // task_struct.pid and .tgid are adjacent pid_t fields on every kernel.
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let tgid = btf.member_offset("task_struct", "tgid").unwrap();
        assert_eq!(tgid, pid + 4);
        // mm_struct keeps arg_start inside an anonymous struct: found through it.
        let start = btf.member_offset("mm_struct", "arg_start").unwrap();
        let end = btf.member_offset("mm_struct", "arg_end").unwrap();
        assert_eq!(end, start + 8);
        // Nested path through an embedded struct.
        assert_eq!(
            btf.member_offset("sock", "__sk_common.skc_family").unwrap(),
            btf.member_offset("sock_common", "skc_family").unwrap()
        );
        assert!(btf.member_offset("task_struct", "no_such_field").is_err());
        // A bitfield: its bit offset lies inside the word after `p`.
        let p = btf.member_offset("linux_binprm", "p").unwrap();
        let secureexec = btf.member_bit_offset("linux_binprm", "secureexec").unwrap();
        assert!(secureexec >= (p + 8) * 8 && secureexec < (p + 16) * 8);
        assert!(
            btf.func_typedef_params("btf_trace_sched_process_exec")
                .unwrap()
                == 4
        );
    }
}
