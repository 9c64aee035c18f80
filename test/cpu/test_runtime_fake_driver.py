"""The C++ runtime against a stand-in CUDA driver (test/cpp/fake_libcuda.cc via
AOTRITON_LIBCUDA), driven by test/cpp/runtime_fake_check.cc: context
recreation, failed pushes, module leaks, remembered store failures, and
multi-kernel operators that resolve every kernel before launching."""
import dataclasses
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

LINE = re.compile(r"^(\w+): (.*?) \| (.*) \| loads=(-?\d+) unloads=(-?\d+) live=(-?\d+) launches=(-?\d+)$")


def _run(build_dir, *args, **env):
    exe, fake = build_dir / "test/runtime_fake_check", build_dir / "test/libfakecuda.so"
    if not exe.exists() or not fake.exists():
        pytest.fail(f"{exe} / {fake} missing: build the test programs (ninja -C {build_dir})")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "AOTRITON_LIBCUDA": str(fake), "FAKECUDA_CC": "90", **env})
    assert r.returncode == 0, r.stderr
    out = {}
    for line in r.stdout.splitlines():
        m = LINE.match(line)
        if m:
            out[m.group(1)] = dict(status=m.group(2), message=m.group(3), loads=int(m.group(4)),
                                   unloads=int(m.group(5)), live=int(m.group(6)), launches=int(m.group(7)))
        else:
            k, v = line.split(": ", 1)
            out[k] = v
    return out


def _images(build_dir):
    return build_dir / "kernels" / "images"


def _linked_copy(src: Path, dst: Path, skip=()):
    """dst mirrors src with symlinks per store, except the kernels in `skip`."""
    for p in sorted(src.rglob("*.aks")):
        rel = p.relative_to(src)
        if rel.parts[1] in skip:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        (dst / rel).symlink_to(p)
    return dst


def test_runtime_with_stand_in_driver(build_dir, tmp_path):
    images = _images(build_dir)
    corrupt_dir = _linked_copy(images, tmp_path / "corrupt")
    victim = corrupt_dir / "sm_90/act_and_mul/dtype-fp32__ACTIVATION-0.aks"
    good = victim.read_bytes()
    victim.unlink()
    victim.write_bytes(good[:-10])  # truncated: corrupt
    spare = tmp_path / "good.aks"
    spare.write_bytes(good)
    out = _run(build_dir, "runtime", corrupt_dir, victim, spare, AOTRITON_IMAGE_DIR=str(images))

    first, second = out["first_call"], out["second_call"]
    assert first["status"] == "success" and (first["loads"], first["launches"]) == (1, 1), first
    assert second["status"] == "success" and (second["loads"], second["launches"]) == (0, 1), second
    # Same CUcontext handle, new context: the module is loaded again, the launch works.
    rec = out["recreated_context"]
    assert rec["status"] == "success" and (rec["loads"], rec["launches"]) == (1, 1), rec
    assert out["after_recreation"]["loads"] == 0 and out["after_recreation"]["launches"] == 1

    # A failed push is reported, and nothing is loaded into the wrong context.
    push = out["push_fails"]
    assert push["status"] == "CUDA driver error" and "cuCtxPushCurrent" in push["message"], push
    assert (push["loads"], push["launches"]) == (0, 0), push
    ok = out["push_ok"]
    assert ok["status"] == "success" and (ok["loads"], ok["launches"]) == (1, 1), ok

    # 1000 failing cuModuleGetFunction calls: every module loaded is unloaded.
    gf = out["get_function_fails_1000"]
    assert gf["status"] == "CUDA driver error" and "cuModuleGetFunction" in gf["message"], gf
    assert gf["loads"] == 1000 and gf["unloads"] == 1000 and gf["live"] == 0, gf

    # A corrupt store fails once, then its failure is remembered (fast, same
    # message, the repaired file is not read) until set_image_dir().
    c1, c2 = out["corrupt_first"], out["corrupt_remembered"]
    assert c1["status"] == "corrupt kernel image" and str(victim) in c1["message"], c1
    assert c2["status"] == c1["status"] and c2["message"] == c1["message"], (c1, c2)
    assert float(out["corrupt_1000_ms"]) < 200, out["corrupt_1000_ms"]
    retried = out["corrupt_retried_after_set_image_dir"]
    assert retried["status"] == "success" and retried["loads"] == 1, retried


def test_context_recreation_without_ctx_id(build_dir):
    # A driver without cuCtxGetId: the first launch after the recreation fails
    # clearly, the next one reloads the module and works.
    out = _run(build_dir, "fallback", AOTRITON_IMAGE_DIR=str(_images(build_dir)), FAKECUDA_NO_CTX_ID="1")
    assert out["first_call"]["status"] == "success"
    rec = out["recreated_context"]
    assert rec["status"] == "CUDA driver error" and "context that is gone" in rec["message"], rec
    after = out["after_recreation"]
    assert after["status"] == "success" and (after["loads"], after["launches"]) == (1, 1), after


def test_multi_kernel_operators_launch_nothing_when_a_kernel_is_missing(build_dir, tmp_path):
    images = _images(build_dir)
    no_dq = _linked_copy(images, tmp_path / "no_dq", skip=("bwd_dq",))
    no_sum = _linked_copy(images, tmp_path / "no_sum", skip=("moe_sum",))
    no_aq = _linked_copy(images, tmp_path / "no_aq", skip=("act_and_mul_group_quant_fp8",))
    # The Triton backward (AOTRITON_FLASH_HOPPER=fwd): the sm_90 one encodes TMA descriptors, which the
    # stand-in driver cannot (test_sm90_backward_route_launches_nothing_without_tma below).
    out = _run(build_dir, "resolve_first", no_dq, no_sum, no_aq, images, AOTRITON_FLASH_HOPPER="fwd")
    for name, kernel in (("attn_bwd_missing_dq", "bwd_dq"), ("fused_experts_missing_moe_sum", "moe_sum"),
                         ("fused_experts_fp8_block_missing_act_quant", "act_and_mul_group_quant_fp8")):
        r = out[name]
        assert r["status"] == "kernel image not found" and f"/{kernel}/" in r["message"], r
        assert r["launches"] == 0, r  # no output partially written
    # control: with every image present the same calls launch all their kernels
    assert out["attn_bwd_complete"]["status"] == "success" and out["attn_bwd_complete"]["launches"] == 3
    fe = out["fused_experts_complete"]
    assert fe["status"] == "success" and fe["launches"] >= 5, fe
    # 128x128 block scales: the activation and GEMM2's quantization run as one kernel, and
    # moe_sum skips dropped slots (no zeroing launch): six launches
    fp8 = out["fused_experts_fp8_block"]
    assert fp8["status"] == "success" and fp8["launches"] == 6, fp8
    # dynamic per-tensor scales at decode size: two chunked launches per quantization, the
    # activation inside GEMM2's, dropped slots skipped by its amax step and moe_sum (eight
    # launches, test/cpp/runtime_fake_check.cc)
    dq = out["fused_experts_fp8_tensor_decode"]
    assert dq["status"] == "success" and dq["launches"] == 8, dq
    # the feature functionals (ci profile: fp16, D=64) are built and dispatch
    assert out["attn_bwd_window_alibi"]["status"] == "success" and out["attn_bwd_window_alibi"]["launches"] == 3
    assert out["attn_fwd_softcap"]["status"] == "success" and out["attn_fwd_softcap"]["launches"] == 1
    # v with its own head dim (every profile builds fp16 q/k 128, v 64, bottom-right causal)
    assert out["attn_fwd_vdim"]["status"] == "success" and out["attn_fwd_vdim"]["launches"] == 1, out
    assert out["attn_bwd_vdim"]["status"] == "success" and out["attn_bwd_vdim"]["launches"] == 3, out


def test_sm90_backward_route_launches_nothing_without_tma(build_dir):
    """On (fake) sm_90 the ci build's fp16 D=64 backward takes bwd_dkdv_hopper; it is resolved,
    TMA descriptors included, before the first launch, so a driver without cuTensorMapEncodeTiled
    fails the call with nothing launched (not even the preprocess kernel)."""
    images = _images(build_dir)
    out = _run(build_dir, "resolve_first", images, images, images, images)
    r = out["attn_bwd_complete"]
    assert r["status"] == "CUDA driver not available" and "bwd_dkdv_hopper" in r["message"], r
    assert "cuTensorMapEncodeTiled" in r["message"] and r["launches"] == 0, r


@pytest.mark.parametrize("op", ["align", "group_quant", "tensor_quant"])
def test_align_and_quant_honour_force_config(build_dir, op):
    out = _run(build_dir, "options", AOTRITON_IMAGE_DIR=str(_images(build_dir)))
    status, tuned = out[f"{op}_tuned"].split(" ", 1)
    assert status == "success" and tuned != "[(not written)]", out[f"{op}_tuned"]
    assert out[f"{op}_forced"] == f"success {tuned}", out[f"{op}_forced"]
    bogus = out[f"{op}_bogus"]
    assert bogus.startswith("not in this build") and "has no config BLOCK=no_such_config" in bogus, bogus


def _default_config(rule, functional):
    from python.kernel_rules import config_name

    return config_name(rule.tuning.default(functional, 90))


def test_force_config_picks_the_kernel_that_owns_the_name(build_dir):
    """attn_fwd and grouped_gemm each have an sm_90 Gluon kernel beside the
    Triton one; force_config goes to the kernel whose compiled configs hold the
    name (the generated has_config), not by a substring of it: the flash
    Hopper names also contain NUM_STAGES=, and must not reach the MoE one."""
    from python.rules_flash_hopper import attn_fwd_hopper
    from python.rules_moe_hopper import fused_moe_gemm_hopper

    fwd = _default_config(attn_fwd_hopper, {"dtype": "fp16", "BLOCK_DMODEL": 128, "CAUSAL_TYPE": 0})
    moe = _default_config(fused_moe_gemm_hopper, {"dtype": "fp16", "MUL_ROUTED_WEIGHT": False})
    out = _run(build_dir, "forced_kernel", fwd, moe, AOTRITON_IMAGE_DIR=str(_images(build_dir)))
    # The Gluon kernels are reached: they load, then stop at the TMA descriptor
    # (the stand-in driver has no cuTensorMapEncodeTiled); nothing launches.
    for name, kernel in (("attn_fwd_forced_hopper", "attn_fwd_hopper"),
                         ("grouped_gemm_forced_hopper", "fused_moe_gemm_hopper")):
        r = out[name]
        assert r["status"] == "CUDA driver not available" and r["message"].startswith(f"{kernel}: "), r
        assert "cuTensorMapEncodeTiled" in r["message"] and r["launches"] == 0, r
    # Any other name goes to the Triton kernel, which names what it lacks.
    for name, kernel, config in (("attn_fwd_forced_moe_hopper", "attn_fwd", moe),
                                 ("attn_fwd_forced_bogus", "attn_fwd", "BLOCK=no_such_config"),
                                 ("grouped_gemm_forced_fwd_hopper", "fused_moe_gemm", fwd),
                                 ("grouped_gemm_forced_bogus", "fused_moe_gemm", "BLOCK=no_such_config")):
        r = out[name]
        assert r["status"] == "not in this build", r
        assert r["message"].startswith(f"kernel {kernel} functional ") and f"has no config {config} " in r["message"], r


def test_half_grouped_gemm_takes_the_persistent_gluon_kernel_from_512_slots_per_expert(build_dir):
    """moe_gemm_hopper.cc on an sm_90 stand-in with 132 SMs, by default or with
    AOTRITON_MOE_HOPPER=1: an fp16 call with 512 slots per expert reaches
    fused_moe_gemm_hopper_persistent, with 256 the per-tile fused_moe_gemm_hopper (each stops
    at its TMA encoding: the stand-in driver has none); AOTRITON_MOE_HOPPER=0 runs the Triton
    kernel."""
    out = _run(build_dir, "persistent_route", AOTRITON_IMAGE_DIR=str(_images(build_dir)), FAKECUDA_SMS="132")
    for name, kernel in (("persistent", "fused_moe_gemm_hopper_persistent: "), ("default", "fused_moe_gemm_hopper_persistent: "),
                         ("per_tile", "fused_moe_gemm_hopper: ")):
        r = out[name]
        assert r["status"] == "CUDA driver not available" and r["launches"] == 0, r
        assert r["message"].startswith(kernel), r
    r = out["opted_out"]
    assert not r["message"].startswith("fused_moe_gemm_hopper"), r
    assert (r["status"] == "success" and r["launches"] == 1) or (
        r["status"] == "not in this build" and r["message"].startswith("fused_moe_gemm functional ")), r


def test_fp8_grouped_gemm_takes_the_gluon_kernel_by_default_from_128_slots_per_expert(build_dir):
    """moe_gemm_hopper.cc's automatic choice on an sm_90 device: an fp8 per-tensor call
    with 128 slots per expert reaches fused_moe_gemm_hopper_fp8 (which stops at its TMA
    encoding: the stand-in driver has none); with 64 per expert, or AOTRITON_MOE_HOPPER=0,
    the Triton kernel runs instead."""
    out = _run(build_dir, "fp8_route", AOTRITON_IMAGE_DIR=str(_images(build_dir)))
    auto = out["fp8_auto"]
    assert auto["status"] == "CUDA driver not available", auto
    assert auto["message"].startswith("fused_moe_gemm_hopper_fp8: ") and auto["launches"] == 0, auto
    for name in ("fp8_few_slots", "fp8_opted_out"):
        r = out[name]
        assert not r["message"].startswith("fused_moe_gemm_hopper_fp8"), r
        # The Triton kernel: launched, or (a ci build without that functional) named as missing.
        assert (r["status"] == "success" and r["launches"] == 1) or (
            r["status"] == "not in this build" and r["message"].startswith("fused_moe_gemm functional ")), r


def test_int4_decode_gemm_route_on_sm90(build_dir):
    """moe_gemm.cc on an sm_90 stand-in: an int4 fp16 GEMM at block size 16 runs
    fused_moe_gemm_wq_hopper (its configs name PREFETCH) by default for group 128 and with
    AOTRITON_MOE_WQ_HOPPER=1 for group 64 (where this build has that functional: ci has K tiles
    of 128 only); fused_moe_gemm_wq for group 64 by default and with =0 (or, in a build without
    its functional, the route names it missing)."""
    from python.kernel_rules import functional_name

    def built(k_tile, has_zp=False):
        f = {"dtype": "fp16", "b_dtype": "u8", "MUL_ROUTED_WEIGHT": False, "BLOCK_SIZE_M": 16,
             "BLOCK_SIZE_K": k_tile, "SPLIT_K": 1, "HAS_ZP": has_zp,
             "X_DOT_ORDER": False}
        return (_images(build_dir) / "sm_90" / "fused_moe_gemm_wq_hopper" / f"{functional_name(f)}.aks").exists()

    assert built(128) and built(128, True), "every profile builds the fp16 K-tile-128 functionals"
    out = _run(build_dir, "wq_route", AOTRITON_IMAGE_DIR=str(_images(build_dir)))
    want_hopper = {"wq_default": True, "wq_default_zp": True, "wq_opted_in_group64": built(64),
                   "wq_default_group64": False, "wq_opted_out": False}
    for name, hopper in want_hopper.items():
        r, ran = out[name], out[name + "_ran"]
        if hopper:
            assert r["status"] == "success" and r["launches"] == 1 and "PREFETCH=" in ran, (name, r, ran)
        else:
            assert "PREFETCH=" not in ran, (name, ran)
            assert (r["status"] == "success" and r["launches"] == 1 and "INT4_DOT=" in ran) or (
                r["status"] == "not in this build" and r["message"].startswith("fused_moe_gemm_wq functional ")), r


def test_int4_fused_experts_dot_order_route_on_sm90(build_dir):
    """fused_experts int4 (fp16, group 128) on an sm_90 stand-in: the hidden states are copied into
    the int4 kernel's dot order before GEMM1 (moe_dot_order_copy: one launch more) unless
    AOTRITON_MOE_WQ_DOT_ORDER=0; both calls succeed. With PDL on, act_and_mul_dot_order launches
    plainly where act_and_mul (one token over two experts) starts early, and the copy starts early."""
    out = _run(build_dir, "wq_fused_route", AOTRITON_IMAGE_DIR=str(_images(build_dir)), AOTRITON_PDL="1")
    ordered, plain = out["wq_fused_dot_order"], out["wq_fused_plain"]
    assert ordered["status"] == "success" and plain["status"] == "success", (ordered, plain)
    assert ordered["launches"] == plain["launches"] + 1, (ordered, plain)
    assert int(out["wq_fused_dot_order_pdl_launches"]) == int(out["wq_fused_plain_pdl_launches"]), out


def test_dynamic_per_tensor_quant_routes(build_dir):
    """per_tensor_quant_fp8 with a dynamic scale: 4 x 128 (4 row chunks) in the two chunked
    launches, 2049 x 16 (2049 chunks, above kDynamicQuantMaxChunks) in three; a workspace
    4 bytes short of the size query is refused with nothing launched."""
    out = _run(build_dir, "dynamic_quant_route", AOTRITON_IMAGE_DIR=str(_images(build_dir)))
    for name, launches in (("dq_chunked", 2), ("dq_three_launches", 3)):
        assert out[name]["status"] == "success" and out[name]["launches"] == launches, out[name]
    r = out["dq_short_workspace"]
    assert r["status"] == "invalid argument" and "workspace" in r["message"] and r["launches"] == 0, r


@pytest.mark.parametrize("cc,pdl,driver_refuses,exclude,want,want_toggled",
                         [("90", "1", False, None, 1, 0), ("90", "0", False, None, 0, 1),
                          ("90", None, False, None, 1, 0), ("80", "1", False, None, 0, 0),
                          ("90", "1", True, None, 0, 0), ("90", "0", False, "fused_moe_gemm, act_and_mul", 0, 0),
                          ("90", "0", False, "fused_moe_gemm,attn_decode", 0, 1)],
                         ids=["sm90_on", "sm90_off", "sm90_default_on", "sm80_on", "sm90_refused",
                              "sm90_excluded", "sm90_others_excluded"])
def test_programmatic_dependent_launch(build_dir, cc, pdl, driver_refuses, exclude, want, want_toggled,
                                       monkeypatch):
    """A kernel whose rule has pdl (act_and_mul) goes through cuLaunchKernelEx with the
    programmatic serialization attribute only when it is on (the default; AOTRITON_PDL
    at start, then set_programmatic_dependent_launch flips it) and on sm_90 (its sm_80 cubin has
    no griddepcontrol.wait), and is not named in AOTRITON_PDL_EXCLUDE (a diagnostic list of
    rule names; other names leave it alone); a driver that refuses the attribute gets the plain
    launch. Either way it launches exactly once. fused_experts launches its GEMMs plainly from 16
    slots an expert and act_and_mul below one slot per 16 experts; attn_decode's combine always
    launches plainly."""
    env = dict(FAKECUDA_CC=cc, AOTRITON_IMAGE_DIR=str(_images(build_dir)))
    if exclude is None:
        monkeypatch.delenv("AOTRITON_PDL_EXCLUDE", raising=False)
    else:
        env["AOTRITON_PDL_EXCLUDE"] = exclude
    if pdl is None:
        monkeypatch.delenv("AOTRITON_PDL", raising=False)
    else:
        env["AOTRITON_PDL"] = pdl
    if driver_refuses:
        env["FAKECUDA_NO_PDL"] = "1"
    out = _run(build_dir, "pdl", **env)
    for name, expected in (("silu", want), ("silu_toggled", want_toggled)):
        assert out[name]["status"] == "success" and out[name]["launches"] == 1, out[name]
        assert int(out[f"{name}_pdl_launches"]) == expected, out
    # fused_experts with PDL on: the two GEMMs start early at 4 slots an expert, not at 16
    # (moe_fused.cc gemms_start_early); the other kernels launch alike in both calls.
    small, large = out["fused_experts_m4"], out["fused_experts_m16"]
    assert small["status"] == "success" and large["status"] == "success", (small, large)
    assert small["launches"] == large["launches"] > 2, (small, large)
    gemms_early = cc == "90" and not driver_refuses and "fused_moe_gemm" not in (exclude or "")
    assert (int(out["fused_experts_m4_pdl_launches"]) - int(out["fused_experts_m16_pdl_launches"])
            == (2 if gemms_early else 0)), out
    # One token over 256 experts: the same launches, but act_and_mul plainly (below one slot per
    # 16 experts, moe_fused.cc act_starts_early), so GEMM2 cannot start before GEMM1 ends.
    wide = out["fused_experts_e256_m1"]
    assert wide["status"] == "success" and wide["launches"] == small["launches"], (wide, small)
    act_early = (cc == "90" and not driver_refuses and
                 "act_and_mul" not in (exclude or "").replace(" ", "").split(","))
    assert (int(out["fused_experts_m4_pdl_launches"]) - int(out["fused_experts_e256_m1_pdl_launches"])
            == (1 if act_early else 0)), out
    # Split decode: attn_decode may start early (not when excluded), its combine never does.
    split = out["attn_decode_split"]
    assert split["status"] == "success" and split["launches"] == 2, split
    decode_early = cc == "90" and not driver_refuses and "attn_decode" not in (exclude or "").split(",")
    assert int(out["attn_decode_split_pdl_launches"]) == (1 if decode_early else 0), out


@pytest.mark.parametrize("field,value,says", [("num_ctas", 2, "clusters of 2 CTAs"),
                                              ("global_scratch_size", 256, "global scratch buffer")])
def test_entries_this_runtime_cannot_launch_are_refused(build_dir, tmp_path, field, value, says):
    """An image entry compiled for clusters (num_ctas > 1: Triton launches those over a grid num_ctas
    times wider) or needing a global scratch buffer is refused with a clear status before anything
    loads or launches, not launched plainly (which would run part of the kernel's tiles)."""
    from python import image_store

    images = _images(build_dir)
    rel = Path("sm_90/act_and_mul/dtype-fp16__ACTIVATION-0.aks")  # what silu(fp16) launches
    altered = _linked_copy(images, tmp_path / "images")
    (altered / rel).unlink()
    store = image_store.read_store(images / rel)
    image_store.write_store(altered / rel, arch=store.arch, kernel=store.kernel, functional=store.functional,
                            triton_version=store.triton_version,
                            entries=[dataclasses.replace(e, **{field: value}) for e in store.entries])
    out = _run(build_dir, "one_silu", AOTRITON_IMAGE_DIR=str(altered))
    silu = out["silu"]
    assert silu["status"] == "unsupported" and says in silu["message"], silu
    assert (silu["loads"], silu["launches"]) == (0, 0), silu
