"""python/ is a package: every module imports the build side as python.<module>
(a bare `import rules` would load a second copy of the module, whose classes
are not the package's), and only entry points touch sys.path."""
import ast
import subprocess
import sys

from testenv import REPO

MODULES = {p.stem for p in (REPO / "python").glob("*.py")} - {"__init__"}
# Scripts that put the repo root (or the install) on the path when run directly.
ENTRY_POINTS = {
    "python/generate.py", "python/compile_kernel.py", "python/compile_server.py", "python/tune.py",
    "tools/kernel_fingerprints.py", "tools/compile_times.py", "tools/compare_cubins.py", "tools/sass_loops.py",
    "tools/diag_moe_fp8_emulation.py", "test/fuzz/make_seeds.py", "test/cpu/test_rule_signatures.py",
    "test/conftest.py",  # the install's lib/python (AOTRITON_PREFIX)
}


def sources():
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "*.py"], capture_output=True, text=True, check=True)
    return [p for p in out.stdout.split() if p.split("/")[0] in ("python", "tritonsrc", "test", "tools", "bench")]


def test_python_modules_are_imported_through_the_package():
    bare = []
    for rel in sources():
        if rel == "python/inspect_images.py":
            continue  # installed beside image_store.py in lib/aotriton.tools: imports it as its sibling
        for node in ast.walk(ast.parse((REPO / rel).read_text())):
            if isinstance(node, ast.Import):
                bare += [f"{rel}:{node.lineno} import {a.name}" for a in node.names if a.name in MODULES]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in MODULES:
                bare.append(f"{rel}:{node.lineno} from {node.module} import ...")
    assert not bare, "import python/ modules as python.<module>:\n" + "\n".join(bare)


def _edits_sys_path(node) -> bool:
    """sys.path.insert/append/extend(...) or an assignment to sys.path[...]."""
    def is_sys_path(n):
        return isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name) \
            and n.value.id == "sys"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and is_sys_path(node.func.value):
        return node.func.attr in ("insert", "append", "extend")
    if isinstance(node, (ast.Assign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        return any(is_sys_path(t) or (isinstance(t, ast.Subscript) and is_sys_path(t.value)) for t in targets)
    return False


def test_only_entry_points_edit_sys_path():
    found = {rel for rel in sources() if rel.split("/")[0] != "bench"  # bench/: scripts, each run directly
             and any(_edits_sys_path(n) for n in ast.walk(ast.parse((REPO / rel).read_text())))}
    assert found <= ENTRY_POINTS, f"sys.path edited outside entry points: {sorted(found - ENTRY_POINTS)}"


def test_the_check_sees_an_edit():
    assert _edits_sys_path(ast.parse("sys.path.insert(0, 'x')").body[0].value)
    assert _edits_sys_path(ast.parse("sys.path[:0] = ['x']").body[0])
    assert not _edits_sys_path(ast.parse("print(sys.path)").body[0].value)


def _is_jit(decorator) -> bool:
    d = decorator.func if isinstance(decorator, ast.Call) else decorator
    return isinstance(d, ast.Attribute) and d.attr == "jit" and isinstance(d.value, ast.Name) \
        and d.value.id in ("triton", "gluon")


def test_tritonsrc_holds_only_kernels_and_their_helpers():
    """tritonsrc/ is Triton code: every module defines @triton.jit/@gluon.jit
    functions, except the plain config tables the rules import (*configs.py);
    nothing there imports torch or the build side. The JIT launchers live in
    python/jit/."""
    odd = []
    for rel in sources():
        name = rel.rsplit("/", 1)[-1]
        if not rel.startswith("tritonsrc/") or name == "__init__.py":
            continue
        tree = ast.parse((REPO / rel).read_text())
        for node in ast.walk(tree):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            odd += [f"{rel}:{node.lineno} imports {m}" for m in mods if m.split(".")[0] in ("torch", "python")]
        jit = any(isinstance(n, ast.FunctionDef) and any(map(_is_jit, n.decorator_list)) for n in ast.walk(tree))
        if not jit and not name.endswith("configs.py"):
            odd.append(f"{rel}: no @triton.jit or @gluon.jit function (a launcher or plain Python: python/jit/)")
    assert not odd, "\n".join(odd)


def test_generate_runs_as_a_script_and_as_a_module(tmp_path):
    """CMake runs python/generate.py by path; `python -m python.generate` works too."""
    for how in ([str(REPO / "python" / "generate.py")], ["-m", "python.generate"]):
        r = subprocess.run([sys.executable, *how, "--help"], capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 0 and "build.ninja" in r.stdout, r.stderr
