"""docs/adding-a-kernel.md is a working walk-through: its Triton kernel, rule
and C++ operator (the marked code blocks) pass the generator's signature
check, run under the interpreter through the rule's JIT call, and compile
against the header generated from the rule and the doc's public declaration;
the binding line compiles (bindings/bind_op.h), and the torch line registers
the custom op and the public function from the fields the binding reads."""
import importlib.util
import inspect
import re
import shutil
import subprocess
import sys
import sysconfig

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
    assert set(found) == {"kernel", "rule", "header", "operator", "binding", "torch"}, \
        f"marked blocks in {DOC.name}: {sorted(found)}"
    return found


def _cxx():
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    return cxx


def _public_header(tmp_path, block):
    """The doc's declaration as include/aotriton/example.h would hold it."""
    (tmp_path / "aotriton").mkdir(exist_ok=True)
    (tmp_path / "aotriton" / "example.h").write_text(
        "#pragma once\n#include \"aotriton/runtime.h\"\n\nnamespace aotriton {\n"
        "inline namespace AOTRITON_ABI_NAMESPACE {\n" + block + "}\n}\n")


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
    return rule, getattr(module, rule.function), blocks


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
    rule, _, blocks = example
    operator = blocks["operator"]
    cxx = _cxx()
    (tmp_path / "scale_rows.h").write_text(codegen_cpp.header(rule))
    _public_header(tmp_path, blocks["header"])
    src = tmp_path / "scale_rows_op.cc"
    src.write_text(operator)
    includes = [REPO / "include", build_dir / "include", REPO / "v2src", tmp_path]
    cmd = [cxx, "-std=c++20", "-fsyntax-only", "-Wall", "-Werror", *(f"-I{p}" for p in includes), str(src)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # A field left out of the Inputs initializer is a compile error, not a silent zero.
    src.write_text(operator.replace(".alpha = p.alpha, ", ""))
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode != 0 and "Required<float>" in r.stderr, r.stderr


def _binding_cmd(cxx, tmp_path, build_dir, src):
    nanobind = subprocess.run([sys.executable, "-m", "nanobind", "--include_dir"], capture_output=True, text=True)
    if nanobind.returncode != 0:
        pytest.skip("nanobind is not installed")
    includes = [REPO / "include", build_dir / "include", REPO / "bindings", tmp_path, nanobind.stdout.strip(),
                sysconfig.get_paths()["include"]]
    # C++17: the standard nanobind_add_module compiles the binding with.
    return [cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Werror", *(f"-I{p}" for p in includes), str(src)]


def test_binding_line_compiles(example, tmp_path, build_dir):
    _, _, blocks = example
    cxx = _cxx()
    _public_header(tmp_path, blocks["header"])
    src = tmp_path / "bind_example.cc"

    def tu(line):
        return ('#include "aotriton/example.h"\n#include "bind_op.h"\n\nnamespace pyaotriton {\n'
                "void bind_example(nb::module_& m) {\n  using namespace aotriton;\n  " + line + "}\n}\n")
    src.write_text(tu(blocks["binding"]))
    cmd = _binding_cmd(cxx, tmp_path, build_dir, src)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # One name short of the struct's fields does not compile.
    src.write_text(tu(blocks["binding"].replace(', "alpha"', "")))
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode != 0 and "one name per field" in r.stderr, r.stderr


def _recorded_spec(example, tmp_path, build_dir):
    """What def_op records in pyaotriton.OP_SPECS for the doc's binding line:
    its names, with each field's kind and rank as op_fields.h reads them from
    the doc's Params (printed by a plain C++ program)."""
    _, _, blocks = example
    cxx = _cxx()
    _public_header(tmp_path, blocks["header"])
    src = tmp_path / "fields.cc"
    src.write_text('#include <cstdio>\n#include "aotriton/example.h"\n#include "op_fields.h"\n'
                   "int main() {\n  for (auto [kind, rank] : pyaotriton::detail::field_kinds<aotriton::ScaleRowsParams>())"
                   '\n    std::printf("%s %d\\n", kind, rank);\n}\n')
    exe = tmp_path / "fields"
    includes = [REPO / "include", build_dir / "include", REPO / "bindings", tmp_path]
    r = subprocess.run([cxx, "-std=c++17", "-Wall", "-Werror", *(f"-I{p}" for p in includes), str(src), "-o", str(exe)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    kinds = [line.split() for line in subprocess.run([str(exe)], capture_output=True, text=True,
                                                     check=True).stdout.splitlines()]
    name, names = re.search(r'def_op\(m, "(\w+)", \w+, \{(.*)\}\);', blocks["binding"]).groups()
    names = re.findall(r'"(\w+)"', names)
    assert len(names) == len(kinds)
    takes_options = "const KernelOptions* options" in blocks["header"]
    return name, (tuple((n, k, int(r)) for n, (k, r) in zip(names, kinds)), takes_options)


def test_torch_line_registers_the_op(example, tmp_path, build_dir, monkeypatch):
    pytest.importorskip("aotriton", reason="needs the installed aotriton package (tools/build.sh)")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from aotriton import _simple_op

    name, spec = _recorded_spec(example, tmp_path, build_dir)
    assert spec == ((("out", "tensor", 2), ("x", "tensor", 2), ("alpha", "float", 0)), True)
    calls = []

    class Extension:  # stands in for pyaotriton: the spec def_op records, and the bound function
        OP_SPECS = {name: spec}

        @staticmethod
        def scale_rows(*args):
            calls.append(args)
            return "BLOCK=1024"
    monkeypatch.setattr(_simple_op, "_C", Extension)
    ns = {"simple_op": _simple_op.simple_op, "torch": torch}
    exec(compile(_blocks()["torch"], "adding-a-kernel.md:torch", "exec"), ns)  # noqa: S102 - our own doc
    scale_rows = ns["scale_rows"]

    schema = str(torch.ops.aotriton.scale_rows.default._schema)
    assert schema == "aotriton::scale_rows(Tensor(a0!) out, Tensor x, float alpha, str? force_config) -> ()"
    assert str(inspect.signature(scale_rows)) == "(x, alpha, out=None, *, force_config=None)"
    with FakeTensorMode():  # fake CUDA tensors: the call is traced through the custom op
        x = torch.randn(5, 261, device="cuda").to(torch.float16)
        out = scale_rows(x, 0.75)
        assert out.shape == (5, 261) and out.dtype == torch.float16
        with pytest.raises(ValueError, match="out must have shape"):
            torch.ops.aotriton.scale_rows(torch.randn(5, 260, device="cuda").to(torch.float16), x, 0.75, None)
        with pytest.raises(ValueError, match="x must be a 2-D tensor"):
            scale_rows(torch.randn(261, device="cuda").to(torch.float16), 0.75)
    with pytest.raises(ValueError, match="CUDA tensor"):
        scale_rows(torch.ones(2, 3), 0.5)
    assert not calls
    # The eager launch (CPU tensors, the stream faked): the fields in the C++ order as views.
    monkeypatch.setattr(_simple_op, "eager_stream", lambda t: 77)
    x = torch.randn(5, 300)[:, :261]
    out = torch.empty(5, 261)
    torch.ops.aotriton.scale_rows(out, x, 0.75, "BLOCK=256,num_stages=1,num_warps=4")
    (o, xv, alpha, stream, config), = calls
    code = _simple_op.view(x, "x")[3]
    assert o == (out.data_ptr(), (5, 261), (261, 1), code) and xv == (x.data_ptr(), (5, 261), (300, 1), code)
    assert (alpha, stream, config) == (0.75, 77, "BLOCK=256,num_stages=1,num_warps=4")
