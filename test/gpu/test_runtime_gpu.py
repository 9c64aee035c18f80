"""Runtime behaviour on a GPU: the C++ test program, and damaged or missing
image directories giving errors (in subprocesses: a fresh library state)."""
import os
import shutil
import subprocess
import sys

import pytest

from testenv import BUILD_DIR, PREFIX

SCRIPT = r"""
import torch, aotriton
x = torch.randn(4, 64, device="cuda", dtype=torch.float16)
try:
    aotriton.silu_and_mul(x)
    print("OK")
except (RuntimeError, ValueError) as e:
    print(type(e).__name__ + ": " + str(e))
"""


def run_with_images(image_dir):
    env = {**os.environ, "AOTRITON_IMAGE_DIR": str(image_dir), "PYTHONPATH": str(PREFIX / "lib/python")}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr  # an error, never a crash
    return r.stdout.strip()


def test_cpp_gpu_program():
    r = subprocess.run([str(BUILD_DIR / "test/gpu_check"), "test"], capture_output=True, text=True)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("PASS") >= 20


def test_images_ok_baseline(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(PREFIX / "lib/aotriton.images", images)
    assert run_with_images(images) == "OK"


@pytest.mark.parametrize("damage", ["truncate", "flip", "magic", "empty"])
def test_corrupt_image_is_an_error(tmp_path, damage):
    images = tmp_path / "images"
    shutil.copytree(PREFIX / "lib/aotriton.images", images)
    victim = next(images.glob("sm_*/act_and_mul/dtype-fp16__ACTIVATION-0.aks"))
    data = bytearray(victim.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "magic":
        data[0:4] = b"XXXX"
    else:
        data = b""
    victim.write_bytes(bytes(data))
    out = run_with_images(images)
    assert out.startswith("RuntimeError: corrupt kernel image") and str(victim) in out, out


def test_missing_image_file_and_dir(tmp_path):
    images = tmp_path / "images"
    shutil.copytree(PREFIX / "lib/aotriton.images", images)
    for f in images.glob("sm_*/act_and_mul/*.aks"):
        f.unlink()
    out = run_with_images(images)
    assert out.startswith("RuntimeError: kernel image not found") and "act_and_mul" in out, out
    out = run_with_images(tmp_path / "nowhere")
    assert out.startswith("RuntimeError: kernel image not found") and "AOTRITON_IMAGE_DIR" in out, out


def test_arch_not_in_build():
    """A build holding only sm_80 images refuses this GPU with a clear message
    (tools/gpu_run.sh makes that build and passes its prefix)."""
    other = os.environ.get("AOTRITON_OTHER_ARCH_PREFIX")
    if not other:
        pytest.skip("set AOTRITON_OTHER_ARCH_PREFIX to an install built for another arch")
    env = {**os.environ, "PYTHONPATH": str(os.path.join(other, "lib/python"))}
    env.pop("AOTRITON_IMAGE_DIR", None)
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "GPU architecture not in this build" in r.stdout and "sm_80" in r.stdout, r.stdout
