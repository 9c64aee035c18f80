"""Launch a rule's kernel through the Triton JIT with the call the AOT build
makes: the positional arguments in the rule's order, tensors' strides taken
by the rule's dim names, the constexprs of the functional and tuning config,
and the grid evaluated from the rule's C++ expressions.

The family launchers (python/jit/) only allocate outputs and say how each
tensor's dims map onto the kernel's (View); the CPU interpreter tests and the
GPU JIT benchmarks go through here, so a rule whose argument order, stride
names or grid is wrong fails on CPU.
"""
from __future__ import annotations

import importlib
import numbers
import os
import re
from typing import Any, Mapping

from python.kernel_rules import Kernel, TensorPart, kernel_tensors

__all__ = ["View", "kernel_function", "positional_args", "grid_of", "prepare", "launch"]


class View:
    """A tensor as a kernel addresses it: `dims` maps each of the rule's
    stride dims to a dim of `tensor`, or to None for stride 0 (e.g. the
    sequence stride of a packed varlen tensor, a broadcast row).

    View(q, z=0, h=2, m=1) is a [B, S, H, D] q for a rule Tensor with dims "zhm".
    """

    def __init__(self, tensor, **dims: int | None):
        self.tensor = tensor
        self.dims = dims

    def stride(self, dim: str) -> int:
        axis = self.dims[dim]
        return 0 if axis is None else int(self.tensor.stride(axis))


def kernel_function(rule: Kernel):
    """The @triton.jit function a rule names (tritonsrc/flash/fwd.py -> tritonsrc.flash.fwd)."""
    module = rule.source[:-3].replace("/", ".") if rule.source.endswith(".py") else rule.source
    return getattr(importlib.import_module(module), rule.function)


def positional_args(rule: Kernel, values: Mapping[str, Any]) -> list:
    """rule.args in order from `values`: a tensor's name gives a View (or a
    plain tensor when the rule takes no strides of it) for its pointer and
    strides; every other argument by its own name. Missing or unknown names
    are errors, so the launcher and the rule cannot drift apart."""
    tensors = kernel_tensors(rule)
    wanted = set(tensors) | {a.name for a in rule.args if not isinstance(a, TensorPart)}
    unknown = set(values) - wanted - set(rule.grid_args)
    missing = wanted - set(values)
    if unknown or missing:
        raise TypeError(f"{rule.name}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    for name, (ptr, strides) in tensors.items():
        v = values[name]
        want = {s.dim for s in strides}
        have = set(v.dims) if isinstance(v, View) else set()
        if have != want:
            raise TypeError(f"{rule.name}: tensor {name} takes strides of dims {sorted(want)}, "
                            f"the view maps {sorted(have)}")
    out = []
    for a in rule.args:
        if isinstance(a, TensorPart):
            v = values[a.tensor]
            if a.dim:
                out.append(v.stride(a.dim))
            else:
                out.append(v.tensor if isinstance(v, View) else v)
        else:
            out.append(values[a.name])
    return out


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def grid_of(rule: Kernel, names: Mapping[str, Any]) -> tuple[int, int, int]:
    """rule.grid evaluated as the generated C++ does (int64 arithmetic: '/'
    truncates)."""
    env = {k: int(v) for k, v in names.items() if isinstance(v, numbers.Integral)}
    env.update(cdiv=_cdiv, grid_min=min, select=lambda cond, a, b: a if cond else b)
    grid = []
    for expr in rule.grid:
        py = re.sub(r"(?<!/)/(?!/)", "//", expr)
        try:
            grid.append(int(eval(py, {"__builtins__": {}}, env)))  # noqa: S307 - the rule's own expressions
        except NameError as e:
            raise TypeError(f"{rule.name}: grid {expr!r} needs a value: {e}") from None
    return tuple(grid)


def prepare(rule: Kernel, values: Mapping[str, Any], functional: Mapping[str, Any], config: Mapping[str, int]):
    """(grid, positional args, keyword args) of the launch `launch` makes: a
    tuner compiles configs ahead with fn.warmup(*args, grid=grid, **kwargs)."""
    unknown = set(functional) - set(rule.functional) - {Kernel.ALIGNED}
    missing = set(rule.constexpr_functionals) - set(functional)
    if unknown or missing:
        raise TypeError(f"{rule.name}: functional: unknown {sorted(unknown)}, missing {sorted(missing)}")
    # Every tuning constexpr must be given; num_warps/num_stages left out take
    # Triton's defaults (the interpreter ignores them).
    # Launch options (maxnreg too) may be given for an experiment outside the rule's space.
    needed, allowed = set(rule.tuning.constexpr_names()), set(rule.tuning.params) | set(rule.tuning.LAUNCH_OPTIONS)
    if not needed <= set(config) <= allowed:
        raise TypeError(f"{rule.name}: config {sorted(config)} must give {sorted(needed)} (and at most "
                        f"{sorted(allowed)})")
    args = positional_args(rule, values)
    constexprs = {n: functional[n] for n in rule.constexpr_functionals}
    scalars = {a.name: v for a, v in zip(rule.args, args) if not a.is_pointer}
    # grid_args the grid does not use (autotune keys such as tokens_per_expert) may be left out.
    grid = grid_of(rule, {**scalars, **{g: values[g] for g in rule.grid_args if g in values}, **constexprs, **config})
    # A launch option of 0 is Triton's default, as in compile_kernel.py (maxnreg 0: no cap).
    options = {k: v for k, v in config.items() if k not in rule.tuning.LAUNCH_OPTIONS or v}
    return grid, args, {**constexprs, **options}


def launch(rule: Kernel, values: Mapping[str, Any], functional: Mapping[str, Any], config: Mapping[str, int],
           fn=None):
    """Runs rule's kernel on `values` (see positional_args; grid_args too) with
    the functional's constexprs and a tuning config (its num_warps/num_stages
    as launch options). Returns the grid it launched."""
    grid, args, kwargs = prepare(rule, values, functional, config)
    if aot_form() and (fn is None or fn is kernel_function(rule)):
        aot_launch(rule, _with_pointer_dtypes(rule, args, functional), config, grid, args, kwargs)
        return grid
    fn = fn if fn is not None else kernel_function(rule)
    fn[grid](*args, **kwargs)
    return grid


def aot_arguments(rule: Kernel, args: list, kwargs: Mapping[str, Any], arch: int = 90) -> list:
    """Every kernel parameter in order, constexprs included (what a launcher
    compiled by compile_kernel.compile_one for `arch` takes): the runtime ones
    from the rule-ordered `args`, the constexprs from `kwargs` (USE_PDL: the build's)."""
    from python.compile_kernel import use_pdl

    runtime = dict(zip([a.name for a in rule.args], args))
    build = {"USE_PDL": use_pdl(rule, arch)}
    return [runtime[p] if p in runtime else kwargs[p] if p in kwargs else build[p]
            for p in kernel_function(rule).arg_names]


def aot_launch(rule: Kernel, functional: Mapping[str, Any], config: Mapping[str, int], grid, args: list,
               kwargs: Mapping[str, Any]) -> None:
    """Launches the kernel the build compiles for (functional, config), the
    build's functional as generate.py names it, on a prepared launch."""
    import torch

    major, minor = torch.cuda.get_device_capability()
    _aot_compiled(rule, functional, config)[tuple(grid) + (1,) * (3 - len(grid))](
        *aot_arguments(rule, args, kwargs, major * 10 + minor))


def _with_pointer_dtypes(rule: Kernel, args: list, functional: Mapping[str, Any]) -> dict:
    """The functional with the dtypes of templated pointers ("*{dtype}") the
    JIT callers leave out (the JIT reads them from the tensors) filled in from
    the tensors, in Triton's own spelling (the build's functional uses it)."""
    from triton.runtime.jit import type_canonicalisation_dict
    out = dict(functional)
    for a, v in zip(rule.args, args):
        base = a.base if a.is_pointer else ""
        if base.startswith("{") and base[1:-1] not in out and hasattr(v, "dtype"):
            out[base[1:-1]] = type_canonicalisation_dict[str(v.dtype).removeprefix("torch.")]
    return out


def aot_form() -> bool:
    """AOTRITON_JIT_AOT_FORM=1 (python/tune.py sets it): launch the kernel the
    build compiles (compile_kernel.compile_one: the rule's specialization hints
    only) instead of the JIT's, which specializes on each call's values (every
    int divisible by 16, ints equal to 1, None). The two can differ where it
    matters: the sm_90 forward's uncapped 128-key serial config took 127
    registers in the JIT and 130 in the build (one CTA per SM instead of two),
    so the tuner ranked a kernel the build did not ship (eighth session)."""
    return os.environ.get("AOTRITON_JIT_AOT_FORM") == "1"


_AOT_COMPILED: dict = {}


def _aot_compiled(rule: Kernel, functional: Mapping[str, Any], config: Mapping[str, int]):
    import torch

    from python import compile_kernel

    major, minor = torch.cuda.get_device_capability()
    key = (rule.name, tuple(sorted(functional.items())), tuple(sorted(config.items())), major * 10 + minor)
    if key not in _AOT_COMPILED:
        _AOT_COMPILED[key] = compile_kernel.compile_one(rule, dict(functional), dict(config), major * 10 + minor)
    return _AOT_COMPILED[key]
