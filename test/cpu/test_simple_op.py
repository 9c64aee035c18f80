"""The one-line registrations of a simple operator, on moe_sum (bound with
def_op, exposed with simple_op): the fields def_op reads from MoeSumParams,
the binding's argument order (checked by the C++ operator without a driver),
and the torch layer's checks under fake tensors. The doc's worked example:
test_adding_a_kernel_interp.py."""
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from nodriver import cases_without_driver

aotriton = pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")


def rnd(*shape, dtype=torch.float16):
    return torch.randn(*shape, device="cuda").to(dtype)


def test_def_op_reads_the_params_struct():
    import pyaotriton
    # MoeSumParams {TensorView<2> out; TensorView<3> input;}, named out and x, with KernelOptions.
    assert pyaotriton.OP_SPECS["moe_sum"] == ((("out", "tensor", 2), ("x", "tensor", 3)), True)
    # An enum field is an int, a bool a bool (the bindings of act_and_mul and topk_softmax).
    assert pyaotriton.OP_SPECS["act_and_mul"] == ((("out", "tensor", 2), ("input", "tensor", 2),
                                                   ("activation", "int", 0)), True)
    assert pyaotriton.OP_SPECS["topk_softmax"] == ((("logits", "tensor", 2), ("topk_weights", "tensor", 2),
                                                    ("topk_ids", "tensor", 2), ("renormalize", "bool", 0)), True)


SCRIPT = r"""
F16, F32 = C.DTYPE_FP16, C.DTYPE_FP32
out, x = fresh((4, 64), F16), fresh((4, 2, 64), F16)
print("launch|" + outcome(lambda: C.moe_sum(out, x, 0)))
print("rows|" + outcome(lambda: C.moe_sum(fresh((5, 64), F16), x, 0)))
print("dtype|" + outcome(lambda: C.moe_sum(fresh((4, 64), F32), x, 0)))
print("config|" + outcome(lambda: C.moe_sum(out, x, 0, force_config="BLOCK=1")))
h = fresh((4, 128), F16)
print("act|" + outcome(lambda: C.act_and_mul(fresh((4, 64), F16), h, 7, 0)))
print("act_launch|" + outcome(lambda: C.act_and_mul(fresh((4, 64), F16), h, 1, 0)))
print("topk_ids|" + outcome(lambda: C.topk_softmax(fresh((4, 8), F16), fresh((4, 2), F32), fresh((4, 2), F32), True, 0)))
"""


def test_binding_passes_the_fields_in_order(prefix):
    out = cases_without_driver(prefix, SCRIPT)
    assert out["launch"].startswith("RuntimeError: CUDA driver not available"), out
    assert out["rows"].startswith("ValueError") and "moe_sum" in out["rows"] and "out" in out["rows"], out
    assert out["dtype"].startswith("ValueError") and "out" in out["dtype"], out
    assert out["config"].startswith("RuntimeError: CUDA driver not available"), out
    assert out["act"].startswith("ValueError") and "unknown activation 7" in out["act"], out  # the enum arrives
    assert out["act_launch"].startswith("RuntimeError: CUDA driver not available"), out
    assert out["topk_ids"].startswith("ValueError") and "topk_ids" in out["topk_ids"], out


def test_public_function_checks_before_the_extension(monkeypatch):
    from aotriton import _simple_op
    monkeypatch.setattr(_simple_op, "_C", None)  # a call that got this far would fail differently
    with FakeTensorMode():
        assert aotriton.moe_sum(rnd(5, 2, 64)).shape == (5, 64)
        given = rnd(5, 64)
        assert aotriton.moe_sum(rnd(5, 2, 64), given) is given
        with pytest.raises(ValueError, match="x must be a 3-D tensor"):
            aotriton.moe_sum(rnd(5, 64))
        with pytest.raises(ValueError, match="out must have shape"):
            torch.ops.aotriton.moe_sum(rnd(5, 63), rnd(5, 2, 64), None)
        with pytest.raises(NotImplementedError, match="no backward"):
            aotriton.moe_sum(rnd(5, 2, 64).requires_grad_())
    with pytest.raises(ValueError, match="x must be a CUDA tensor"):
        aotriton.moe_sum(torch.ones(2, 2, 4))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        aotriton.moe_sum(None)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        aotriton.moe_sum([[1.0]])
