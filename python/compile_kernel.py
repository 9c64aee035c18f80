"""Ninja compile edge: one (kernel, functional, tuning config, arch) -> .cubin + .json.

The .json holds the launch metadata the image store keeps next to the cubin.
Any failure (or timeout) is reported with the kernel, functional, config and
arch so a broken kernel is easy to find in a parallel build log.
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import resource
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script (a ninja edge): python/ and tritonsrc/ import as packages
    sys.path.insert(0, str(REPO))


class CompileTimeout(Exception):
    pass


class RepoRelativeLoader(importlib.machinery.SourceFileLoader):
    """Compiles a tritonsrc module with its repo-relative file name
    ("tritonsrc/flash/fwd.py"): Triton writes co_filename into the line info of
    every cubin, so absolute names would make the build depend on where the
    checkout lives (the compiler-side -ffile-prefix-map). Never uses .pyc
    files, whose loading would put the absolute name back."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        return compile(self.get_data(path), os.path.relpath(path, REPO), "exec", dont_inherit=True)


class RepoRelativeFinder:
    """Meta-path finder giving every tritonsrc module a RepoRelativeLoader."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "tritonsrc" and not name.startswith("tritonsrc."):
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path if path is not None else [str(REPO)])
        if spec is None or not isinstance(spec.loader, importlib.machinery.SourceFileLoader):
            return spec
        loader = RepoRelativeLoader(spec.name, spec.origin)
        return importlib.util.spec_from_file_location(
            spec.name, spec.origin, loader=loader, submodule_search_locations=spec.submodule_search_locations)


def use_repo_relative_sources():
    """From now on tritonsrc modules (not yet imported) get repo-relative file
    names. Call before anything imports tritonsrc."""
    if not any(isinstance(f, RepoRelativeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, RepoRelativeFinder())


def load_kernel_function(rule):
    """Import the rule's Triton source as a tritonsrc module (so that
    `from tritonsrc.x import y` works inside kernels)."""
    use_repo_relative_sources()
    module = importlib.import_module(rule.source[:-3].replace("/", "."))
    return getattr(module, rule.function)


def build_source(rule, fn, functional, config, arch=90):
    """Triton ASTSource for one functional + tuning config, with the argument
    order checked against the kernel's own parameter list. A kernel's USE_PDL
    constexpr (kernel_rules.Kernel.pdl) is set for rules with pdl on sm_90+
    (griddepcontrol needs it) and cleared otherwise."""
    from python.kernel_rules import TmaArg

    constexprs = {name: functional[name] for name in rule.constexpr_functionals}
    constexprs.update({name: config[name] for name in rule.tuning.constexpr_names()})
    if rule.pdl and "USE_PDL" not in fn.arg_names:
        raise ValueError(f"{rule.name}: pdl=True but the kernel has no USE_PDL constexpr parameter")
    if "USE_PDL" in fn.arg_names:
        constexprs["USE_PDL"] = use_pdl(rule, arch)
    runtime = {a.name: a for a in rule.args}
    params = list(fn.arg_names)
    expected = set(runtime) | set(constexprs)
    if set(params) != expected:
        missing = sorted(set(params) - expected)
        extra = sorted(expected - set(params))
        raise ValueError(f"rule and kernel disagree: kernel parameters not in the rule {missing}, "
                         f"rule names not kernel parameters {extra}")
    order = [p for p in params if p in runtime]
    if order != [a.name for a in rule.args]:
        raise ValueError(f"rule argument order {[a.name for a in rule.args]} != kernel order {order}")
    signature, attrs = {}, {}
    for i, p in enumerate(params):
        if p in runtime:
            arg = runtime[p]
            signature[p] = arg.triton_type(functional, config) if isinstance(arg, TmaArg) else arg.triton_type(functional)
            if runtime[p].divisibility and rule.hints_on(functional):
                attrs[(i,)] = [["tt.divisibility", runtime[p].divisibility]]
        else:
            signature[p] = "constexpr"
    return source_class(fn)(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)


def use_pdl(rule, arch) -> bool:
    """The USE_PDL constexpr of a kernel built for `arch` (griddepcontrol needs sm_90)."""
    return bool(rule.pdl and arch >= 90)


def source_class(fn):
    """ASTSource for @triton.jit kernels, GluonASTSource for @gluon.jit ones:
    that one sets the target's layout attributes before code generation and
    enters the pipeline at TTGIR. A plain ASTSource fails on Gluon code, and
    both hash alike, so a cached Gluon build can hide the mistake."""
    from triton.compiler import ASTSource

    if getattr(fn, "is_gluon", lambda: False)():
        from triton.experimental.gluon._runtime import GluonASTSource
        return GluonASTSource
    return ASTSource


def compile_one(rule, functional, config, arch, compile_dir=None):
    """compile_dir: where to compile from; it must not hold the repo-relative
    source paths, or ptxas finds the files and writes their mtimes into the
    line table (a cubin would then depend on when the checkout was made). The
    process returns to its directory afterwards (a caller's temporary compile_dir
    may go away: a test left there broke every later test that spawns a process)."""
    import triton
    from triton.backends.compiler import GPUTarget

    fn = load_kernel_function(rule)
    src = build_source(rule, fn, functional, config, arch)
    options = {k: config[k] for k in rule.tuning.LAUNCH_OPTIONS if config.get(k)}  # maxnreg 0: no cap
    cwd = os.getcwd()
    try:
        if compile_dir is not None:
            os.chdir(compile_dir)
        compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    finally:
        os.chdir(cwd)
    check_tma_meta(rule, functional, config, compiled)
    return compiled


# Triton numbers TMA element types on the device side its own way
# (triton/backends/nvidia/driver.py); the launcher encodes CUDA's enum.
_TMA_DEVICE_TO_CUDA_TYPE = {8: 10, 9: 8, 10: 9}


def check_tma_meta(rule, functional, config, compiled):
    """The descriptors the generated launcher will encode (TmaArg.expected_meta)
    must be the ones the compiled kernel expects, or TMA reads a wrong box."""
    from python.kernel_rules import TmaArg

    tma_args = [a for a in rule.args if isinstance(a, TmaArg)]
    got = list(getattr(compiled.metadata, "tensordesc_meta", None) or [])
    if len(got) != len(tma_args):
        raise ValueError(f"{rule.name}: the kernel has {len(got)} TMA descriptors, the rule declares {len(tma_args)}")
    for arg, meta in zip(tma_args, got):
        meta = dict(meta)
        meta["elem_type"] = _TMA_DEVICE_TO_CUDA_TYPE.get(meta["elem_type"], meta["elem_type"])
        have = {k: (list(meta[k]) if k == "block_size" else meta[k]) for k in ("swizzle", "elem_size", "elem_type", "block_size")}
        want = arg.expected_meta(functional, config)
        if have != want:
            raise ValueError(f"{rule.name}: TMA argument {arg.name}: the kernel expects {have}, the launcher would "
                             f"encode {want}")


def metadata_json(compiled, config_name, cubin_file):
    md = compiled.metadata
    return {
        "name": config_name,
        "symbol": md.name,
        "cubin": cubin_file,
        "shared": int(md.shared),
        "num_warps": int(md.num_warps),
        "num_ctas": int(md.num_ctas),
        "global_scratch_size": int(md.global_scratch_size),
        "global_scratch_align": int(md.global_scratch_align),
        "profile_scratch_size": int(md.profile_scratch_size),
        "profile_scratch_align": int(md.profile_scratch_align),
    }


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (ptxas)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kernel", required=True)
    ap.add_argument("--functional", required=True, help="JSON object")
    ap.add_argument("--config", required=True, help="JSON object")
    ap.add_argument("--arch", type=int, required=True)
    ap.add_argument("--out", required=True, help="output .cubin path; .json written beside it")
    ap.add_argument("--ptx", action="store_true",
                    help="also write the PTX (.ptx beside the cubin) for the runtime's PTX fallback")
    ap.add_argument("--rule-hash", default="", help="ignored; makes ninja rebuild when the rule changes")
    ap.add_argument("--timeout", type=int, default=int(os.environ.get("AOTRITON_COMPILE_TIMEOUT", 900)))
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    os.chdir(REPO)  # the relative source names resolve for inspect/linecache
    use_repo_relative_sources()
    from python.kernel_rules import config_name
    from python import rules

    functional = json.loads(args.functional)
    config = json.loads(args.config)
    what = (f"kernel {args.kernel}, functional {functional}, config {config_name(config)}, "
            f"arch sm_{args.arch}")
    try:
        rule = next(k for k in rules.KERNELS if k.name == args.kernel)
    except StopIteration:
        sys.exit(f"aotriton compile error: no rule named {args.kernel!r}")

    def on_alarm(signum, frame):
        raise CompileTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(args.timeout)
    t0 = time.time()
    cpu0 = cpu_seconds()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        compiled = compile_one(rule, functional, config, args.arch, compile_dir=out.parent)
    except CompileTimeout:
        sys.exit(f"aotriton compile TIMEOUT after {args.timeout}s: {what}")
    except Exception as e:  # report every compiler error with its coordinates
        sys.exit(f"aotriton compile FAILED: {what}\n  {type(e).__name__}: {e}")
    finally:
        signal.alarm(0)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".cubin.tmp")
    tmp.write_bytes(compiled.asm["cubin"])
    os.replace(tmp, out)
    meta = metadata_json(compiled, config_name(config), out.name)
    if args.ptx:
        ptx_path = out.with_suffix(".ptx")
        ptx_path.write_text(compiled.asm["ptx"])
        meta["ptx"] = ptx_path.name
    meta["compile_seconds"] = round(time.time() - t0, 3)
    meta["compile_cpu_seconds"] = round(cpu_seconds() - cpu0, 3)  # load-independent (tools/compile_times.py)
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
