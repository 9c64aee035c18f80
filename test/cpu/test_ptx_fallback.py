"""PTX fallback at build time (-DAOTRITON_PTX_FALLBACK=ON): the generator
keeps PTX only for the newest arch below 90 (Triton's sm_90a/sm_100a PTX is
arch-specific), the compile step writes it, and the pack step stores it as
"<config>@ptx", NUL-terminated for cuModuleLoadData. The runtime side runs in
test/gpu/test_ptx_fallback_gpu.py."""
import json
import subprocess
import sys

from testenv import REPO

from python import generate, image_store  # noqa: E402


def test_ptx_arch_is_newest_portable():
    assert generate.ptx_arch([80, 90]) == 80
    assert generate.ptx_arch([80, 86, 89, 90, 100]) == 89
    assert generate.ptx_arch([90, 100]) is None


def test_ninja_keeps_ptx_for_that_arch_only(tmp_path):
    subprocess.run([sys.executable, str(REPO / "python/generate.py"), "ninja", "--build-dir", str(tmp_path),
                    "--profile", "minimal", "--archs", "80;90", "--ptx-fallback"], check=True, capture_output=True)
    plan = json.loads((tmp_path / "manifest.json").read_text())
    assert plan["ptx_arch"] == 80
    ninja = (tmp_path / "build.ninja").read_text()
    edges = [block for block in ninja.split("\nbuild ") if block.startswith("cubins/")]
    assert edges and all(("ptx_flag = --ptx" in e) == e.startswith("cubins/sm_80/") for e in edges)
    assert all((".ptx:" in e.splitlines()[0]) == e.startswith("cubins/sm_80/") for e in edges)
    assert "kPtxFallbackArch = 80;" in (tmp_path / "gen/build_info.cc").read_text()


def test_compile_and_pack_store_the_ptx(tmp_path):
    """Through the generated build.ninja (its real compile command line)."""
    subprocess.run([sys.executable, str(REPO / "python/generate.py"), "ninja", "--build-dir", str(tmp_path),
                    "--profile", "minimal", "--archs", "80", "--ptx-fallback"], check=True, capture_output=True)
    image = "images/sm_80/act_and_mul/dtype-fp16__ACTIVATION-0.aks"
    subprocess.run(["ninja", "-C", str(tmp_path), image], check=True, capture_output=True)
    store = tmp_path / image
    stem = tmp_path / "cubins/sm_80/act_and_mul/dtype-fp16__ACTIVATION-0/BLOCK-1024__num_stages-1__num_warps-4.cubin"
    s = image_store.read_store(store)
    names = [e.name for e in s.entries]
    cfg = json.loads(stem.with_suffix(".json").read_text())["name"]
    assert names == sorted([cfg, cfg + image_store.PTX_SUFFIX])
    cubin, ptx = s.find(cfg), s.find(cfg + image_store.PTX_SUFFIX)
    assert cubin.cubin[:4] == b"\x7fELF"
    assert ptx.cubin.endswith(b"\0") and b"\0" not in ptx.cubin[:-1]
    assert b".target sm_80" in ptx.cubin and b".entry " + cubin.symbol.encode() in ptx.cubin
    assert (ptx.symbol, ptx.num_warps, ptx.shared) == (cubin.symbol, cubin.num_warps, cubin.shared)
