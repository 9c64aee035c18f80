"""python/jit_launch.py: the JIT call is derived from the rule (argument order,
strides by dim name, grid), so a rule with a swapped stride or a wrong grid
fails on CPU under the interpreter, and a launcher that forgets an argument
is an error, not a silent default."""
import dataclasses

import pytest
import torch

from python import rules_moe
from python.jit_launch import View, grid_of, launch, positional_args
from python.kernel_rules import Arg, Kernel, Tensor, TuningSpace


def _sum_with(rule, x):
    """moe_sum of x [M, topk, H] through `rule`, output poisoned first."""
    M, topk, H = x.shape
    out = torch.full((M, H), float("nan"), dtype=x.dtype)
    ids = torch.zeros(1, dtype=torch.int32)  # rows_per_slot 0: unread
    launch(rule, dict(out_ptr=View(out, m=0), in_ptr=View(x, m=0, k=1), topk_ids_ptr=ids, expert_map_ptr=ids,
                      n_tokens=M, topk=topk, hidden=H, rows_per_slot=0, num_experts=1, expert_map_len=0),
           {}, dict(BLOCK=16, BLOCK_R=2))
    return out


def _input():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 3, 40, generator=g, dtype=torch.float32)


def test_rule_call_matches_reference():
    x = _input()
    torch.testing.assert_close(_sum_with(rules_moe.moe_sum, x), x.double().sum(1).float(), rtol=1e-6, atol=1e-6)


def test_swapped_stride_in_rule_fails():
    """The in tensor's strides in the other order (a wrong Tensor dims
    string): the interpreter reads the wrong elements."""
    rule = rules_moe.moe_sum
    args = list(rule.args)
    i, j = (next(n for n, a in enumerate(args) if a.name == s) for s in ("stride_in_m", "stride_in_k"))
    args[i], args[j] = args[j], args[i]
    bad = dataclasses.replace(rule, args=args)
    x = _input()
    assert not torch.allclose(_sum_with(bad, x), x.sum(1), equal_nan=False)


def test_wrong_grid_in_rule_fails():
    bad = dataclasses.replace(rules_moe.moe_sum, grid=("n_tokens - 1", "cdiv(hidden, BLOCK)", "1"))
    out = _sum_with(bad, _input())
    assert torch.isnan(out[-1]).all()  # the last token's row is never written


def _toy_rule():
    q = Tensor("Q", "fp32", "zhm")
    return Kernel(name="toy", source="tritonsrc/x.py", function="f",
                  args=[q.ptr, Arg("n", "i32"), *q.strides], functional={"dtype": ["fp32"]},
                  tuning=TuningSpace(params={"BLOCK": [16]}, default=lambda f, a: {"BLOCK": 16}),
                  grid=("cdiv(n, BLOCK)", "n / 3", "1"))


def test_positional_args_take_strides_by_dim_name():
    t = torch.empty(2, 7, 3, 4)  # [B, S, H, D]
    got = positional_args(_toy_rule(), dict(Q=View(t, z=0, h=2, m=1), n=5))
    assert got[0] is t
    assert got[1:] == [5, t.stride(0), t.stride(2), t.stride(1)]
    packed = positional_args(_toy_rule(), dict(Q=View(t[0], z=None, h=1, m=0), n=5))
    assert packed[2:] == [0, t.stride(2), t.stride(1)]


@pytest.mark.parametrize("values", [dict(n=5), dict(Q=None, n=5, extra=1)])
def test_missing_or_unknown_values_are_errors(values):
    values = {k: (View(torch.empty(1, 1, 1), z=0, h=1, m=2) if k == "Q" else v) for k, v in values.items()}
    with pytest.raises(TypeError):
        positional_args(_toy_rule(), values)


def test_view_must_map_exactly_the_rule_dims():
    with pytest.raises(TypeError, match="dims"):
        positional_args(_toy_rule(), dict(Q=View(torch.empty(1, 1, 1), z=0, h=1), n=5))


def test_grid_uses_cpp_integer_division():
    assert grid_of(_toy_rule(), dict(n=17, BLOCK=16)) == (2, 5, 1)


def test_missing_functional_or_config_is_an_error():
    x = _input()
    out = torch.empty(5, 40)
    ids = torch.zeros(1, dtype=torch.int32)
    values = dict(out_ptr=View(out, m=0), in_ptr=View(x, m=0, k=1), topk_ids_ptr=ids, expert_map_ptr=ids, n_tokens=5,
                  topk=3, hidden=40, rows_per_slot=0, num_experts=1, expert_map_len=0)
    with pytest.raises(TypeError, match="config"):
        launch(rules_moe.moe_sum, values, {}, {})
    with pytest.raises(TypeError, match="missing"):
        launch(rules_moe.act_and_mul, dict(out_ptr=View(out, row=0), in_ptr=View(x[:, 0], row=0), n_rows=5,
                                           n_cols=20), {}, dict(BLOCK=16))


def test_aot_form_takes_pointer_dtypes_from_the_tensors():
    """The JIT callers leave "*{dtype}" pointee types out of the functional
    (the JIT reads them from the tensors); the AOT form compiles the build's
    kernel, whose signature needs them: they come from the tensors (the H200
    tuner crashed on KeyError 'dtype' before, ninth session)."""
    from python.jit_launch import _with_pointer_dtypes
    q = Tensor("Q", "{dtype}", "zhm")
    rule = Kernel(name="toy", source="tritonsrc/x.py", function="f", args=[q.ptr, Arg("n", "i32"), *q.strides],
                  functional={"dtype": ["fp16", "bf16"], "CAUSAL": [0, 1]},
                  tuning=TuningSpace(params={"BLOCK": [16]}, default=lambda f, a: {"BLOCK": 16}),
                  grid=("1", "1", "1"))
    t = torch.empty(2, 3, 4, dtype=torch.bfloat16)
    args = positional_args(rule, dict(Q=View(t, z=0, h=1, m=2), n=5))
    assert _with_pointer_dtypes(rule, args, {"CAUSAL": 1}) == {"CAUSAL": 1, "dtype": "bf16"}
    # A functional that names the dtype keeps it.
    assert _with_pointer_dtypes(rule, args, {"CAUSAL": 0, "dtype": "fp16"})["dtype"] == "fp16"
    assert [a.triton_type(_with_pointer_dtypes(rule, args, {})) for a in rule.args][0] == "*bf16"
