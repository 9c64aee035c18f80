"""The C++ image store reader (v2src/image_store.cc) through test/cpp/store_check:
valid files, every corruption of test_image_store.py, and ~300 fuzzed files,
each checked against the Python reader (same accept/reject, same contents) and
for clean `ERROR ...` lines without crashes or sanitizer reports.

store_check is taken from $AOTRITON_BUILD_DIR (default <repo>/build) as
test/store_check or store_check; otherwise it is compiled here with g++, with
-fsanitize=address,undefined when the toolchain supports it."""
import os
import random
import re
import shutil
import struct
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
import test_image_store as T  # noqa: E402  (fixtures and corruption tables)

S = T.S
SAN_ENV = {"ASAN_OPTIONS": "exitcode=99:detect_leaks=1:abort_on_error=0",
           "UBSAN_OPTIONS": "halt_on_error=1:exitcode=98:print_stacktrace=1"}
ERROR_LINE = re.compile(rb"^ERROR (corrupt kernel image|kernel image not found|incompatible kernel image): (.+)\n\Z",
                        re.S)


# ---------------------------------------------------------------- the binary

def _run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def configure_version_h(text: str) -> str:
    """What CMake's configure_file makes of version.h.in, for version 0.1.0
    (any other @VAR@ becomes 0 or 1 by its name)."""
    values = {"PROJECT_VERSION": "0.1.0", "PROJECT_VERSION_MINOR": "1"}

    def sub(m):
        name = m.group(1)
        return values.get(name, "1" if name.endswith("ABI_VERSION") else "0")
    return re.sub(r"@([A-Za-z0-9_]+)@", sub, text)


def _compile(out: Path) -> Path:
    gxx = shutil.which("g++") or shutil.which("c++")
    if gxx is None:
        pytest.skip("no g++ to build store_check")
    probe = out / "probe.cc"
    probe.write_text("#include <lzma.h>\nint main() { return int(lzma_crc32(nullptr, 0, 0)); }\n")
    if _run([gxx, str(probe), "-llzma", "-o", str(out / "probe")]).returncode != 0:
        pytest.skip("lzma.h / liblzma not available to build store_check")
    gen = out / "gen" / "aotriton"
    gen.mkdir(parents=True)
    (gen / "version.h").write_text(configure_version_h((REPO / "include/aotriton/version.h.in").read_text()))
    sources = ["v2src/image_store.cc", "v2src/error.cc", "test/cpp/store_check.cc"]
    base = [gxx, "-std=c++17", "-O1", "-g", "-Wall", "-Wextra", "-Werror",
            f"-I{REPO / 'include'}", f"-I{out / 'gen'}", f"-I{REPO / 'v2src'}"]
    errors = ""
    for san in (["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all"], []):
        # compile the three files in parallel (2-core CI), then link
        objs = [out / (Path(s).stem + ".o") for s in sources]
        procs = [subprocess.Popen(base + san + ["-c", str(REPO / s), "-o", str(o)], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for s, o in zip(sources, objs)]
        outs = [p.communicate()[0] for p in procs]
        if all(p.returncode == 0 for p in procs):
            exe = out / "store_check"
            link = _run([gxx] + san + [str(o) for o in objs] + ["-llzma", "-o", str(exe)])
            if link.returncode == 0:
                return exe
            outs.append(link.stdout)
        errors += "".join(outs)
        if "error:" in errors and "sanitize" not in errors:
            break  # a real compile error, not a missing sanitizer runtime
    pytest.fail(f"cannot build store_check:\n{errors}")


@pytest.fixture(scope="module")
def store_check(tmp_path_factory):
    build = Path(os.environ.get("AOTRITON_BUILD_DIR", REPO / "build"))
    for cand in (build / "test" / "store_check", build / "store_check"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return cand
    return _compile(tmp_path_factory.mktemp("store_check"))


def run_check(exe, path, *extra):
    env = dict(os.environ, **SAN_ENV)
    p = subprocess.run([str(exe), *map(str, (path, *extra))], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=60)
    assert p.returncode in (0, 1), f"{path}: exit {p.returncode} (crash or sanitizer)\n{p.stdout!r}\n{p.stderr!r}"
    assert b"Sanitizer" not in p.stderr and b"runtime error" not in p.stderr, p.stderr.decode(errors="replace")
    return p.returncode, p.stdout


def expected_output(st) -> bytes:
    """What store_check prints for a store the Python reader accepted (printf %s
    stops at an embedded NUL)."""
    def s(text):
        return text.encode().split(b"\0")[0]
    lines = [b"OK %d arch=%d kernel=%s functional=%s triton=%s blobs=%d raw=%d" % (
        len(st.entries), st.arch, s(st.kernel), s(st.functional), s(st.triton_version), st.blob_count, st.raw_size)]
    for e in st.entries:
        lines.append(b"%s %s %d %d %d %d %08x" % (s(e.name), s(e.symbol), e.shared, e.num_warps, e.num_ctas,
                                                  len(e.cubin), zlib.crc32(e.cubin)))
    return b"\n".join(lines) + b"\n"


def assert_error(rc, out, path, msg=None, status=b"corrupt kernel image"):
    m = ERROR_LINE.match(out)
    assert rc == 1 and m, out
    assert m.group(1) in ((status,) if isinstance(status, bytes) else status), out
    assert str(path).encode() in m.group(2), out  # the message names the file
    if msg:
        assert msg.encode() in m.group(2), out


# ---------------------------------------------------------------- fixed cases

def test_valid_store(store_check, tmp_path):
    path = tmp_path / "good.aks"
    S.write_store(path, entries=T.sample_entries(), **T.STORE_META)
    rc, out = run_check(store_check, path)
    assert rc == 0
    assert out == expected_output(S.read_store(path))
    # lookup by name (binary search), including the deduplicated pair
    st = S.read_store(path)
    for e in st.entries:
        rc, out = run_check(store_check, path, e.name)
        assert rc == 0
        assert out.splitlines()[1] == expected_output(st).splitlines()[1 + st.entries.index(e)]
    rc, out = run_check(store_check, path, "BLOCK_M=1")
    assert rc == 1 and out.startswith(b"ERROR not in this build: ")


def test_single_entry_store(store_check, tmp_path):
    path = tmp_path / "one.aks"
    S.write_store(path, arch=80, kernel="k", functional="", triton_version="",
                  entries=[S.StoreEntry("c", "sym", b"x", 0, 1, 1)])
    rc, out = run_check(store_check, path)
    assert rc == 0 and out == expected_output(S.read_store(path))


def test_missing_and_not_a_file(store_check, tmp_path):
    rc, out = run_check(store_check, tmp_path / "missing.aks")
    assert_error(rc, out, tmp_path / "missing.aks", "No such file", status=b"kernel image not found")
    rc, out = run_check(store_check, tmp_path)
    assert_error(rc, out, tmp_path, "not a regular file", status=b"kernel image not found")


@pytest.mark.parametrize("name, corrupt, msg", T.FILE_CORRUPTIONS, ids=[c[0] for c in T.FILE_CORRUPTIONS])
def test_corrupt_file(store_check, tmp_path, name, corrupt, msg):
    path = tmp_path / "bad.aks"
    path.write_bytes(corrupt(T.encode()))
    status = b"incompatible kernel image" if name in ("wrong_version", "wrong_abi") else b"corrupt kernel image"
    assert_error(*run_check(store_check, path), path, msg, status=status)


@pytest.mark.parametrize("raw_mib, count, raw_crc, msg", T.BOMBS, ids=["entry_count_bomb", "inflate_bomb"])
def test_crafted_store_rejected_fast_and_small(store_check, tmp_path, raw_mib, count, raw_crc, msg):
    path = tmp_path / "bomb.aks"
    path.write_bytes(T.bomb_store(raw_mib << 20, count, raw_crc))
    rc, out = run_check(store_check, "--stats", path)
    error, stats = out.splitlines()
    assert_error(rc, error + b"\n", path, msg)
    seconds, peak_kib = float(stats.split()[1]), int(stats.split()[2])
    assert seconds < 0.1 and 0 < peak_kib < 64 * 1024, (seconds, peak_kib)


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_non_regular_file_refused_without_blocking(store_check, tmp_path, kind):
    path = {"directory": tmp_path, "device": Path("/dev/zero")}.get(kind, tmp_path / "f.aks")
    if kind == "fifo":
        os.mkfifo(path)  # no writer: a blocking open() waits forever (run_check's timeout fails the test)
    rc, out = run_check(store_check, path)
    what = {"fifo": "a FIFO", "directory": "a directory", "device": "a device"}[kind]
    assert_error(rc, out, path, f"not a regular file ({what})", status=b"kernel image not found")


@pytest.mark.parametrize("name, corrupt, msg", T._dir_corruptions(), ids=[c[0] for c in T._dir_corruptions()])
def test_corrupt_directory(store_check, tmp_path, name, corrupt, msg):
    good = T.encode()
    raw = T.inflate(good)
    path = tmp_path / "bad.aks"
    path.write_bytes(T.rewrap(corrupt(raw, T.layout(raw, T.entry_count(good))), good))
    assert_error(*run_check(store_check, path), path, msg)


def test_entry_count_cannot_fit(store_check, tmp_path):
    good = T.encode()
    path = tmp_path / "bad.aks"
    path.write_bytes(T.rewrap(T.inflate(good), good, entry_count_override=len(T.inflate(good)) // S.MIN_ENTRY_SIZE))
    assert_error(*run_check(store_check, path), path, "cannot fit")


# ---------------------------------------------------------------- fuzzing

INTERESTING = [0, 1, 2, 15, 16, 17, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 2**31 - 1, 2**31, 2**32 - 1,
               2**32, 2**63, 2**64 - 1]


def _value(rng, base=None, bits=64):
    v = rng.choice(INTERESTING + ([base - 1, base + 1, base * 2] if base else []) + [rng.getrandbits(bits)])
    return v % (1 << bits)


def _mutate_bytes(rng, buf: bytes, header_bias: bool) -> bytes:
    b = bytearray(buf)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        if not b:
            break
        pos = rng.randrange(min(len(b), 64)) if header_bias and rng.random() < 0.5 else rng.randrange(len(b))
        if op < 0.4:
            b[pos] ^= 1 << rng.randrange(8)
        elif op < 0.6:
            b[pos] = rng.randrange(256)
        elif op < 0.75:
            width = rng.choice([2, 4, 8])
            if pos + width <= len(b):
                b[pos:pos + width] = _value(rng, bits=8 * width).to_bytes(width, "little")
        elif op < 0.85:
            del b[pos:pos + rng.randint(1, 32)]
        elif op < 0.95:
            b[pos:pos] = rng.randbytes(rng.randint(1, 32))
        else:
            del b[rng.randrange(len(b) + 1):]
    return bytes(b)


HEADER_FIELDS = [(8, "<I"), (12, "<I"), (16, "<I"), (20, "<I"), (24, "<Q"), (32, "<Q"), (40, "<I"), (44, "<I")]


def _mutate_header(rng, data: bytes) -> bytes:
    for _ in range(rng.randint(1, 2)):
        off, fmt = rng.choice(HEADER_FIELDS)
        bits = 8 * struct.calcsize(fmt)
        data = T.patch(data, off, fmt, _value(rng, struct.unpack_from(fmt, data, off)[0], bits))
    return data


def _mutate_raw(rng, data: bytes) -> bytes:
    """Damage behind valid checksums: reaches the directory parser."""
    raw = T.inflate(data)
    lay = T.layout(raw, T.entry_count(data))
    count = None
    for _ in range(rng.randint(1, 3)):
        try:
            raw, count = _raw_op(rng, raw, lay, data, count)
        except struct.error:  # an earlier op moved the field out of range
            pass
    return T.rewrap(raw, data, count)


def _raw_op(rng, raw, lay, data, count):
    """One damage op on the raw payload; returns (raw, entry_count override)."""
    op = rng.random()
    if op < 0.3:  # a directory field
        i = rng.randrange(len(lay["fixed"]))
        raw = T.patch(raw, lay["fixed"][i] + 4 * rng.randrange(8), "<I", _value(rng, bits=32))
    elif op < 0.5:  # a blob table field or the blob count
        if rng.random() < 0.2:
            raw = T.patch(raw, lay["blob_count"], "<I", _value(rng, lay["nblobs"], 32))
        else:
            i = rng.randrange(lay["nblobs"])
            pos = lay["table"] + 16 * i + 8 * rng.randrange(2)
            raw = T.patch(raw, pos, "<Q", _value(rng, struct.unpack_from("<Q", raw, pos)[0]))
    elif op < 0.6:  # a string length
        pos = rng.choice(lay["strings"])
        raw = T.patch(raw, pos, "<H", _value(rng, struct.unpack_from("<H", raw, pos)[0], 16))
    elif op < 0.7:
        count = _value(rng, T.entry_count(data), 32)
    else:
        raw = _mutate_bytes(rng, raw, header_bias=False)
    return raw, count


def _fuzz_cases():
    rng = random.Random(20240601)
    bases = [T.encode(), T.encode(T.sample_entries(3)[:2], arch=80, kernel="moe", functional="")]
    cases = []
    for i in range(300):
        base = bases[i % 2]
        kind = i % 3
        if kind == 0:
            data = _mutate_bytes(rng, base, header_bias=True)
        elif kind == 1:
            data = _mutate_header(rng, base)
        else:
            data = _mutate_raw(rng, base)
        cases.append(data)
    return cases


def test_fuzz_matches_python_reader(store_check, tmp_path):
    cases = _fuzz_cases()
    paths = []
    for i, data in enumerate(cases):
        p = tmp_path / f"fuzz{i:03d}.aks"
        p.write_bytes(data)
        paths.append(p)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: run_check(store_check, p), paths))
    accepted = rejected = 0
    for p, (rc, out) in zip(paths, results):
        try:
            st = S.read_store(p)
        except S.StoreError:
            st = None
        if st is None:
            assert_error(rc, out, p, status=(b"corrupt kernel image", b"incompatible kernel image"))
            rejected += 1
        else:
            assert rc == 0, f"{p}: Python accepts, C++ says {out!r}"
            assert out == expected_output(st), p
            accepted += 1
    # the fuzzer must exercise both outcomes, and most damage must be caught
    print(f"fuzz: {accepted} accepted, {rejected} rejected")
    assert rejected > 200 and accepted > 0, (accepted, rejected)
