"""Per-device module loading and launching (needs >= 2 GPUs; skipped otherwise).

Each scenario runs in a fresh subprocess so the library's lazy state (and its
module load counter) starts empty.
"""
import os
import subprocess
import sys

import pytest

from testenv import PREFIX

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                reason="needs at least two CUDA GPUs")

PRELUDE = r"""
import threading, torch, aotriton
def silu_ok(dev, rows=37, cols=300, dtype=torch.float16):
    with torch.cuda.device(dev):
        x = torch.randn(rows, 2 * cols, device=dev, dtype=dtype)
        out = aotriton.silu_and_mul(x)
        ref = torch.nn.functional.silu(x[:, :cols].double()) * x[:, cols:].double()
        torch.cuda.synchronize(dev)
        err = ((out.double() - ref).norm() / ref.norm()).item()
        assert out.device == torch.device(dev) and err < 2e-3, (dev, err)
def attn_ok(dev):
    with torch.cuda.device(dev):
        q = torch.randn(1, 100, 2, 64, device=dev, dtype=torch.float16)
        out = aotriton.flash_attn_func(q, q, q, causal=True)
        ref = torch.nn.functional.scaled_dot_product_attention(*(t.transpose(1, 2).float() for t in (q, q, q)),
                                                               is_causal=True).transpose(1, 2)
        torch.cuda.synchronize(dev)
        assert ((out.float() - ref).norm() / ref.norm()).item() < 4e-3, dev
"""


def run(body, env_extra=None):
    env = {**os.environ, "PYTHONPATH": str(PREFIX / "lib/python"), "AOTRITON_CHECK_CONTEXT": "1",
           **(env_extra or {})}
    r = subprocess.run([sys.executable, "-c", PRELUDE + body], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_device1_then_device0_loads_once_per_device():
    out = run(r"""
n0 = aotriton.module_load_count()
silu_ok("cuda:1"); n1 = aotriton.module_load_count()
silu_ok("cuda:0"); n2 = aotriton.module_load_count()
for _ in range(3):
    silu_ok("cuda:1"); silu_ok("cuda:0")
n3 = aotriton.module_load_count()
attn_ok("cuda:1"); attn_ok("cuda:0")
print(n1 - n0, n2 - n1, n3 - n2)
""")
    assert out.split() == ["1", "1", "0"], out


def test_two_threads_each_bound_to_a_device():
    run(r"""
errors = []
def work(dev):
    try:
        torch.cuda.set_device(dev)
        s = torch.cuda.Stream(dev)
        with torch.cuda.stream(s):
            for i in range(50):
                silu_ok(dev, rows=1 + i, cols=64 + 7 * i)
                attn_ok(dev)
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=work, args=(d,)) for d in ("cuda:0", "cuda:1")]
[t.start() for t in ts]; [t.join() for t in ts]
assert not errors, errors
""")


def test_stream_of_other_device_while_current_is_device0():
    """A launch follows the stream's context, not the current device."""
    run(r"""
torch.cuda.set_device(0)
s1 = torch.cuda.Stream("cuda:1")
x = torch.randn(8, 64, device="cuda:1")
with torch.cuda.stream(s1):
    out = aotriton.silu_and_mul(x)
s1.synchronize()
ref = torch.nn.functional.silu(x[:, :32].double()) * x[:, 32:].double()
assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-5
""")


def test_cuda_visible_devices_reordered():
    run(r"""
silu_ok("cuda:0"); silu_ok("cuda:1"); attn_ok("cuda:1"); attn_ok("cuda:0")
""", {"CUDA_VISIBLE_DEVICES": "1,0"})


@pytest.mark.parametrize("round_", range(3))
def test_first_use_race_16_threads(round_):
    out = run(r"""
barrier = threading.Barrier(16)
errors = []
def work(i):
    try:
        dev = f"cuda:{i % 2}"
        torch.cuda.set_device(dev)
        x = torch.randn(64, 512, device=dev, dtype=torch.bfloat16)
        barrier.wait()
        out = aotriton.gelu_and_mul(x)
        torch.cuda.synchronize(dev)
        ref = torch.nn.functional.gelu(x[:, :256].double()) * x[:, 256:].double()
        assert ((out.double() - ref).norm() / ref.norm()).item() < 1.5e-2
    except Exception as e:
        errors.append(repr(e))
n0 = aotriton.module_load_count()
ts = [threading.Thread(target=work, args=(i,)) for i in range(16)]
[t.start() for t in ts]; [t.join() for t in ts]
assert not errors, errors
print(aotriton.module_load_count() - n0)
""")
    assert out.strip() == "2", f"expected one module load per device, got {out}"
