#!/usr/bin/env python3
"""Where a loaded BPF program spends its time, instruction by instruction.

`bpftool prog dump jited` needs libbfd, which Debian's bpftool is built without, and
`perf annotate` cannot read BPF images either. This asks the kernel for the JIT image
itself (BPF_OBJ_GET_INFO_BY_FD: `jited_prog_insns`, `jited_ksyms`, `jited_func_lens`),
disassembles each function with objdump, names the helper calls, and puts perf's samples
next to the instructions they hit.

    # 1. with the daemon running, sample a workload (kernel samples included):
    perf record -F 20000 -o open.data -- collector-test-actor opens /etc/hostname 2000000
    # 2. while the same programs are still loaded:
    python3 xtask/tools/bpf_jit_profile.py sys_exit_file open.data > sys_exit_file.ann

Each output line: samples, offset in the function, instruction. A sample usually lands
one or two instructions after a load that missed the cache. Root only.
"""

import collections
import ctypes
import json
import os
import re
import struct
import subprocess
import sys
import tempfile

SYS_BPF = 321  # x86_64
BPF_PROG_GET_FD_BY_ID = 13
BPF_OBJ_GET_INFO_BY_FD = 15
INFO_SIZE = 240  # struct bpf_prog_info up to attach_btf_id, zero-padded

libc = ctypes.CDLL(None, use_errno=True)


def bpf(cmd, attr):
    buf = ctypes.create_string_buffer(attr, 128)
    r = libc.syscall(SYS_BPF, cmd, buf, 128)
    if r < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"bpf({cmd}): {os.strerror(err)}")
    return r


def prog_info(fd, info):
    buf = ctypes.create_string_buffer(bytes(info), INFO_SIZE)
    bpf(BPF_OBJ_GET_INFO_BY_FD, struct.pack("IIQ", fd, INFO_SIZE, ctypes.addressof(buf)))
    return buf.raw


def prog_ids(name):
    out = subprocess.run(["bpftool", "-j", "prog", "show"], check=True, capture_output=True)
    return [p["id"] for p in json.loads(out.stdout) if p.get("name") == name]


def jit_image(prog_id):
    """(image bytes, [(ksym address, length)]) of a loaded program."""
    fd = bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("I", prog_id))
    raw = prog_info(fd, bytearray(INFO_SIZE))
    (jited_len,) = struct.unpack_from("I", raw, 16)
    (nr_ksyms,) = struct.unpack_from("I", raw, 104)
    if jited_len == 0:
        sys.exit("the kernel gave no JIT image (not JITed, or not root)")
    image = ctypes.create_string_buffer(jited_len)
    ksyms = (ctypes.c_uint64 * max(nr_ksyms, 1))()
    lens = (ctypes.c_uint32 * max(nr_ksyms, 1))()
    info = bytearray(INFO_SIZE)
    struct.pack_into("I", info, 16, jited_len)
    struct.pack_into("Q", info, 24, ctypes.addressof(image))
    struct.pack_into("II", info, 104, nr_ksyms, nr_ksyms)
    struct.pack_into("QQ", info, 112, ctypes.addressof(ksyms), ctypes.addressof(lens))
    prog_info(fd, info)
    os.close(fd)
    if nr_ksyms == 0:
        return image.raw, [(0, jited_len)]
    return image.raw, list(zip(ksyms, lens))


def kallsyms():
    names = {}
    with open("/proc/kallsyms") as f:
        for line in f:
            addr, _, name = line.split()[:3]
            names[int(addr, 16)] = name
    return names


def samples(perf_data):
    """Samples per (symbol, offset) from `perf script`."""
    out = subprocess.run(
        ["perf", "script", "-i", perf_data, "-F", "ip,sym,symoff"],
        check=True,
        capture_output=True,
        text=True,
    )
    hits = collections.Counter()
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "+0x" in parts[1]:
            sym, off = parts[1].rsplit("+", 1)
            hits[(sym, int(off, 16))] += 1
    return hits


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    name, perf_data = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)
    ids = prog_ids(name)
    if not ids:
        sys.exit(f"no loaded program named {name}")
    image, funcs = jit_image(ids[-1])
    names = kallsyms()
    hits = samples(perf_data) if perf_data else collections.Counter()
    start = 0
    with tempfile.TemporaryDirectory() as tmp:
        for addr, length in funcs:
            sym = names.get(addr, hex(addr))
            func_hits = {off: n for (s, off), n in hits.items() if s == sym}
            total = sum(func_hits.values())
            print(f"\n== {sym} ({length} bytes, {total} samples)")
            path = os.path.join(tmp, "f.bin")
            with open(path, "wb") as f:
                f.write(image[start : start + length])
            start += length
            dis = subprocess.run(
                ["objdump", "-D", "-b", "binary", "-m", "i386:x86-64", path],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for line in dis.splitlines():
                m = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)", line)
                if not m:
                    continue
                off, text = int(m.group(1), 16), m.group(2)
                call = re.search(r"call\s+0x([0-9a-f]+)", text)
                if call:
                    target = (addr + int(call.group(1), 16)) & (2**64 - 1)
                    text += f"   <{names.get(target, hex(target))}>"
                n = func_hits.get(off, "")
                print(f"{n:>6} {off:6x}: {text}")


if __name__ == "__main__":
    main()
