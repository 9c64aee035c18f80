"""The C++ runtime and the Python binding on a machine without a CUDA driver:
clear errors, never a crash."""
import os
import subprocess
import sys

import pytest

NO_DRIVER = {**os.environ, "AOTRITON_LIBCUDA": "/nonexistent/libcuda.so.1"}


def test_runtime_check_program(build_dir):
    r = subprocess.run([str(build_dir / "test/runtime_check")], capture_output=True, text=True, env=NO_DRIVER,
                       check=True)
    out = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    assert out["null_input"].startswith("invalid argument") and "null" in out["null_input"]
    assert out["dtype_mismatch"].startswith("invalid argument") and "fp32" in out["dtype_mismatch"]
    assert out["shape_mismatch"].startswith("invalid argument") and "input.size(1)" in out["shape_mismatch"]
    assert out["unsupported_dtype"].startswith("unsupported") and "int32" in out["unsupported_dtype"]
    assert out["inner_stride"].startswith("invalid argument") and "contiguous" in out["inner_stride"]
    assert out["misaligned"].startswith("invalid argument") and "aligned" in out["misaligned"]
    assert out["valid_call"].startswith("CUDA driver not available") and "/nonexistent" in out["valid_call"]
    # an output with a zero stride over 4 rows, and an output inside its input
    assert out["zero_stride_output"].startswith("invalid argument") and "share memory" in out["zero_stride_output"]
    assert out["output_aliases_input"].startswith("invalid argument") and \
        "output out overlaps input input" in out["output_aliases_input"]
    assert "CUDA driver not available" in out["error_string"]
    # a success of set_image_dir / image_dir leaves no stale message behind
    assert out["before_set_image_dir"].startswith("CUDA driver error: cannot load")
    assert out["after_set_image_dir"] == "success []", out["after_set_image_dir"]
    assert out["before_image_dir"].startswith("CUDA driver not available")
    assert out["after_image_dir"] == "found []", out["after_image_dir"]


# name -> (status, words of the message): overflowing sizes and offsets the
# kernels would form in int32 are refused on the host (before, each of these
# calls passed validation and reached the driver).
INTEGER_CASES = {
    "fused_experts_wrapping_sizes": ("invalid argument", "too large"),
    "dropout_mask_offset": ("unsupported", "dropout_mask offset"),
    "weight_offset": ("unsupported", "weight offset within an expert"),
    "column_major_logits": ("unsupported", "logits expert offset"),
    "align_chunk_counters": ("unsupported", "align chunk counters"),
}


@pytest.mark.parametrize("name", INTEGER_CASES)
def test_integer_bounds_checked_on_host(build_dir, name):
    r = subprocess.run([str(build_dir / "test/runtime_check")], capture_output=True, text=True, env=NO_DRIVER,
                       check=True)
    out = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    status, words = INTEGER_CASES[name]
    assert out[name].startswith(status + ":") and words in out[name], out[name]


# name -> (status, words of the message) for the flash window / softcap / ALiBi checks
FEATURE_CASES = {
    "feature_window_below_minus_one": ("invalid argument", "window_left / window_right must be >= -1"),
    "feature_softcap_negative": ("invalid argument", "softcap must be a finite number >= 0"),
    "feature_alibi_shape": ("invalid argument", "alibi_slopes must be [num_heads_q] or [batch, num_heads_q]"),
    "feature_alibi_dtype": ("invalid argument", "alibi_slopes"),
    "feature_softcap_and_alibi": ("invalid argument", "cannot be combined"),
    "feature_fp32": ("unsupported", "need fp16 or bf16"),
    "feature_dropout": ("unsupported", "do not support dropout"),
    "feature_valid_call": ("CUDA driver not available", ""),
    "feature_bwd_window": ("invalid argument", "window_left / window_right must be >= -1"),
    "feature_bwd_alibi_shape": ("invalid argument", "alibi_slopes must be"),
}


@pytest.mark.parametrize("name", FEATURE_CASES)
def test_flash_feature_arguments_checked_on_host(build_dir, name):
    r = subprocess.run([str(build_dir / "test/runtime_check")], capture_output=True, text=True, env=NO_DRIVER,
                       check=True)
    out = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    status, words = FEATURE_CASES[name]
    assert out[name].startswith(status) and words in out[name], out[name]


def test_fused_experts_large_m_runs_in_passes(build_dir):
    """Above 2^31 / (topk * max(2N, K)) tokens fused_experts runs in passes
    instead of rejecting the input; its workspace is that of one full pass."""
    r = subprocess.run([str(build_dir / "test/runtime_check")], capture_output=True, text=True, env=NO_DRIVER,
                       check=True)
    out = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    status, sizes = out["large_m_workspace"].split(": ", 1)
    assert status == "success", out["large_m_workspace"]
    ws = {k: int(v) for k, v in (kv.split("=") for kv in sizes.split())}
    assert ws["one_pass"] == ws["two_passes"] == ws["many_passes"] > ws["small"] > 0, ws
    assert out["large_m_call"].startswith("CUDA driver not available"), out["large_m_call"]
    assert out["one_pass_short_workspace"].startswith("invalid argument") and \
        "workspace_bytes" in out["one_pass_short_workspace"], out["one_pass_short_workspace"]
    assert out["one_pass_call"].startswith("CUDA driver not available"), out["one_pass_call"]
    assert out["large_m_unsplittable"].startswith("unsupported") and "int32" in out["large_m_unsplittable"]


PY_NO_DRIVER = r"""
import pyaotriton as C
assert C.image_dir().endswith("aotriton.images"), C.image_dir()
try:
    C.act_and_mul((4096, (4, 8), (8, 1), C.DTYPE_FP16), (8192, (4, 16), (16, 1), C.DTYPE_FP16), 0, 0, None)
except RuntimeError as e:
    print("RuntimeError:", e)
try:
    C.act_and_mul((4096, (4, 8), (8, 1), C.DTYPE_FP16), (8192, (4, 15), (15, 1), C.DTYPE_FP16), 0, 0, None)
except ValueError as e:
    print("ValueError:", e)
try:
    C.set_image_dir("/nonexistent/images")
except RuntimeError as e:
    print("RuntimeError:", e)
"""


def test_python_binding_without_driver(prefix):
    env = {**NO_DRIVER, "PYTHONPATH": str(prefix / "lib/python")}
    r = subprocess.run([sys.executable, "-c", PY_NO_DRIVER], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("RuntimeError: CUDA driver not available"), lines
    assert lines[1].startswith("ValueError: invalid argument") and "input.size(1)" in lines[1], lines
    assert lines[2].startswith("RuntimeError: kernel image not found") and "/nonexistent/images" in lines[2]


def test_torch_layer_rejects_cpu_tensors(prefix):
    torch = pytest.importorskip("torch")
    import aotriton  # from the install (test/conftest.py)

    with pytest.raises(ValueError, match="CUDA tensor"):
        aotriton.silu_and_mul(torch.randn(4, 8))
    assert aotriton.version()


def test_out_of_memory_in_noexcept_entry_points(build_dir):
    # Every allocation throws: the catch handlers must report without allocating
    # (allocating there threw out of a noexcept function: std::terminate).
    r = subprocess.run([str(build_dir / "test/alloc_fail_check")], capture_output=True, text=True, env=NO_DRIVER)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    out = dict(line.split(": ", 1) for line in r.stdout.splitlines())
    for name in ("act_and_mul_oom", "set_image_dir_oom"):
        assert out[name] == "out of memory | out of memory (std::bad_alloc)", out[name]
