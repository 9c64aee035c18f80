"""The rule vocabulary's Tensor: one declaration expands into the pointer and
stride arguments the Triton signature takes (so the compiled kernels are
unchanged), and a rule that drops one of a tensor's strides is refused."""
import pytest

from python import rules
from python.kernel_rules import Arg, Kernel, Tensor, TensorPart, TuningSpace, kernel_tensors

_TUNING = TuningSpace(params={"num_warps": [4]}, default=lambda f, a: {"num_warps": 4})


def _kernel(args):
    return Kernel(name="k", source="tritonsrc/x.py", function="k", args=args, functional={"dtype": ["fp16"]},
                  tuning=_TUNING, grid=("1", "1", "1"))


def test_tensor_expands_to_pointer_and_named_strides():
    q = Tensor("Q", dtype="{dtype}", dims="zhm", rank=4, align=16, stride="i32:8")
    assert [(a.name, a.type) for a in q.args] == [
        ("Q", "*{dtype}:16"), ("stride_qz", "i32:8"), ("stride_qh", "i32:8"), ("stride_qm", "i32:8")]
    assert all(isinstance(a, TensorPart) and isinstance(a, Arg) for a in q.args)
    assert [a.dim for a in q.strides] == ["z", "h", "m"]


def test_tensor_prefix_and_long_dim_names():
    assert Tensor("a_ptr", "fp16", "m").strides[0].name == "stride_am"
    t = Tensor("out_ptr", "fp32", ("row",), prefix="stride_out_", stride="i64")
    assert [(a.name, a.type) for a in t.args] == [("out_ptr", "*fp32"), ("stride_out_row", "i64")]


@pytest.mark.parametrize("bad", [dict(align=8), dict(rank=2), dict(dims="zz"), dict(stride="f16")])
def test_bad_tensor_declarations_are_refused(bad):
    spec = dict(name="Q", dtype="fp16", dims="zhm")
    spec.update(bad)
    with pytest.raises(ValueError):
        Tensor(**spec)


def test_rule_missing_a_tensor_stride_is_refused():
    q = Tensor("Q", "{dtype}", "zhm", align=16)
    _kernel([q.ptr, *q.strides])  # complete: accepted
    with pytest.raises(ValueError, match="stride"):
        _kernel([q.ptr, *q.strides[:2]])
    with pytest.raises(ValueError, match="pointer"):
        _kernel(q.strides)


def test_kernel_tensors_keep_kernel_order():
    q, k = Tensor("Q", "{dtype}", "zhm"), Tensor("K", "{dtype}", "zhn")
    rule = _kernel([q.ptr, k.ptr, Arg("n", "i32"), *q.strides, *k.strides])
    got = kernel_tensors(rule)
    assert list(got) == ["Q", "K"]
    assert [s.name for s in got["K"][1]] == ["stride_kz", "stride_kh", "stride_kn"]


def test_flash_and_moe_tensors_are_declared():
    """The operators' big kernels take their tensors through Tensor declarations
    (the generated marshalling and the JIT launcher rely on the grouping)."""
    by_name = {k.name: k for k in rules.KERNELS}
    expect = {"attn_fwd": ["Q", "K", "V", "O", "LSE", "alibi_slopes"],
              "bwd_dq": ["Q", "K", "V", "DO", "DQ", "LSE", "Delta", "alibi_slopes"],
              "fused_moe_gemm": ["a_ptr", "b_ptr", "c_ptr", "a_scale_ptr", "b_scale_ptr"]}
    for name, tensors in expect.items():
        assert list(kernel_tensors(by_name[name])) == tensors
