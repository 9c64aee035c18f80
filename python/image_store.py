#!/usr/bin/env python3
"""Kernel image store: one LZMA-compressed file per (kernel, functional, arch).

File layout (format v2, little-endian; v2src/image_store.cc reads the same):

  header, 64 bytes, uncompressed
    0  8s  magic b"AOTRSTOR"
    8  u32 format_version (2)
   12  u32 header_size (64)
   16  u32 arch (e.g. 90)
   20  u32 entry_count (1 .. MAX_ENTRIES)
   24  u64 payload_size (bytes of xz data after the header; the file ends there)
   32  u64 raw_size (decompressed size, <= MAX_RAW_SIZE and at most
       MAX_INFLATE_RATIO x payload_size unless <= RAW_ALLOWANCE)
   40  u32 payload_crc32 (CRC-32 of the xz bytes)
   44  u32 raw_crc32 (CRC-32 of the decompressed bytes)
   48  u32 abi_version (the library ABI, aotriton::vN, the store is built for)
   52  zero padding to 64
  payload: one xz stream (CRC64 check) that decompresses to
    meta       str16 kernel (non-empty), str16 functional, str16 triton_version
    directory  entry_count x (str16 name, str16 symbol, u32 shared_bytes,
               u32 num_warps, u32 num_ctas, u32 global_scratch_size,
               u32 global_scratch_align, u32 profile_scratch_size,
               u32 profile_scratch_align, u32 blob_index)
    blob table u32 blob_count, blob_count x (u64 offset, u64 size), offsets
               relative to the blob area
    zero padding up to a 16-byte raw offset
    blob area  the cubins, each starting 16-byte aligned (zero padding between,
               nothing after the last one)
  str16 = u16 byte length + UTF-8 bytes.

The layout is canonical so that readers can check it exactly and the same inputs
give byte-identical files: entries sorted by the UTF-8 bytes of their names
(unique, non-empty), identical cubins stored once, blobs numbered in order of
first use, every blob used. The 16-byte alignment lets the C++ runtime hand
cubin pointers straight to cuModuleLoadData (ELF64 headers want 8-byte
alignment) out of its 16-byte aligned decompression buffer.

Usage as a tool (the generator's ninja pack edge):
  python python/image_store.py pack --out F --arch 90 --kernel K \
      --functional F --triton-version V meta.json... (or @response-file)
"""
from __future__ import annotations

import argparse
import json
import lzma
import os
import stat
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass, field
from typing import Optional

MAGIC = b"AOTRSTOR"
FORMAT_VERSION = 2
# Library ABI the stores are built for: must equal AOTRITON_ABI_VERSION in
# CMakeLists.txt (test_image_store.py checks); readers refuse any other.
ABI_VERSION = 1
HEADER_SIZE = 64
MAX_RAW_SIZE = 1 << 30  # readers refuse to inflate more than this
# Readers bound memory by the file's real content: a payload may inflate at most
# MAX_INFLATE_RATIO times its size (real cubins compress ~8x, whole stores
# under 20x), except that any payload may inflate to RAW_ALLOWANCE bytes.
MAX_INFLATE_RATIO = 64
RAW_ALLOWANCE = 1 << 20
MAX_ENTRIES = 65536  # more tuning configs than any functional has
# Decoder memory limit: our files use at most a 64 MiB dictionary (see _filters).
DECODER_MEMLIMIT = 128 << 20
BLOB_ALIGN = 16

_HEADER = struct.Struct("<8sIIIIQQIII")  # 52 bytes, zero padded to HEADER_SIZE
_ENTRY_FIXED = struct.Struct("<8I")
_BLOB = struct.Struct("<QQ")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
# Smallest directory entry: two empty strings plus the fixed fields. Used to
# reject entry counts that cannot fit before trusting them.
MIN_ENTRY_SIZE = 2 * _U16.size + _ENTRY_FIXED.size


class StoreError(ValueError):
    """A store file is missing, malformed, or cannot be written as asked."""


class StoreVersionError(StoreError):
    """A store of another format or library ABI version."""


@dataclass
class StoreEntry:
    """One tuning config of a functional: its cubin and launch metadata."""
    name: str
    symbol: str
    cubin: bytes
    shared: int
    num_warps: int
    num_ctas: int
    global_scratch_size: int = 0
    global_scratch_align: int = 1
    profile_scratch_size: int = 0
    profile_scratch_align: int = 1


@dataclass
class Store:
    """A decoded store file."""
    arch: int
    kernel: str
    functional: str
    triton_version: str
    entries: list  # list[StoreEntry], sorted by name
    raw_size: int
    payload_size: int
    blob_count: int = 0  # number of distinct cubins
    _index: dict = field(default_factory=dict, repr=False, compare=False)

    def find(self, name: str) -> Optional[StoreEntry]:
        if not self._index:
            self._index = {e.name: e for e in self.entries}
        return self._index.get(name)


# --------------------------------------------------------------------------
# Shared validation (the C++ reader applies the same rules, in the same order)
# --------------------------------------------------------------------------

def _is_pow2(v: int) -> bool:
    return v >= 1 and (v & (v - 1)) == 0


def _entry_problem(e: StoreEntry) -> Optional[str]:
    if not e.name:
        return "empty entry name"
    if not e.symbol:
        return "empty kernel symbol"
    if not 1 <= e.num_warps <= 32:
        return f"num_warps {e.num_warps} not in [1, 32]"
    if e.num_ctas < 1:
        return f"num_ctas {e.num_ctas} < 1"
    if not _is_pow2(e.global_scratch_align):
        return f"global_scratch_align {e.global_scratch_align} is not a power of two"
    if not _is_pow2(e.profile_scratch_align):
        return f"profile_scratch_align {e.profile_scratch_align} is not a power of two"
    return None


def _align(n: int) -> int:
    return (n + BLOB_ALIGN - 1) // BLOB_ALIGN * BLOB_ALIGN


# --------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------

def _str16(s: str, what: str) -> bytes:
    if not isinstance(s, str):
        raise StoreError(f"{what} must be a str, got {type(s).__name__}")
    b = s.encode("utf-8")
    if len(b) > 0xFFFF:
        raise StoreError(f"{what} is {len(b)} bytes of UTF-8, at most 65535 fit")
    return _U16.pack(len(b)) + b


def _u32(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
        raise StoreError(f"{what} must be an integer in [0, 2^32), got {v!r}")
    return v


def _filters(raw_size: int) -> list:
    # Preset 9|EXTREME: the densest stdlib setting; on real Triton cubins it
    # costs ~0.3 s/MB to pack and decompresses as fast as preset 6 (ratios are
    # within 0.1% of each other, ~0.12 of raw). The dictionary is shrunk to the
    # smallest power of two holding the whole raw payload (a larger one cannot
    # find more matches), so a reader needs memory proportional to the file, not
    # preset 9's fixed 64 MiB. Everything depends only on the input: reproducible.
    dict_size = 1 << 12
    while dict_size < raw_size and dict_size < (64 << 20):
        dict_size <<= 1
    return [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": dict_size}]


def inflate_limit(payload_size: int) -> int:
    """The most raw bytes a reader inflates from a payload of this size."""
    return min(MAX_RAW_SIZE, max(RAW_ALLOWANCE, payload_size * MAX_INFLATE_RATIO))


def wrap_payload(raw: bytes, *, arch: int, entry_count: int, abi_version: int = ABI_VERSION,
                 format_version: int = FORMAT_VERSION) -> bytes:
    """Compress a raw payload and put the header in front (no validation of raw:
    tests use this to build files whose directory is wrong but whose checksums
    are right)."""
    payload = lzma.compress(raw, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64,
                            filters=_filters(len(raw)))
    header = _HEADER.pack(MAGIC, format_version, HEADER_SIZE, arch, entry_count,
                          len(payload), len(raw), zlib.crc32(payload), zlib.crc32(raw), abi_version)
    return header.ljust(HEADER_SIZE, b"\0") + payload


def encode_store(*, arch: int, kernel: str, functional: str, triton_version: str,
                 entries: list) -> bytes:
    """The bytes of a store file (see the module docstring for the layout)."""
    if _u32(arch, "arch") == 0:
        raise StoreError("arch must be non-zero")
    if not entries:
        raise StoreError(f"{kernel}/{functional}: no entries to store")
    if len(entries) > MAX_ENTRIES:
        raise StoreError(f"{kernel}/{functional}: {len(entries)} entries, at most {MAX_ENTRIES} fit")
    if not kernel:
        raise StoreError("kernel name is empty")
    meta = _str16(kernel, "kernel") + _str16(functional, "functional") + \
        _str16(triton_version, "triton_version")

    ordered = sorted(entries, key=lambda e: e.name.encode("utf-8") if isinstance(e.name, str) else b"")
    blobs: list = []
    blob_of: dict = {}
    directory = []
    prev = None
    for e in ordered:
        where = f"{kernel}/{functional} entry {e.name!r}"
        if e.name == prev:
            raise StoreError(f"{where}: duplicate entry name")
        prev = e.name
        fixed = [_u32(getattr(e, f), f"{where}: {f}") for f in
                 ("shared", "num_warps", "num_ctas", "global_scratch_size",
                  "global_scratch_align", "profile_scratch_size", "profile_scratch_align")]
        problem = _entry_problem(e)
        if problem:
            raise StoreError(f"{where}: {problem}")
        cubin = bytes(e.cubin)
        if not cubin:
            raise StoreError(f"{where}: empty cubin")
        if cubin not in blob_of:  # dedupe by content; numbered in order of first use
            blob_of[cubin] = len(blobs)
            blobs.append(cubin)
        directory.append(_str16(e.name, f"{where}: name") + _str16(e.symbol, f"{where}: symbol")
                         + _ENTRY_FIXED.pack(*fixed, blob_of[cubin]))

    table = [_U32.pack(len(blobs))]
    area = bytearray()
    for b in blobs:
        area += b"\0" * (_align(len(area)) - len(area))
        table.append(_BLOB.pack(len(area), len(b)))
        area += b
    head = meta + b"".join(directory) + b"".join(table)
    raw = head + b"\0" * (_align(len(head)) - len(head)) + bytes(area)
    if len(raw) > MAX_RAW_SIZE:
        raise StoreError(f"{kernel}/{functional}: {len(raw)} raw bytes exceed the {MAX_RAW_SIZE} limit")
    data = wrap_payload(raw, arch=arch, entry_count=len(ordered))
    if len(raw) > inflate_limit(len(data) - HEADER_SIZE):
        raise StoreError(f"{kernel}/{functional}: {len(raw)} raw bytes compress to {len(data) - HEADER_SIZE}, more "
                         f"than {MAX_INFLATE_RATIO}x: readers would refuse it (not real cubins?)")
    return data


def write_store(path, *, arch: int, kernel: str, functional: str, triton_version: str,
                entries: list) -> None:
    """Write a store file atomically (temp file in the same directory + os.replace)."""
    data = encode_store(arch=arch, kernel=kernel, functional=functional,
                        triton_version=triton_version, entries=entries)
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # mkstemp makes 0600 files; installed stores must be readable like any file.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------

class _Cursor:
    """Bounds-checked reads from the raw payload."""

    def __init__(self, raw: bytes, label: str):
        self.raw, self.pos, self.label = raw, 0, label

    def fail(self, what: str):
        raise StoreError(f"{self.label}: {what}")

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.raw) - self.pos:
            self.fail(f"payload truncated in {what} (need {n} bytes at offset {self.pos}, "
                      f"{len(self.raw) - self.pos} left)")
        b = self.raw[self.pos:self.pos + n]
        self.pos += n
        return b

    def str16(self, what: str) -> str:
        (n,) = _U16.unpack(self.take(2, what))
        b = self.take(n, what)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            self.fail(f"{what} is not valid UTF-8")


def _inflate(payload: bytes, raw_size: int, label: str) -> bytes:
    d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ, memlimit=DECODER_MEMLIMIT)
    try:
        # One byte more than announced, so that a longer stream is caught
        # without inflating an unbounded amount.
        raw = d.decompress(payload, max_length=raw_size + 1)
    except lzma.LZMAError as e:
        raise StoreError(f"{label}: xz payload does not decode: {e}") from None
    if len(raw) > raw_size:
        raise StoreError(f"{label}: payload decompresses to more than raw_size {raw_size}")
    if not d.eof:
        raise StoreError(f"{label}: xz payload is truncated")
    if d.unused_data:
        raise StoreError(f"{label}: {len(d.unused_data)} bytes after the xz stream")
    if len(raw) != raw_size:
        raise StoreError(f"{label}: payload decompresses to {len(raw)} bytes, header says raw_size {raw_size}")
    return raw


def decode_store(data: bytes, label: str = "<memory>", abi_version: int = ABI_VERSION) -> Store:
    """Parse and check a whole store file held in memory (built for library ABI
    `abi_version`: StoreVersionError otherwise)."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise StoreError(f"{label}: truncated header ({len(data)} bytes, need {HEADER_SIZE})")
    (magic, version, header_size, arch, entry_count, payload_size, raw_size,
     payload_crc, raw_crc, abi) = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise StoreError(f"{label}: bad magic {magic!r}, not an aotriton image store")
    if version != FORMAT_VERSION or abi != abi_version:
        raise StoreVersionError(f"{label}: image store format {version}, library ABI {abi}; this library reads "
                                f"format {FORMAT_VERSION}, ABI {abi_version} (images from another aotriton build: "
                                "use this build's images)")
    if header_size != HEADER_SIZE:
        raise StoreError(f"{label}: header_size {header_size}, expected {HEADER_SIZE}")
    if any(data[_HEADER.size:HEADER_SIZE]):
        raise StoreError(f"{label}: non-zero header padding")
    if arch == 0:
        raise StoreError(f"{label}: arch is 0")
    if entry_count == 0:
        raise StoreError(f"{label}: entry_count is 0")
    if entry_count > MAX_ENTRIES:
        raise StoreError(f"{label}: entry_count {entry_count} exceeds the limit of {MAX_ENTRIES}")
    if raw_size > MAX_RAW_SIZE:
        raise StoreError(f"{label}: raw_size {raw_size} exceeds the {MAX_RAW_SIZE} byte limit")
    if payload_size != len(data) - HEADER_SIZE:
        kind = "truncated payload" if payload_size > len(data) - HEADER_SIZE else "trailing bytes after payload"
        raise StoreError(f"{label}: {kind} (header says {payload_size} bytes, file has "
                         f"{len(data) - HEADER_SIZE})")
    if entry_count * MIN_ENTRY_SIZE > raw_size:
        raise StoreError(f"{label}: entry_count {entry_count} cannot fit in raw_size {raw_size}")
    if raw_size > inflate_limit(payload_size):
        raise StoreError(f"{label}: raw_size {raw_size} is more than {MAX_INFLATE_RATIO} times the "
                         f"{payload_size}-byte payload (not a real store)")
    payload = data[HEADER_SIZE:]
    if zlib.crc32(payload) != payload_crc:
        raise StoreError(f"{label}: payload checksum mismatch (CRC-32 {zlib.crc32(payload):08x}, "
                         f"header says {payload_crc:08x})")
    raw = _inflate(payload, raw_size, label)
    if zlib.crc32(raw) != raw_crc:
        raise StoreError(f"{label}: raw checksum mismatch (CRC-32 {zlib.crc32(raw):08x}, header says {raw_crc:08x})")
    return _parse_raw(raw, arch, entry_count, payload_size, label)


def _parse_raw(raw: bytes, arch: int, entry_count: int, payload_size: int, label: str) -> Store:
    c = _Cursor(raw, label)
    kernel = c.str16("kernel name")
    functional = c.str16("functional name")
    triton_version = c.str16("triton version")
    if not kernel:
        c.fail("empty kernel name")
    if entry_count > (len(raw) - c.pos) // MIN_ENTRY_SIZE:
        c.fail(f"entry_count {entry_count} cannot fit in {len(raw) - c.pos} payload bytes")
    fields = []
    prev = None
    seen_blobs = 0
    for i in range(entry_count):
        what = f"directory entry {i}"
        name = c.str16(what + " name")
        symbol = c.str16(what + " symbol")
        vals = _ENTRY_FIXED.unpack(c.take(_ENTRY_FIXED.size, what))
        e = StoreEntry(name, symbol, b"", *vals[:7])
        problem = _entry_problem(e)
        if problem:
            c.fail(f"{what} ({name!r}): {problem}")
        nb = name.encode("utf-8")
        if prev is not None and nb <= prev:
            c.fail(f"{what} ({name!r}): names not strictly sorted")
        prev = nb
        blob = vals[7]
        if blob > seen_blobs:
            c.fail(f"{what} ({name!r}): blob_index {blob} out of order (next new blob is {seen_blobs})")
        seen_blobs += blob == seen_blobs
        fields.append((e, blob))
    (blob_count,) = _U32.unpack(c.take(4, "blob count"))
    if blob_count != seen_blobs:
        c.fail(f"blob_count {blob_count}, but the directory uses {seen_blobs} blobs")
    table = c.take(blob_count * _BLOB.size, "blob table")
    area_start = _align(c.pos)
    if area_start > len(raw):
        c.fail("payload truncated before the blob area")
    if any(raw[c.pos:area_start]):
        c.fail("non-zero padding before the blob area")
    area = raw[area_start:]
    blobs = []
    expect = 0
    for i in range(blob_count):
        off, size = _BLOB.unpack_from(table, i * _BLOB.size)
        if off != _align(expect):
            c.fail(f"blob {i}: offset {off}, expected {_align(expect)}")
        if size == 0 or size > len(area) - off:
            c.fail(f"blob {i}: offset {off} size {size} outside the {len(area)}-byte blob area")
        if any(area[expect:off]):
            c.fail(f"blob {i}: non-zero padding before it")
        blobs.append(area[off:off + size])
        expect = off + size
    if expect != len(area):
        c.fail(f"{len(area) - expect} bytes after the last blob")
    entries = []
    for e, blob in fields:
        e.cubin = blobs[blob]
        entries.append(e)
    return Store(arch=arch, kernel=kernel, functional=functional, triton_version=triton_version,
                 entries=entries, raw_size=len(raw), payload_size=payload_size, blob_count=blob_count)


def _read_regular_file(label: str, limit: int) -> bytes:
    # O_NONBLOCK: opening a FIFO must not wait for a writer; anything but a
    # regular file is refused before reading.
    fd = os.open(label, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode)
                    else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "special")
            raise StoreError(f"{label}: not a regular file ({kind})")
        if st.st_size > limit:
            raise StoreError(f"{label}: file of {st.st_size} bytes is too large")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read(st.st_size + 1)  # read(n) allocates n bytes up front: ask for what is there
    finally:
        os.close(fd)


def read_store(path, abi_version: int = ABI_VERSION) -> Store:
    """Read and check a store file; raises StoreError (a ValueError) on any problem."""
    label = os.fspath(path)
    try:
        data = _read_regular_file(label, HEADER_SIZE + 2 * MAX_RAW_SIZE)
    except OSError as e:
        raise StoreError(f"{label}: cannot read: {e.strerror or e}") from None
    return decode_store(data, label, abi_version)


# --------------------------------------------------------------------------
# CLI: pack
# --------------------------------------------------------------------------

_REQUIRED = ("name", "symbol", "cubin", "shared", "num_warps", "num_ctas")
_OPTIONAL = {"global_scratch_size": 0, "global_scratch_align": 1,
             "profile_scratch_size": 0, "profile_scratch_align": 1}


def entry_from_meta(meta_path: str) -> StoreEntry:
    """A StoreEntry from the compile step's JSON (cubin path relative to the JSON)."""
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise StoreError(f"{meta_path}: cannot read metadata: {e}") from None
    if not isinstance(meta, dict):
        raise StoreError(f"{meta_path}: metadata is not a JSON object")
    missing = [k for k in _REQUIRED if k not in meta]
    if missing:
        raise StoreError(f"{meta_path}: missing keys {missing}")
    cubin_path = os.path.join(os.path.dirname(os.path.abspath(meta_path)), meta["cubin"])
    try:
        with open(cubin_path, "rb") as f:
            cubin = f.read()
    except OSError as e:
        raise StoreError(f"{meta_path}: cannot read cubin {cubin_path}: {e.strerror or e}") from None
    values = {k: meta.get(k, d) for k, d in _OPTIONAL.items()}
    for k in ("shared", "num_warps", "num_ctas", *_OPTIONAL):
        _u32(meta.get(k, _OPTIONAL.get(k)), f"{meta_path}: {k}")
    for k in ("name", "symbol"):
        if not isinstance(meta[k], str):
            raise StoreError(f"{meta_path}: {k} must be a string")
    return StoreEntry(name=meta["name"], symbol=meta["symbol"], cubin=cubin, shared=meta["shared"],
                      num_warps=meta["num_warps"], num_ctas=meta["num_ctas"], **values)


PTX_SUFFIX = "@ptx"  # entry name suffix of a config's PTX (the runtime's fallback for newer GPUs)


def entries_from_meta(meta_path: str) -> list:
    """The cubin entry of a compile step's JSON, plus a PTX entry named
    NAME@ptx when it kept the PTX (NUL-terminated, as cuModuleLoadData wants)."""
    entry = entry_from_meta(meta_path)
    with open(meta_path, encoding="utf-8") as f:
        ptx_file = json.load(f).get("ptx")
    if not ptx_file:
        return [entry]
    ptx_path = os.path.join(os.path.dirname(os.path.abspath(meta_path)), ptx_file)
    try:
        with open(ptx_path, "rb") as f:
            ptx = f.read()
    except OSError as e:
        raise StoreError(f"{meta_path}: cannot read PTX {ptx_path}: {e.strerror or e}") from None
    ptx_entry = StoreEntry(**{**entry.__dict__, "name": entry.name + PTX_SUFFIX, "cubin": ptx + b"\0"})
    return [entry, ptx_entry]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="aotriton kernel image store tool",
                                 fromfile_prefix_chars="@")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack compiled cubins (their meta.json files) into one store",
                       fromfile_prefix_chars="@")
    p.add_argument("--out", required=True)
    p.add_argument("--arch", required=True, type=int)
    p.add_argument("--kernel", required=True)
    p.add_argument("--functional", required=True)
    p.add_argument("--triton-version", required=True)
    p.add_argument("meta", nargs="+", help="meta.json files (or @file listing them)")
    args = ap.parse_args(argv)
    try:
        entries = [e for m in args.meta for e in entries_from_meta(m)]
        write_store(args.out, arch=args.arch, kernel=args.kernel, functional=args.functional,
                    triton_version=args.triton_version, entries=entries)
    except StoreError as e:
        print(f"image_store pack: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
