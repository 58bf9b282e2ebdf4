//! Makes the kernel object's own BTF acceptable to the kernel before loading.
//!
//! rustc names generic unions after their Rust type (`MaybeUninit<u8>`, from aya-log's
//! log-level global); the kernel's BTF checker refuses names that are not C identifiers
//! ("Invalid name") and with it the whole object. bpf-linker releases newer than the
//! pinned 0.10.0 sanitize union names; until then the loader does the same, in place:
//! every character of a struct or union name that a C identifier may not contain
//! becomes `_` (same length, so no offset moves).

use super::btf::BtfError;

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;

fn u16_at(d: &[u8], at: usize) -> Option<u16> {
    d.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(d: &[u8], at: usize) -> Option<u32> {
    d.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(d: &[u8], at: usize) -> Option<u64> {
    d.get(at..at + 8)
        .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// Byte range of the section called `name` in a little-endian ELF64 object.
fn elf_section(elf: &[u8], name: &[u8]) -> Option<std::ops::Range<usize>> {
    if elf.get(..4)? != b"\x7fELF" || *elf.get(4)? != 2 || *elf.get(5)? != 1 {
        return None;
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let shentsize = u16_at(elf, 0x3a)? as usize;
    let shnum = u16_at(elf, 0x3c)? as usize;
    let shstrndx = u16_at(elf, 0x3e)? as usize;
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(elf, header(shstrndx) + 0x18)? as usize;
    for i in 0..shnum {
        let h = header(i);
        let name_off = u32_at(elf, h)? as usize;
        let sec_name = elf.get(strtab + name_off..)?;
        let end = sec_name.iter().position(|&b| b == 0)?;
        if &sec_name[..end] == name {
            let off = u64_at(elf, h + 0x18)? as usize;
            let size = u64_at(elf, h + 0x20)? as usize;
            return (off + size <= elf.len()).then_some(off..off + size);
        }
    }
    None
}

/// Bytes that follow a type's 12-byte header, by kind.
fn extra_len(kind: u32, vlen: usize) -> Result<usize, BtfError> {
    Ok(match kind {
        1 | 14 | 17 => 4,             // int, var, decl_tag
        2 | 7..=12 | 16 | 18 => 0, // ptr, fwd, typedef, volatile, const, restrict, func, float, type_tag
        3 => 12,                   // array
        4 | 5 | 15 | 19 => 12 * vlen, // struct, union, datasec, enum64
        6 | 13 => 8 * vlen,        // enum, func_proto
        _ => return Err(BtfError::Malformed("unknown type kind")),
    })
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Sanitizes struct and union names in the raw BTF `btf`; returns how many it changed.
pub fn sanitize_btf(btf: &mut [u8]) -> Result<usize, BtfError> {
    let bad = BtfError::Malformed("truncated");
    if btf.len() < 24 || btf[0..2] != [0x9f, 0xeb] {
        return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
    }
    let field = |at| {
        u32_at(btf, at)
            .map(|v| v as usize)
            .ok_or(BtfError::Malformed("truncated"))
    };
    let (hdr_len, type_off, type_len, str_off, str_len) =
        (field(4)?, field(8)?, field(12)?, field(16)?, field(20)?);
    let types = hdr_len + type_off..hdr_len + type_off + type_len;
    let strings = hdr_len + str_off..hdr_len + str_off + str_len;
    if types.end > btf.len() || strings.end > btf.len() {
        return Err(bad);
    }
    let mut names = Vec::new();
    let mut at = types.start;
    while at < types.end {
        let name_off = u32_at(btf, at).ok_or(BtfError::Malformed("truncated"))? as usize;
        let info = u32_at(btf, at + 4).ok_or(BtfError::Malformed("truncated"))?;
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        if (kind == KIND_STRUCT || kind == KIND_UNION) && name_off != 0 {
            names.push(strings.start + name_off);
        }
        at += 12 + extra_len(kind, vlen)?;
    }
    let mut changed = 0;
    for start in names {
        let mut i = start;
        let mut touched = false;
        while i < strings.end && btf[i] != 0 {
            if !is_ident_byte(btf[i]) {
                btf[i] = b'_';
                touched = true;
            }
            i += 1;
        }
        changed += usize::from(touched);
    }
    Ok(changed)
}

/// Sanitizes the `.BTF` section of an ELF object in place; returns the names changed
/// (0 when the object has no BTF).
pub fn sanitize_object(elf: &mut [u8]) -> Result<usize, BtfError> {
    match elf_section(elf, b".BTF") {
        Some(range) => sanitize_btf(&mut elf[range]),
        None => Ok(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BTF with one union named `MaybeUninit<u8>` and one int.
    fn sample() -> Vec<u8> {
        let strings = b"\0MaybeUninit<u8>\0u8\0";
        let mut types = Vec::new();
        // [1] INT u8: name_off=17, info=kind 1, size 1, + 4 bytes encoding
        types.extend_from_slice(&17u32.to_le_bytes());
        types.extend_from_slice(&(1u32 << 24).to_le_bytes());
        types.extend_from_slice(&1u32.to_le_bytes());
        types.extend_from_slice(&8u32.to_le_bytes());
        // [2] UNION MaybeUninit<u8>: name_off=1, kind 5, vlen 1, size 1, member value: u8
        types.extend_from_slice(&1u32.to_le_bytes());
        types.extend_from_slice(&((5u32 << 24) | 1).to_le_bytes());
        types.extend_from_slice(&1u32.to_le_bytes());
        types.extend_from_slice(&17u32.to_le_bytes());
        types.extend_from_slice(&1u32.to_le_bytes());
        types.extend_from_slice(&0u32.to_le_bytes());
        let mut btf = vec![0x9f, 0xeb, 1, 0];
        btf.extend_from_slice(&24u32.to_le_bytes());
        btf.extend_from_slice(&0u32.to_le_bytes());
        btf.extend_from_slice(&(types.len() as u32).to_le_bytes());
        btf.extend_from_slice(&(types.len() as u32).to_le_bytes());
        btf.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        btf.extend_from_slice(&types);
        btf.extend_from_slice(strings);
        btf
    }

    #[test]
    fn union_names_become_identifiers_in_place() {
        let mut btf = sample();
        let len = btf.len();
        assert_eq!(sanitize_btf(&mut btf).unwrap(), 1);
        assert_eq!(btf.len(), len);
        let text = String::from_utf8_lossy(&btf);
        assert!(text.contains("MaybeUninit_u8_\0u8\0"), "{text:?}");
        // Idempotent.
        assert_eq!(sanitize_btf(&mut btf).unwrap(), 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(sanitize_btf(&mut [0u8; 10]).is_err());
        let mut btf = sample();
        btf.truncate(30);
        assert!(sanitize_btf(&mut btf).is_err());
        assert_eq!(sanitize_object(&mut [0u8; 64]).unwrap(), 0);
    }
}
