"""Image store format (python/image_store.py): round trip, dedupe, reproducibility,
writer validation, the pack CLI, and corrupt files -> StoreError."""
import functools
import json
import lzma
import os
import random
import stat
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REPO_ON_PATH = {**os.environ, "PYTHONPATH": str(REPO)}  # for child interpreters
from python import image_store as S  # noqa: E402


# ---------------------------------------------------------------- fixtures

def fake_cubin(rng: random.Random, size: int) -> bytes:
    """Compressible but distinct bytes, like a cubin: a random header plus
    repeated random 'instructions'."""
    words = [rng.randbytes(16) for _ in range(8)]
    body = b"".join(rng.choice(words) for _ in range(size // 16))
    return b"\x7fELF" + rng.randbytes(60) + body + rng.randbytes(size % 13 + 1)  # not 16-aligned


def sample_entries(seed: int = 0) -> list:
    rng = random.Random(seed)
    shared = fake_cubin(rng, 3000)
    entries = []
    for i, (bm, bn, nw) in enumerate([(128, 64, 4), (64, 64, 4), (128, 128, 8), (64, 32, 2), (16, 16, 1)]):
        entries.append(S.StoreEntry(
            name=f"BLOCK_M={bm},BLOCK_N={bn},num_warps={nw},num_stages=3", symbol=f"attn_fwd_{i}",
            cubin=fake_cubin(rng, 1000 + 500 * i), shared=rng.randrange(0, 228 * 1024),
            num_warps=nw, num_ctas=1 + (i == 2), global_scratch_size=256 * (i == 1),
            global_scratch_align=1 << i, profile_scratch_size=0, profile_scratch_align=1))
    # Two configs with byte-identical code: stored once.
    entries.append(S.StoreEntry("dup_a", "k_dup", shared, 1024, 4, 1))
    entries.append(S.StoreEntry("dup_b", "k_dup", shared, 2048, 8, 1))
    return entries


STORE_META = dict(arch=90, kernel="attn_fwd", functional="dtype=fp16,hdim=128,causal=0",
                  triton_version="3.6.0")


def encode(entries=None, **over):
    kw = dict(STORE_META, entries=sample_entries() if entries is None else entries)
    kw.update(over)
    return S.encode_store(**kw)


def inflate(data: bytes) -> bytes:
    return lzma.decompress(data[S.HEADER_SIZE:], format=lzma.FORMAT_XZ)


def entry_count(data: bytes) -> int:
    return struct.unpack_from("<I", data, 20)[0]


def layout(raw: bytes, count: int) -> dict:
    """Offsets of the fields in a raw payload: string lengths, entry fixed
    fields, blob count, blob table, blob area."""
    pos = 0
    strings = []

    def skip_str():
        nonlocal pos
        strings.append(pos)
        (n,) = struct.unpack_from("<H", raw, pos)
        pos += 2 + n
    for _ in range(3):
        skip_str()
    fixed = []
    for _ in range(count):
        skip_str()
        skip_str()
        fixed.append(pos)
        pos += 32
    blob_count_at = pos
    (nb,) = struct.unpack_from("<I", raw, pos)
    table = pos + 4
    area = (table + 16 * nb + 15) // 16 * 16
    return {"strings": strings, "fixed": fixed, "blob_count": blob_count_at, "nblobs": nb, "table": table, "area": area}


def rewrap(raw: bytes, data: bytes, entry_count_override=None) -> bytes:
    """A file with `raw` as payload and correct checksums (directory-level corruption)."""
    arch = struct.unpack_from("<I", data, 16)[0]
    count = entry_count(data) if entry_count_override is None else entry_count_override
    return S.wrap_payload(raw, arch=arch, entry_count=count)


def patch(buf: bytes, offset: int, fmt: str, *values) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


# ---------------------------------------------------------------- round trip

def test_round_trip_and_dedupe(tmp_path):
    entries = sample_entries()
    path = tmp_path / "sm_90" / "attn_fwd" / "f.aks"  # parents are created
    S.write_store(path, entries=entries, **STORE_META)
    st = S.read_store(path)
    assert (st.arch, st.kernel, st.functional, st.triton_version) == (
        90, "attn_fwd", "dtype=fp16,hdim=128,causal=0", "3.6.0")
    assert st.payload_size == path.stat().st_size - S.HEADER_SIZE
    assert st.raw_size == len(inflate(path.read_bytes()))
    names = [e.name for e in st.entries]
    assert names == sorted(e.name for e in entries)
    by_name = {e.name: e for e in entries}
    for got in st.entries:
        assert got == by_name[got.name]
    # 5 distinct cubins + one shared by dup_a and dup_b
    assert st.blob_count == 6
    assert st.find("dup_a").cubin == st.find("dup_b").cubin
    assert st.find("nope") is None
    # the shared cubin is stored once: raw holds fewer bytes than all cubins
    assert st.raw_size < sum(len(e.cubin) for e in entries)
    lay = layout(inflate(path.read_bytes()), len(entries))
    assert lay["nblobs"] == 6
    # every blob 16-byte aligned in the raw payload
    for i in range(6):
        off, _ = struct.unpack_from("<QQ", inflate(path.read_bytes()), lay["table"] + 16 * i)
        assert (lay["area"] + off) % 16 == 0


def test_reproducible_and_order_independent(tmp_path):
    a, b = tmp_path / "a.aks", tmp_path / "b.aks"
    S.write_store(a, entries=sample_entries(), **STORE_META)
    shuffled = sample_entries()
    random.Random(5).shuffle(shuffled)
    S.write_store(b, entries=shuffled, **STORE_META)
    assert a.read_bytes() == b.read_bytes()
    # a different input changes the file
    assert encode(triton_version="3.6.1") != a.read_bytes()
    # atomic write leaves no temp files; the file is readable by others like a normal one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.aks", "b.aks"]
    assert a.stat().st_mode & stat.S_IRUSR
    assert (a.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_header_fields():
    data = encode()
    magic, ver, hs, arch, count, psize, rsize, pcrc, rcrc, abi = struct.unpack_from("<8sIIIIQQIII", data)
    assert (magic, ver, hs, arch, count, abi) == (b"AOTRSTOR", 2, 64, 90, 7, S.ABI_VERSION)
    assert psize == len(data) - 64 and pcrc == zlib.crc32(data[64:])
    raw = inflate(data)
    assert rsize == len(raw) and rcrc == zlib.crc32(raw)
    assert data[52:64] == bytes(12)


def test_abi_version_matches_cmake():
    # The writer stamps S.ABI_VERSION; the C++ reader compares AOTRITON_ABI_VERSION.
    import re
    m = re.search(r"set\(AOTRITON_ABI_VERSION (\d+)\)", (REPO / "CMakeLists.txt").read_text())
    assert m and int(m.group(1)) == S.ABI_VERSION


def test_store_of_other_abi_or_format_is_refused(tmp_path):
    good = encode()
    for offset, value, want in ((8, 1, "format 1, library ABI 1"), (8, 3, "format 3, library ABI 1"),
                                (48, 2, "format 2, library ABI 2"), (48, 0, "format 2, library ABI 0")):
        path = tmp_path / "other.aks"
        path.write_bytes(patch(good, offset, "<I", value))
        with pytest.raises(S.StoreVersionError) as ei:
            S.read_store(path)
        assert want in str(ei.value) and f"reads format 2, ABI {S.ABI_VERSION}" in str(ei.value)
    # a reader for ABI 2 refuses this build's stores the same way
    with pytest.raises(S.StoreVersionError, match="library ABI 1; this library reads format 2, ABI 2"):
        S.decode_store(good, "x", abi_version=2)


def test_writer_refuses_what_readers_would_refuse():
    # A cubin that compresses more than MAX_INFLATE_RATIO times (no real cubin
    # does) would be refused by every reader: the writer says so at build time.
    with pytest.raises(S.StoreError, match="more than 64x"):
        encode([S.StoreEntry("c", "sym", b"\0" * (4 << 20), 0, 4, 1)])
    encode([S.StoreEntry("c", "sym", b"\0" * (1 << 19), 0, 4, 1)])  # within the 1 MiB allowance


# ---------------------------------------------------------------- writer validation

@pytest.mark.parametrize("change, msg", [
    (lambda es: es.append(S.StoreEntry(es[0].name, "x", b"1", 0, 4, 1)), "duplicate entry name"),
    (lambda es: setattr(es[0], "cubin", b""), "empty cubin"),
    (lambda es: setattr(es[0], "num_warps", 0), "num_warps"),
    (lambda es: setattr(es[0], "num_warps", 64), "num_warps"),
    (lambda es: setattr(es[0], "num_ctas", 0), "num_ctas"),
    (lambda es: setattr(es[0], "global_scratch_align", 3), "global_scratch_align"),
    (lambda es: setattr(es[0], "shared", -1), "shared"),
    (lambda es: setattr(es[0], "shared", 1 << 32), "shared"),
    (lambda es: setattr(es[0], "name", "x" * 70000), "65535"),
    (lambda es: setattr(es[0], "symbol", ""), "empty kernel symbol"),
    (lambda es: es.clear(), "no entries"),
])
def test_writer_rejects(change, msg):
    es = sample_entries()
    change(es)
    with pytest.raises(S.StoreError, match=msg):
        encode(es)


def test_writer_rejects_bad_meta():
    with pytest.raises(S.StoreError, match="arch"):
        encode(arch=0)
    with pytest.raises(S.StoreError, match="kernel"):
        encode(kernel="")


# ---------------------------------------------------------------- corrupt files

def _raw_size_lie(delta):
    def f(d):
        return patch(d, 32, "<Q", struct.unpack_from("<Q", d, 32)[0] + delta)
    return f


def _flip(offset_from_header):
    def f(d):
        b = bytearray(d)
        b[S.HEADER_SIZE + offset_from_header] ^= 0x55
        return bytes(b)
    return f


FILE_CORRUPTIONS = [
    ("truncated_header", lambda d: d[:40], "truncated header"),
    ("empty_file", lambda d: b"", "truncated header"),
    ("truncated_payload", lambda d: d[:-7], "truncated payload"),
    ("trailing_bytes", lambda d: d + b"\0", "trailing bytes"),
    ("flipped_payload_byte", _flip(100), "payload checksum mismatch"),
    ("flipped_last_byte", _flip(-S.HEADER_SIZE - 1), "payload checksum mismatch"),
    ("wrong_magic", lambda d: b"AOTRIMG1" + d[8:], "bad magic"),
    ("wrong_version", lambda d: patch(d, 8, "<I", 1), "image store format 1, library ABI 1; this library reads"),
    ("wrong_abi", lambda d: patch(d, 48, "<I", 7), "image store format 2, library ABI 7; this library reads"),
    ("wrong_header_size", lambda d: patch(d, 12, "<I", 128), "header_size"),
    ("header_padding", lambda d: patch(d, 60, "<I", 1), "header padding"),
    ("arch_zero", lambda d: patch(d, 16, "<I", 0), "arch is 0"),
    ("entry_count_zero", lambda d: patch(d, 20, "<I", 0), "entry_count is 0"),
    ("raw_size_smaller", _raw_size_lie(-1), "more than raw_size"),
    ("raw_size_larger", _raw_size_lie(+1), "header says raw_size"),
    ("raw_size_huge", lambda d: patch(d, 32, "<Q", 1 << 40), "exceeds"),
    ("raw_size_ratio", lambda d: patch(d, 32, "<Q", 1 << 29), "times the"),
    ("entry_count_huge", lambda d: patch(d, 20, "<I", 1 << 20), "exceeds the limit of 65536"),
    ("entry_count_raw_size", lambda d: patch(d, 20, "<I", 60000), "cannot fit in raw_size"),
    ("payload_size_lie", lambda d: patch(d, 24, "<Q", 2**64 - 1), "truncated payload"),
    ("raw_crc", lambda d: patch(d, 44, "<I", struct.unpack_from("<I", d, 44)[0] ^ 1), "raw checksum mismatch"),
    ("entry_count_larger", lambda d: patch(d, 20, "<I", entry_count(d) + 1), None),
]


@pytest.mark.parametrize("name, corrupt, msg", FILE_CORRUPTIONS, ids=[c[0] for c in FILE_CORRUPTIONS])
def test_corrupt_file(tmp_path, name, corrupt, msg):
    path = tmp_path / "bad.aks"
    path.write_bytes(corrupt(encode()))
    with pytest.raises(S.StoreError) as ei:
        S.read_store(path)
    text = str(ei.value)
    assert str(path) in text  # names the file
    if msg:
        assert msg in text


def _dir_corruptions():
    """(name, fn(raw, lay) -> raw, msg): payload damage behind valid checksums."""
    def fixed(i, field, value):
        return lambda r, L: patch(r, L["fixed"][i] + 4 * field, "<I", value)

    def blob(i, field, value):
        return lambda r, L: patch(r, L["table"] + 16 * i + 8 * field, "<Q", value)

    return [
        ("blob_offset_shifted", blob(1, 0, 16 * 1000), "offset"),
        ("blob_offset_max", blob(0, 0, 2**64 - 1), "offset"),
        ("blob_size_zero", blob(0, 1, 0), "outside"),
        ("blob_size_huge", blob(2, 1, 2**63), "outside"),
        ("blob_size_short", blob(5, 1, 1), "after the last blob"),
        ("blob_index_high", fixed(0, 7, 99), "blob_index 99"),
        ("blob_index_max", fixed(3, 7, 2**32 - 1), "blob_index"),
        ("num_warps_zero", fixed(1, 1, 0), "num_warps"),
        ("align_not_pow2", fixed(2, 4, 6), "global_scratch_align"),
        ("blob_count_high", lambda r, L: patch(r, L["blob_count"], "<I", 7), "blob_count 7"),
        ("blob_count_huge", lambda r, L: patch(r, L["blob_count"], "<I", 2**32 - 1), "blob_count"),
        ("unsorted_names", lambda r, L: r.replace(b"dup_a", b"zup_a"), "not strictly sorted"),
        ("bad_utf8", lambda r, L: r.replace(b"attn_fwd", b"attn\xff\xfewd", 1), "UTF-8"),
        ("name_len_huge", lambda r, L: patch(r, 0, "<H", 0xFFFF), "truncated"),
        ("padding_nonzero", lambda r, L: patch(r, L["area"] - 1, "<B", 1)
         if L["area"] > L["table"] + 16 * L["nblobs"] else r.replace(b"dup_a", b"dup_\xff"), None),
        ("blob_padding_nonzero", lambda r, L: patch(
            r, L["area"] + struct.unpack_from("<Q", r, L["table"] + 8)[0], "<B", 1), "padding"),
        ("trailing_raw", lambda r, L: r + b"\0", "after the last blob"),
        ("truncated_raw", lambda r, L: r[:L["table"] + 5], "truncated"),
    ]


@pytest.mark.parametrize("name, corrupt, msg", _dir_corruptions(), ids=[c[0] for c in _dir_corruptions()])
def test_corrupt_directory(name, corrupt, msg):
    good = encode()
    raw = inflate(good)
    bad = rewrap(corrupt(raw, layout(raw, entry_count(good))), good)
    with pytest.raises(S.StoreError) as ei:
        S.decode_store(bad, "lbl.aks")
    assert "lbl.aks" in str(ei.value)
    if msg:
        assert msg in str(ei.value)
    # control: rewrapping the untouched payload is accepted
    S.decode_store(rewrap(raw, good))


def test_entry_count_cannot_fit():
    good = encode()
    with pytest.raises(S.StoreError, match="cannot fit"):
        S.decode_store(rewrap(inflate(good), good, entry_count_override=len(inflate(good)) // S.MIN_ENTRY_SIZE))


# ---------------------------------------------------------------- bombs and special files

@functools.lru_cache(maxsize=None)
def _xz_chunk(prefix: bytes, n: int) -> tuple:
    """One xz stream of `prefix` + zeros (n bytes in all), split into its block
    and its index record."""
    one = lzma.compress(prefix + bytes(n - len(prefix)), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64)
    backward = (struct.unpack_from("<I", one, len(one) - 8)[0] + 1) * 4
    index_start = len(one) - 12 - backward
    rec = one[index_start + 2:]  # after the index indicator and its record count (1)
    pos = 0
    for _ in range(2):  # the record: two varints (unpadded size, uncompressed size)
        while rec[pos] & 0x80:
            pos += 1
        pos += 1
    return one[:12], one[12:index_start], rec[:pos]


def xz_zero_bomb(raw_size: int, prefix: bytes = b"") -> bytes:
    """A valid xz stream that inflates to `prefix` + zeros, raw_size bytes in all
    (a multiple of 8 MiB), built quickly: xz blocks are independent, so one
    compressed 8 MiB block of zeros is repeated, and the index lists them all."""
    chunk = 8 << 20
    assert raw_size % chunk == 0 and raw_size > chunk
    head, first, first_rec = _xz_chunk(prefix, chunk)
    _, zero, zero_rec = _xz_chunk(b"", chunk)
    n = raw_size // chunk
    count, index = n, bytearray(b"\0")
    while count >= 0x80:
        index.append(count & 0x7F | 0x80)
        count >>= 7
    index.append(count)
    index += first_rec + zero_rec * (n - 1)
    index += b"\0" * (-len(index) % 4)
    index += struct.pack("<I", zlib.crc32(index))
    footer_body = struct.pack("<I", len(index) // 4 - 1) + head[6:8]  # backward size, stream flags
    footer = struct.pack("<I", zlib.crc32(footer_body)) + footer_body + b"YZ"
    return head + first + zero * (n - 1) + bytes(index) + footer


def bomb_store(raw_size: int, count: int = 1, raw_crc: bool = True) -> bytes:
    """A store whose payload really inflates to raw_size bytes (the meta strings,
    then zeros), with `count` claimed entries and a correct payload checksum
    (and raw checksum if raw_crc: a reader checks it only after inflating)."""
    meta = b"".join(struct.pack("<H", len(x)) + x for x in (b"attn_fwd", b"f", b"3.6.0"))
    payload = xz_zero_bomb(raw_size, meta)
    crc = 0
    if raw_crc:
        crc = zlib.crc32(meta + bytes((1 << 20) - len(meta)))
        zeros = bytes(1 << 20)
        for _ in range((raw_size >> 20) - 1):
            crc = zlib.crc32(zeros, crc)
    header = struct.pack("<8sIIIIQQIII", S.MAGIC, S.FORMAT_VERSION, S.HEADER_SIZE, 90, count, len(payload),
                         raw_size, zlib.crc32(payload), crc, S.ABI_VERSION)
    return header.ljust(S.HEADER_SIZE, b"\0") + payload


def test_bomb_store_is_valid_xz_with_right_checksums():
    store = bomb_store(16 << 20)
    assert len(store) < 10000
    raw = lzma.decompress(store[S.HEADER_SIZE:], format=lzma.FORMAT_XZ)
    assert len(raw) == 16 << 20 and raw.startswith(b"\x08\x00attn_fwd") and not any(raw[20:])
    assert zlib.crc32(raw) == struct.unpack_from("<I", store, 44)[0]


# Measured in a fresh interpreter: wall time of read_store and the process's
# peak RSS (VmHWM: ru_maxrss would include the forking parent's).
_MEASURE = r"""
import sys, time
from python import image_store as S
t = time.perf_counter()
try:
    S.read_store(sys.argv[1])
    print("ACCEPTED")
except S.StoreError as e:
    print("REJECTED", e)
seconds = time.perf_counter() - t
hwm = [line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:")][0]
print(seconds, hwm)
"""


# The entry-count bomb inflates to 64 MiB (valid meta, then zeros) and claims
# 1.8 M entries (~200 MB of directory); the inflate bomb is a 150 KB file that
# inflates to 1 GiB. Before the limits: ~4 s and 150 MB, 55 s and 2 GB.
BOMBS = [(64, ((64 << 20) - 20) // 36, True, "65536"), (1024, 1, False, "times the")]


@pytest.mark.parametrize("raw_mib, count, raw_crc, msg", BOMBS, ids=["entry_count_bomb", "inflate_bomb"])
def test_crafted_store_rejected_fast_and_small(tmp_path, raw_mib, count, raw_crc, msg):
    path = tmp_path / "bomb.aks"
    path.write_bytes(bomb_store(raw_mib << 20, count, raw_crc))
    assert path.stat().st_size < 200_000
    r = subprocess.run([sys.executable, "-c", _MEASURE, str(path)], capture_output=True, text=True, timeout=120,
                       env=REPO_ON_PATH)
    verdict, numbers = r.stdout.splitlines()
    seconds, maxrss_kib = float(numbers.split()[0]), int(numbers.split()[1])
    assert verdict.startswith("REJECTED") and msg in verdict, verdict
    assert seconds < 0.1 and maxrss_kib < 64 * 1024, (seconds, maxrss_kib)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_non_regular_file_refused_without_blocking(tmp_path, kind):
    if kind == "fifo":
        path = tmp_path / "f.aks"
        os.mkfifo(path)  # no writer: a blocking open() would wait forever
    elif kind == "directory":
        path = tmp_path
    else:
        path = Path("/dev/zero")  # endless: reading it would never finish
    r = subprocess.run([sys.executable, "-c", "import sys\nfrom python import image_store as S\n"
                        "try:\n    S.read_store(sys.argv[1])\nexcept S.StoreError as e:\n    print(e)",
                        str(path)], capture_output=True, text=True, timeout=10, env=REPO_ON_PATH)
    assert "not a regular file" in r.stdout, (r.stdout, r.stderr)


def test_missing_file(tmp_path):
    with pytest.raises(S.StoreError, match="cannot read"):
        S.read_store(tmp_path / "missing.aks")
    assert issubclass(S.StoreError, ValueError)


# ---------------------------------------------------------------- pack CLI

def _write_metas(tmp_path, entries):
    metas = []
    for i, e in enumerate(entries):
        d = tmp_path / "obj" / f"cfg{i}"
        d.mkdir(parents=True)
        (d / "k.cubin").write_bytes(e.cubin)
        meta = {"name": e.name, "symbol": e.symbol, "cubin": "k.cubin", "shared": e.shared,
                "num_warps": e.num_warps, "num_ctas": e.num_ctas,
                "global_scratch_size": e.global_scratch_size, "global_scratch_align": e.global_scratch_align,
                "profile_scratch_size": e.profile_scratch_size, "profile_scratch_align": e.profile_scratch_align,
                "extra_key_ignored": [1, 2]}
        if i == 0:  # absolute cubin path works too
            meta["cubin"] = str(d / "k.cubin")
        (d / "k.json").write_text(json.dumps(meta))
        metas.append(str(d / "k.json"))
    return metas


def _pack_args(out):
    return ["pack", "--out", str(out), "--arch", "90", "--kernel", STORE_META["kernel"],
            "--functional", STORE_META["functional"], "--triton-version", "3.6.0"]


def test_pack_cli(tmp_path):
    entries = sample_entries()
    metas = _write_metas(tmp_path, entries)
    out = tmp_path / "lib" / "sm_90" / "pack.aks"
    # as the ninja edge runs it, with the metas listed in a response file
    rsp = tmp_path / "metas.rsp"
    rsp.write_text("\n".join(reversed(metas)) + "\n")
    subprocess.run([sys.executable, str(REPO / "python" / "image_store.py"), *_pack_args(out), f"@{rsp}"],
                   check=True, cwd=tmp_path)
    assert out.read_bytes() == encode(entries)
    # in-process, metas on the command line
    out2 = tmp_path / "pack2.aks"
    assert S.main(_pack_args(out2) + metas) == 0
    assert out2.read_bytes() == out.read_bytes()


def test_pack_cli_errors(tmp_path, capsys):
    metas = _write_metas(tmp_path, sample_entries()[:2])
    meta = json.loads(Path(metas[1]).read_text())
    del meta["symbol"]
    Path(metas[1]).write_text(json.dumps(meta))
    assert S.main(_pack_args(tmp_path / "x.aks") + metas) == 1
    assert "missing keys ['symbol']" in capsys.readouterr().err
    Path(metas[1]).write_text(json.dumps(dict(meta, symbol="s", cubin="gone.cubin")))
    assert S.main(_pack_args(tmp_path / "x.aks") + metas) == 1
    assert "gone.cubin" in capsys.readouterr().err
    assert not (tmp_path / "x.aks").exists()


# ---------------------------------------------------------------- inspect CLI

def _inspect(*args):
    p = subprocess.run([sys.executable, str(REPO / "python" / "inspect_images.py"), *map(str, args)],
                       capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


def test_inspect_prefix_tree(tmp_path):
    images = tmp_path / "prefix" / "lib" / "aotriton.images"
    es = sample_entries()
    S.write_store(images / "sm_90" / "attn_fwd" / "a.aks", entries=es, **STORE_META)
    S.write_store(images / "sm_80" / "attn_fwd" / "a.aks", entries=es[:2], **dict(STORE_META, arch=80))
    S.write_store(images / "sm_90" / "moe" / "m.store", entries=es[5:], **dict(STORE_META, kernel="moe"))
    (images / "README").write_text("not a store, skipped")
    rc, out, err = _inspect(tmp_path / "prefix", "--json")
    assert rc == 0, err
    rep = json.loads(out)
    assert [f["path"] for f in rep["files"]] == ["sm_80/attn_fwd/a.aks", "sm_90/attn_fwd/a.aks", "sm_90/moe/m.store"]
    f90 = rep["files"][1]
    assert (f90["arch"], f90["kernel"], f90["entries"], f90["unique_cubins"]) == (90, "attn_fwd", 7, 6)
    assert f90["compressed_bytes"] == (images / "sm_90/attn_fwd/a.aks").stat().st_size
    assert f90["raw_bytes"] == len(inflate((images / "sm_90/attn_fwd/a.aks").read_bytes()))
    assert rep["by_kernel"]["attn_fwd"]["files"] == 2 and rep["by_kernel"]["moe"]["unique_cubins"] == 1
    assert rep["by_arch"]["90"]["entries"] == 9 and rep["by_arch"]["80"]["entries"] == 2
    t = rep["total"]
    assert (t["files"], t["entries"]) == (3, 11)
    assert t["raw_bytes"] == sum(f["raw_bytes"] for f in rep["files"])
    assert abs(t["ratio"] - t["compressed_bytes"] / t["raw_bytes"]) < 1e-3
    rc, out, err = _inspect(images)  # text mode on the directory itself
    assert rc == 0 and "per kernel" in out and "per arch" in out and "sm_90" in out


def test_inspect_reports_corrupt_and_keeps_going(tmp_path):
    d = tmp_path / "images"
    S.write_store(d / "good.aks", entries=sample_entries(), **STORE_META)
    (d / "trunc.aks").write_bytes((d / "good.aks").read_bytes()[:100])
    (d / "magicless.aks").write_bytes(b"garbage" * 20)
    rc, out, err = _inspect(d, "--json")
    assert rc == 1
    rep = json.loads(out)
    assert [f["path"] for f in rep["files"]] == ["good.aks"]
    assert sorted(e["path"] for e in rep["errors"]) == ["magicless.aks", "trunc.aks"]
    assert "trunc.aks: truncated payload" in err and "magicless.aks: bad magic" in err
    rc, out, err = _inspect(d / "good.aks")  # a single file
    assert rc == 0 and "attn_fwd" in out
    rc, out, err = _inspect(tmp_path / "nowhere")
    assert rc == 1 and "does not exist" in err
