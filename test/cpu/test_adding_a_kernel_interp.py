"""docs/adding-a-kernel.md is a working walk-through: its Triton kernel, rule
and C++ operator (the marked code blocks) pass the generator's signature
check, run under the interpreter through the rule's JIT call, and compile
against the header generated from the rule."""
import importlib.util
import re
import shutil
import subprocess

import pytest
import torch

from python import codegen_cpp
from python.compile_kernel import build_source
from python.jit_launch import View, launch
from testenv import REPO

DOC = REPO / "docs" / "adding-a-kernel.md"


def _blocks():
    text = DOC.read_text()
    found = dict(re.findall(r"<!-- example: (\w+) -->\n```\w+\n(.*?)```", text, re.S))
    assert set(found) == {"kernel", "rule", "operator"}, f"marked blocks in {DOC.name}: {sorted(found)}"
    return found


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    blocks = _blocks()
    path = tmp_path_factory.mktemp("example") / "scale_rows_example.py"
    path.write_text(blocks["kernel"])
    spec = importlib.util.spec_from_file_location("scale_rows_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ns = {}
    exec(compile(blocks["rule"], "adding-a-kernel.md:rule", "exec"), ns)  # noqa: S102 - our own doc
    rule = ns["scale_rows"]
    return rule, getattr(module, rule.function), blocks["operator"]


def test_rule_matches_the_triton_signature(example):
    rule, fn, _ = example
    for f in rule.functionals(90):
        build_source(rule, fn, f, rule.tuning.default(f, 90))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_kernel_runs_through_the_rule(example, dtype):
    rule, fn, _ = example
    g = torch.Generator().manual_seed(1)
    base = torch.randn(5, 300, generator=g, dtype=torch.float64)
    x = base.to(dtype)[:, :261]  # rows strided (300), columns not a multiple of the block
    out = torch.full((5, 261), float("nan"), dtype=dtype)
    grid = launch(rule, dict(out_ptr=View(out, row=0), x_ptr=View(x, row=0), alpha=0.75, n_rows=5, n_cols=261),
                  {}, {"BLOCK": 256, "num_warps": 4, "num_stages": 1}, fn=fn)
    assert grid == (5, 2, 1)
    ref = x.double() * 0.75
    torch.testing.assert_close(out.double(), ref, rtol=1e-3 if dtype == torch.float16 else 1e-6, atol=1e-6)


def test_operator_compiles_against_the_generated_header(example, tmp_path, build_dir):
    rule, _, operator = example
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    (tmp_path / "scale_rows.h").write_text(codegen_cpp.header(rule))
    src = tmp_path / "scale_rows_op.cc"
    src.write_text(operator)
    includes = [REPO / "include", build_dir / "include", REPO / "v2src", tmp_path]
    cmd = [cxx, "-std=c++20", "-fsyntax-only", "-Wall", "-Werror", *(f"-I{p}" for p in includes), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # A field left out of the Inputs initializer is a compile error, not a silent zero.
    src.write_text(operator.replace(".alpha = alpha, ", ""))
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode != 0 and "Required<float>" in r.stderr, r.stderr
