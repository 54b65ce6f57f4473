#!/usr/bin/env python3
"""Blank the GPU code of every architecture but one in a CUDA shared library.

ONNX Runtime's CUDA provider (`libonnxruntime_providers_cuda.so`, 284 MB in the
onnxruntime-gpu 1.31.1 wheel) carries machine code for six GPU architectures. A copy sent
to a machine whose GPU is known (here: an H100/H200, sm_90) needs only that one. This
tool overwrites the other architectures' code with zeros, in place of the file's copy,
keeping every offset and header, so the copy compresses to about a fifth (zeros), and the
CUDA runtime, which picks the entry matching the device, never reads what was blanked.
A kernel with no entry for the kept architecture could not run on that device anyway.

    trim_fatbin.py IN OUT --keep-sm 90

Prints, per architecture, what was kept and what was blanked.
"""
import argparse
import collections
import struct
import subprocess
import sys

FATBIN_MAGIC = 0xBA55ED50
ELF_KIND = 2


def fatbin_section(path):
    out = subprocess.check_output(["readelf", "-S", "-W", path], text=True)
    for line in out.splitlines():
        if " .nv_fatbin " in line:
            fields = line.split("]", 1)[1].split()
            return int(fields[3], 16), int(fields[4], 16)
    sys.exit(f"{path}: no .nv_fatbin section (not a CUDA library?)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--keep-sm", type=int, required=True, help="architecture to keep, e.g. 90")
    args = ap.parse_args()
    data = bytearray(open(args.src, "rb").read())
    off, size = fatbin_section(args.src)
    kept, blanked = collections.Counter(), collections.Counter()
    pos, end = off, off + size
    while pos < end:
        magic, _version, header_size, fat_size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # alignment between fat binaries
            continue
        entry, fat_end = pos + header_size, pos + header_size + fat_size
        while entry < fat_end:
            kind, _unk, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            start = entry + entry_header
            if kind == ELF_KIND and arch != args.keep_sm:
                data[start:start + payload] = bytes(payload)
                blanked[arch] += payload
            else:
                kept[(kind, arch)] += payload
            entry = start + payload
        pos = fat_end
    if not kept:
        sys.exit(f"{args.src}: nothing for sm_{args.keep_sm}; refusing to write a library with no GPU code")
    open(args.dst, "wb").write(data)
    for (kind, arch), n in sorted(kept.items()):
        print(f"kept     sm_{arch} {'elf' if kind == ELF_KIND else 'ptx'}: {n / 2**20:.1f} MiB")
    for arch, n in sorted(blanked.items()):
        print(f"blanked  sm_{arch}: {n / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
