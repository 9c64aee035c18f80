"""The release tarball (tools/release.sh), built the way CI builds it (ci
profile, sm_90 only, the main build's Triton cache): layout, MANIFEST hashes,
a consumer project linking it statically and as a shared library, and byte
reproducibility against a second build from a copy of the sources in another
directory with a fresh Triton cache (every cubin compiled again)."""
import hashlib
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pkg_helpers import lzma_args, run, triton_cache
from testenv import REPO

pytestmark = pytest.mark.packaging
ARCHS = "90"
# ci in CI; AOTRITON_PACKAGING_PROFILE=minimal (3 cubins) for a quick local run.
PROFILE = os.environ.get("AOTRITON_PACKAGING_PROFILE", "ci")
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the same for both builds: the sources may be uncommitted
EPOCH = "1700000000"


def release(src: Path, work: Path, cache: str) -> Path:
    env = {**os.environ, "AOTRITON_PROFILE": PROFILE, "AOTRITON_TARGET_ARCH": ARCHS, "BUILD_DIR": str(work / "build"),
           "OUT_DIR": str(work / "dist"), "AOTRITON_TRITON_CACHE_DIR": cache, "PYTHON": sys.executable,
           "AOTRITON_COMMIT": COMMIT, "SOURCE_DATE_EPOCH": EPOCH, "CMAKE_ARGS": " ".join(lzma_args())}
    t0 = time.time()
    run(["bash", src / "tools/release.sh"], env=env)
    print(f"release build in {src}: {time.time() - t0:.0f} s")
    (tarball,) = (work / "dist").glob("*.tar.xz")
    return tarball


@pytest.fixture(scope="module")
def tarball(build_dir, tmp_path_factory):
    return release(REPO, tmp_path_factory.mktemp("rel1"), triton_cache(build_dir))


@pytest.fixture(scope="module")
def unpacked(tarball, tmp_path_factory):
    dest = tmp_path_factory.mktemp("unpack")
    with tarfile.open(tarball) as t:
        t.extractall(dest, filter="tar")
    (top,) = dest.iterdir()
    return top


def parse_manifest(text):
    head, files = text.split("files:\n")
    facts = dict(line.split(": ", 1) for line in head.splitlines())
    hashes = dict(reversed(line.split("  ", 1)) for line in files.splitlines())
    return facts, hashes


def test_name_and_layout(tarball, unpacked):
    assert re.fullmatch(rf"aotriton-0\.1\.0-cuda\d+\.\d+-sm90-{PROFILE}\.tar\.xz", tarball.name), tarball.name
    assert unpacked.name == tarball.name[:-len(".tar.xz")]
    for rel in ("LICENSE", "MANIFEST", "lib/libaotriton.a", "lib/libaotriton.so", "include/aotriton/flash.h",
                "include/aotriton/version.h", "lib/cmake/aotriton/aotritonConfig.cmake",
                "lib/python/aotriton/__init__.py", "lib/python/aotriton/_build_info.py"):
        assert (unpacked / rel).exists(), rel
    assert list((unpacked / "lib/python").glob("pyaotriton*.so"))
    # The torch C++ fast path is tied to one torch build: never in a release.
    assert not list((unpacked / "lib/python").glob("_aotriton_torch*"))
    assert list((unpacked / "lib/aotriton.images/sm_90").rglob("*.aks"))
    assert not (unpacked / "lib/aotriton.images/sm_80").exists()


def test_manifest_facts_and_hashes(unpacked):
    facts, hashes = parse_manifest((unpacked / "MANIFEST").read_text())
    assert facts["version"] == "0.1.0" and facts["profile"] == PROFILE and facts["archs"] == ARCHS
    assert facts["abi_version"] == "1" and facts["commit"] == COMMIT
    from python import image_store
    assert facts["image_format_version"] == str(image_store.FORMAT_VERSION)
    import triton
    assert facts["triton_version"] == triton.__version__
    on_disk = sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*")
                     if p.is_file() and not p.is_symlink() and p.name != "MANIFEST")
    assert sorted(hashes) == on_disk  # every file listed, nothing listed that is not there
    for rel, digest in hashes.items():
        assert hashlib.sha256((unpacked / rel).read_bytes()).hexdigest() == digest, rel


def test_tar_entries_are_normalised(tarball):
    with tarfile.open(tarball) as t:
        members = t.getmembers()
    names = [m.name for m in members]
    top = names[0]
    assert names[1] == f"{top}/MANIFEST" and names[2:] == sorted(names[2:])
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {m.mtime for m in members} == {int(EPOCH)}


@pytest.mark.parametrize("mode", ["static", "shared"])
def test_consumer_against_tarball(unpacked, tmp_path, mode):
    run(["cmake", "-S", REPO / "test/consumer", "-B", tmp_path, "-G", "Ninja", f"-DCMAKE_PREFIX_PATH={unpacked}",
         f"-DAOTRITON_CONSUMER_MODE={mode}", *lzma_args()])
    run(["cmake", "--build", tmp_path])
    r = run([tmp_path / "consumer"])
    assert f"profile {PROFILE}, archs 90" in r.stdout and "silu_and_mul(empty): success" in r.stdout
    needed = run(["readelf", "-d", tmp_path / "consumer"]).stdout
    assert ("libaotriton.so" in needed) == (mode == "shared")


def test_shared_library_exports_only_the_api(unpacked):
    so = unpacked / "lib/libaotriton.so"
    syms = run(["nm", "-D", "--defined-only", "--demangle", so]).stdout.split("\n")
    names = [line.split(" ", 2)[2] for line in syms if line.count(" ") >= 2]
    assert names and any(n.startswith("aotriton::v1::flash::attn_fwd") for n in names)
    leaked = [n for n in names if not n.startswith(("aotriton::", "aotriton_"))]
    assert not leaked, leaked[:20]


@pytest.fixture(scope="module")
def copied_sources(tmp_path_factory):
    """The sources (tracked and untracked, not ignored) copied to another directory."""
    src = tmp_path_factory.mktemp("rel2") / "src"
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO, check=True,
                           capture_output=True).stdout.split(b"\0")
    for f in filter(None, files):
        rel = f.decode()
        if (REPO / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((REPO / rel).read_bytes())
            os.chmod(src / rel, os.stat(REPO / rel).st_mode)
    return src


def test_reproducible_in_another_directory(tarball, copied_sources, build_dir):
    """Same sources copied elsewhere: byte-identical images and tarball. The
    Triton cache is the first build's (keyed by source text, not location):
    whether a cubin itself depends on where it was compiled is the next test,
    one cubin per kernel compiled afresh, instead of every cubin again (that
    doubled this test's time, ~400 s of a CI run)."""
    work = copied_sources.parent
    second = release(copied_sources, work, triton_cache(build_dir))
    images1 = tarball.parents[1] / "build/kernels/images"
    images2 = work / "build/kernels/images"
    stores = sorted(p.relative_to(images1) for p in images1.rglob("*.aks"))
    assert stores == sorted(p.relative_to(images2) for p in images2.rglob("*.aks"))
    differ = [s for s in stores if (images1 / s).read_bytes() != (images2 / s).read_bytes()]
    assert not differ, differ[:10]
    assert second.name == tarball.name
    assert second.read_bytes() == tarball.read_bytes()


def test_cubins_do_not_depend_on_the_directory(tarball, copied_sources, tmp_path):
    """The first cubin of every kernel in the release build, compiled again from
    the copied sources with a fresh Triton cache (the build's own compile
    command, paths moved): byte-identical, line table included."""
    kdir = tarball.parents[1] / "build/kernels"
    commands = run(["ninja", "-C", kdir, "-t", "commands"]).stdout.splitlines()
    first = {}
    for cmd in commands:
        m = re.search(r" --kernel (\S+) .* --out (\S+\.cubin)", cmd)
        if m and m.group(1) not in first:
            first[m.group(1)] = (cmd, m.group(2))
    assert len(first) > 10, sorted(first)
    jobs = []
    for kernel, (cmd, out) in sorted(first.items()):
        moved = cmd.replace(f"{REPO}/python/", f"{copied_sources}/python/")
        moved = re.sub(r"TRITON_CACHE_DIR=\S+", f"TRITON_CACHE_DIR={tmp_path / 'cache'}", moved)
        moved = moved.replace(f"--out {out}", f"--out {tmp_path / kernel}.cubin")
        assert f"{copied_sources}/python/compile_" in moved, moved
        jobs.append((kernel, out, subprocess.Popen(["bash", "-c", moved], cwd=tmp_path, stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT, text=True)))
        while sum(j[2].poll() is None for j in jobs) >= (os.cpu_count() or 2):
            time.sleep(0.2)
    differ = []
    for kernel, out, proc in jobs:
        log = proc.communicate()[0]
        assert proc.returncode == 0, f"{kernel}: {log}"
        if (tmp_path / f"{kernel}.cubin").read_bytes() != (kdir / out).read_bytes():
            differ.append(kernel)
    assert not differ, differ
