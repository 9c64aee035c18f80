"""The declarative vocabulary of rules.py: kernels, arguments, functional and
tuning spaces, autotune keys and build profiles.

Nothing here knows about a particular kernel; generate.py only reads these
objects. Adding a kernel (the Triton file, one `Kernel(...)` in a
rules_<family>.py, a thin C++ operator, its public declaration, a test; for
Python, the def_op and simple_op lines): docs/adding-a-kernel.md.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

# Triton scalar type name -> C++ type of the argument.
SCALAR_TYPES = {"i32": "int32_t", "i64": "int64_t", "u32": "uint32_t", "u64": "uint64_t", "fp32": "float"}

_ARG_RE = re.compile(r"^(?P<ptr>\*)?(?P<base>\{\w+\}|\w+)(?::(?P<div>16|8))?$")


@dataclass(frozen=True)
class Arg:
    """One runtime kernel argument, in kernel order.

    `type` is Triton's signature spelling: "*fp16:16" (pointer, 16-byte
    aligned), "*{dtype}" (pointee taken from the functional named dtype),
    "i32", "i64", "fp32", "i32:16" / "i32:8" (integer divisible by 16 / 8). ":16" is the
    divisibility hint Triton specializes on (vector loads, wgmma); the
    generated launcher checks it at run time: a violation is an error, or, for
    kernels declared with `unaligned_variant=True`, selects the variant
    compiled without the hints.
    """

    name: str
    type: str

    def __post_init__(self):
        m = _ARG_RE.match(self.type)
        if not m:
            raise ValueError(f"argument {self.name}: cannot parse type {self.type!r}")
        if not m["ptr"] and m["base"] not in SCALAR_TYPES:
            raise ValueError(f"argument {self.name}: unknown scalar type {m['base']!r}")
        if m["div"] and not m["ptr"] and m["base"] not in ("i32", "i64"):
            raise ValueError(f"argument {self.name}: ':{m['div']}' needs a pointer or an integer")
        if m["div"] == "8" and m["ptr"]:
            raise ValueError(f"argument {self.name}: pointers take ':16' only")

    @property
    def is_pointer(self) -> bool:
        return self.type.startswith("*")

    @property
    def divisibility(self) -> int:
        """The divisibility hint (16 or 8), 0 for none."""
        div = _ARG_RE.match(self.type)["div"]
        return int(div) if div else 0

    @property
    def base(self) -> str:
        return _ARG_RE.match(self.type)["base"]

    def triton_type(self, functional: Mapping[str, Any]) -> str:
        """Signature string for triton.compile with templates resolved."""
        base = self.base
        if base.startswith("{"):
            base = str(functional[base[1:-1]])
        return ("*" if self.is_pointer else "") + base

    def cpp_type(self) -> str:
        return "const void*" if self.is_pointer else SCALAR_TYPES[self.base]


# Element size in bytes and CUtensorMapDataType of the dtypes a TmaArg takes
# (fp8 goes through TMA as bytes).
TMA_ELEMENT = {"fp16": (2, 6), "bf16": (2, 9), "fp32": (4, 7), "fp8e4nv": (1, 0), "i8": (1, 0), "u8": (1, 0)}


def pow2ceil(x: int) -> int:
    """The smallest power of two >= x (TmaArg block expressions)."""
    p = 1
    while p < x:
        p *= 2
    return p


@dataclass(frozen=True)
class TmaArg:
    """A tensor passed as a host-side TMA descriptor (sm_90+), the argument
    of a kernel parameter that Triton types `tensordesc<...>`.

    `block` is the descriptor's block shape, outermost dimension first, as
    expressions over integers, functional / tuning names and `pow2ceil(x)`
    (a box larger than the tensor reads zeros past its end, which pads a head
    dim of 192 to 256). The C++ side passes a TmaTensor (pointer, shape and
    strides in elements, last stride 1); the launcher encodes the CUtensorMap
    with the box and shared-memory swizzle of `encoding` (the swizzle Triton's
    default NVMMA layout picks for the block), so no device scratch is needed
    and a CUDA graph captures the descriptor by value. The generator computes
    `encoding` for every compiled config into the launcher's tables
    (codegen_cpp.py), and compile_kernel.py checks the compiled kernel's
    descriptor metadata against the same values (`expected_meta`), so this
    rule, the launcher and Triton cannot silently disagree.
    """

    name: str
    dtype: str  # "{dtype}" (a type functional) or a fixed dtype name
    block: tuple

    is_pointer = False
    divisibility = 0

    @property
    def base(self) -> str:
        return self.dtype

    @property
    def type(self) -> str:
        return f"tma<{self.dtype}>[{', '.join(self.block)}]"

    def resolved_dtype(self, functional: Mapping[str, Any]) -> str:
        return str(functional[self.dtype[1:-1]]) if self.dtype.startswith("{") else self.dtype

    def block_shape(self, functional: Mapping[str, Any], config: Mapping[str, int]) -> list[int]:
        names = {**functional, **config, "pow2ceil": pow2ceil}
        return [int(eval(e, {"__builtins__": {}}, names)) for e in self.block]  # noqa: S307 - rule text

    @staticmethod
    def swizzle_bytes(block: Sequence[int], elem_bytes: int) -> int:
        """Triton's default NVMMA swizzle for a block (the widest that divides
        the contiguous row; none for fewer than 8 rows)."""
        rows = 1
        for b in block[:-1]:
            rows *= b
        contig = block[-1] * elem_bytes
        if rows < 8:
            return 0
        return next((w for w in (128, 64, 32) if contig >= w and contig % w == 0), 0)

    def layout(self, functional, config):
        from triton.experimental.gluon.language._layouts import NVMMASharedLayout
        block = self.block_shape(functional, config)
        elem = TMA_ELEMENT[self.resolved_dtype(functional)][0]
        return NVMMASharedLayout(swizzle_byte_width=self.swizzle_bytes(block, elem), element_bitwidth=8 * elem,
                                 rank=len(block))

    def triton_type(self, functional: Mapping[str, Any], config: Mapping[str, int] | None = None) -> str:
        block = self.block_shape(functional, config or {})
        return f"tensordesc<{self.resolved_dtype(functional)}[{', '.join(map(str, block))}],{self.layout(functional, config or {})!r}>"

    def encoding(self, functional, config) -> tuple[list[int], int]:
        """(box, swizzle) the launcher encodes for one compiled config: the box
        outermost first with its inner dimension cut to the swizzle width, the
        swizzle as CUtensorMapSwizzle (0 none, 1: 32, 2: 64, 3: 128 bytes)."""
        block = self.block_shape(functional, config)
        elem = TMA_ELEMENT[self.resolved_dtype(functional)][0]
        sw = self.swizzle_bytes(block, elem)
        box = list(block)
        if sw:
            box[-1] = min(box[-1], sw // elem)
        return box, {0: 0, 32: 1, 64: 2, 128: 3}[sw]

    def expected_meta(self, functional, config) -> dict:
        """What the generated launcher encodes: swizzle enum, element size and
        CUtensorMapDataType, box (inner dimension cut to the swizzle width)."""
        elem, cu_type = TMA_ELEMENT[self.resolved_dtype(functional)]
        box, swizzle = self.encoding(functional, config)
        return {"swizzle": swizzle, "elem_size": elem, "elem_type": cu_type, "block_size": box}

    def cpp_type(self) -> str:
        return "TmaTensor"


@dataclass(frozen=True)
class AutotuneKey:
    """A runtime integer argument whose value selects the tuning config.

    Values are binned by `bins` (ascending upper bounds); a value above the
    last bound falls in the last bin.
    """

    arg: str
    bins: Sequence[int]


@dataclass
class TuningSpace:
    """Tuning constexprs plus launch options (num_warps, num_stages).

    `params` maps a name to its candidate values; `prune(functional, config,
    arch)` drops configs that cannot work (shared memory, registers);
    `default(functional, arch)` is the config used with no tuning database.
    """

    params: Mapping[str, Sequence[int]]
    default: Callable[[Mapping[str, Any], int], Mapping[str, int]]
    prune: Callable[[Mapping[str, Any], Mapping[str, int], int], bool] = lambda f, c, a: True

    # Compile options, not kernel constexprs. maxnreg caps registers per thread
    # (0: no cap), e.g. to fit two CTAs of 8 warps on an SM.
    LAUNCH_OPTIONS = ("num_warps", "num_stages", "maxnreg")

    def all_configs(self, functional, arch) -> list[dict]:
        names = sorted(self.params)
        out = []
        for values in itertools.product(*(self.params[n] for n in names)):
            cfg = dict(zip(names, values))
            if self.prune(functional, cfg, arch):
                out.append(cfg)
        return out

    def constexpr_names(self) -> list[str]:
        return sorted(n for n in self.params if n not in self.LAUNCH_OPTIONS)


def config_name(cfg: Mapping[str, int]) -> str:
    """Canonical, sortable name of a tuning config (stored in the image)."""
    return ",".join(f"{k}={cfg[k]}" for k in sorted(cfg))


@dataclass
class Kernel:
    """One Triton kernel and everything needed to compile and launch it.

    functional: constexpr (or type-template) name -> allowed values. Values
        appearing in arg types as {name} are types, the rest are passed to the
        kernel as constexprs.
    valid(functional, arch): False for combinations that make no sense (e.g.
        dropout mask without dropout, fp8 on sm_80).
    grid: three C++ expressions over argument names, functional and tuning
        constexprs; `cdiv(a, b)`, `grid_min(a, b)` and `select(cond, a, b)` are available.
    """

    name: str
    source: str  # path relative to the repo root, e.g. "tritonsrc/moe/activation.py"
    function: str
    args: Sequence[Arg]
    functional: Mapping[str, Sequence[Any]]
    tuning: TuningSpace
    grid: tuple[str, str, str]
    autotune_keys: Sequence[AutotuneKey] = ()
    valid: Callable[[Mapping[str, Any], int], bool] = lambda f, arch: True
    doc: str = ""
    # Integer values the C++ launcher needs for the grid or an autotune key but
    # the kernel does not take (e.g. the batch size when the kernel only sees
    # batch * heads, the slots per expert of the MoE GEMM).
    grid_args: Sequence[str] = ()
    # Also compile every functional without the ":16" hints, used when a call's
    # pointers/strides are not 16-divisible (otherwise such a call is an error).
    unaligned_variant: bool = False
    # fallbacks(functional) -> functionals that compute the same result for
    # every call the first one accepts (e.g. a padded-head kernel serves an
    # exact head dim, the unaligned variant serves aligned data), most
    # specific first. A call whose own functional is not in the build (or not
    # valid) runs the first of them that is; chosen at generate time, so it
    # costs nothing at run time. They may not change a value the grid uses.
    fallbacks: Callable[[Mapping[str, Any]], Sequence[Mapping[str, Any]]] = lambda f: ()
    # rare(functional) -> True for functionals the release profile does not
    # compile because a fallback serves them (rare dtypes, odd layouts, debug
    # paths); generate.py refuses a rare functional that no built fallback serves.
    rare: Callable[[Mapping[str, Any]], bool] = lambda f: False
    # Profiles (besides release/tune) that compile part of this kernel:
    # profile name -> keep(functional); a profile not named compiles all of it.
    profiles: Mapping[str, Callable[[Mapping[str, Any]], bool]] = field(default_factory=dict)
    # Programmatic dependent launch (sm_90+): the kernel takes `USE_PDL: tl.constexpr
    # = False` and, when it is set, waits for the grids before it in the stream
    # (tritonsrc/pdl.py) before it touches global memory. The build sets USE_PDL on
    # sm_90 and later; the runtime may then launch it before its predecessor ends
    # (on by default; AOTRITON_PDL=0 turns it off). For the short
    # kernels of decode chains, where a launch costs as much as the work.
    pdl: bool = False

    ALIGNED = "ALIGNED16"  # the implicit functional that unaligned_variant adds

    def __post_init__(self):
        names = [a.name for a in self.args]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: duplicate argument names")
        for a in self.args:
            b = a.base
            if b.startswith("{") and b[1:-1] not in self.functional:
                raise ValueError(f"{self.name}: argument {a.name} uses unknown functional {b}")
        for key in self.autotune_keys:
            if key.arg not in names and key.arg not in self.grid_args:
                raise ValueError(f"{self.name}: autotune key {key.arg} is neither an argument nor a grid_arg")
        clash = set(self.functional) & set(self.tuning.params)
        if clash:
            raise ValueError(f"{self.name}: {clash} both functional and tuning")
        kernel_tensors(self)  # a Tensor's pointer and strides are all arguments

    @property
    def functional_space(self) -> dict:
        """Declared functionals plus the implicit ALIGNED16 dimension."""
        space = dict(self.functional)
        if self.unaligned_variant:
            space[self.ALIGNED] = [True, False]
        return space

    def hints_on(self, functional: Mapping[str, Any]) -> bool:
        return functional.get(self.ALIGNED, True)

    @property
    def type_params(self) -> list[str]:
        """Functional names used as pointee types in argument types."""
        used = {a.base[1:-1] for a in self.args if a.base.startswith("{")}
        return [n for n in self.functional if n in used]

    @property
    def constexpr_functionals(self) -> list[str]:
        return [n for n in self.functional if n not in self.type_params]

    def functionals(self, arch: int) -> list[dict]:
        """Every valid functional combination for `arch`, in declaration order."""
        space = self.functional_space
        names = list(space)
        combos = itertools.product(*(space[n] for n in names))
        return [dict(zip(names, c)) for c in combos if self.valid(dict(zip(names, c)), arch)]


def declare_profile_subsets(kernels: Sequence[Kernel], profile: str,
                            subsets: Mapping[str, Callable[[Mapping[str, Any]], bool]]) -> None:
    """Sets kernel.profiles[profile] from a kernel name -> keep(functional)
    table; a name that matches no kernel is an error (a renamed kernel would
    otherwise silently land in the profile whole)."""
    by_name = {k.name: k for k in kernels}
    unknown = sorted(set(subsets) - set(by_name))
    if unknown:
        raise ValueError(f"profile {profile}: subsets name no kernel: {unknown}")
    for name, keep in subsets.items():
        by_name[name].profiles = {**by_name[name].profiles, profile: keep}


def functional_name(functional: Mapping[str, Any]) -> str:
    """Readable, file-name-safe name: dtype=fp16,CAUSAL=1 -> dtype-fp16__CAUSAL-1."""
    def fmt(v):
        return str(int(v)) if isinstance(v, bool) else str(v)
    return "__".join(f"{k}-{fmt(v)}" for k, v in functional.items())


@dataclass
class Profile:
    """A build profile: which functionals and which tuning configs to compile.

    keep(kernel_name, functional) narrows the functional space;
    tuning is "default" (default config + tuning-database winners) or "all".
    """

    name: str
    description: str
    keep: Callable[[str, Mapping[str, Any]], bool] = lambda k, f: True
    tuning: str = "default"
    kernels: Sequence[str] | None = None  # None: every kernel
    skip_rare: bool = False  # leave Kernel.rare functionals to their fallbacks

    def includes_kernel(self, kernel: str) -> bool:
        return self.kernels is None or kernel in self.kernels

    def builds(self, rule: Kernel, functional: Mapping[str, Any]) -> bool:
        """Whether this profile compiles `functional` of `rule` (validity aside)."""
        if not self.includes_kernel(rule.name) or not self.keep(rule.name, functional):
            return False
        if self.skip_rare and rule.rare(functional):
            return False
        return rule.profiles.get(self.name, lambda f: True)(functional)


# ----------------------------------------------------------------------------
# Tensors: a pointer argument and the stride arguments that address it,
# declared once. A Tensor expands into plain Args (TensorParts), so the
# kernel's signature, and its cubins, are what the hand-written Arg list gave;
# the generator also reads the grouping (generated C++ Inputs/make_args, the
# JIT launcher).
# ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TensorPart(Arg):
    """An Arg that is the pointer (dim "") or one stride (dim "z", "row", ...) of a Tensor."""

    tensor: str = ""
    dim: str = ""
    tensor_dims: tuple = ()  # every stride dim of the tensor, to check none is left out


@dataclass(frozen=True)
class Tensor:
    """A tensor argument of a kernel, in the kernel's own terms.

    Tensor("Q", dtype="{dtype}", dims="zhm", align=16, stride="i32:8") is the
    pointer Arg("Q", "*{dtype}:16") plus Arg("stride_qz", "i32:8"),
    Arg("stride_qh", "i32:8"), Arg("stride_qm", "i32:8"). Place them in the
    kernel's argument order with `Q.ptr` and `*Q.strides` (Triton signatures
    often list every pointer before any stride).

    dims: the dims whose strides the kernel takes, in kernel order: a string
        of one-letter names or a tuple of longer ones (("row",)); dims it does
        not take (the contiguous head dim) are not listed.
    rank: the rank the kernel addresses (listed dims plus contiguous ones);
        documentation and a check that dims fit in it.
    align: 16 for a 16-byte aligned pointer (Triton's ":16" hint), else 0.
    stride: the type of every stride argument ("i32", "i32:8", "i64").
    prefix: stride argument name = prefix + dim; default "stride_" + the
        lower-case name without a "_ptr" suffix ("a_ptr" -> "stride_a").
    """

    name: str
    dtype: str
    dims: str | tuple = ""
    rank: int | None = None
    align: int = 0
    stride: str = "i32"
    prefix: str | None = None

    def __post_init__(self):
        if self.align not in (0, 16):
            raise ValueError(f"tensor {self.name}: align must be 0 or 16")
        if self.rank is not None and len(self.dim_names) > self.rank:
            raise ValueError(f"tensor {self.name}: {len(self.dim_names)} strides for rank {self.rank}")
        if len(set(self.dim_names)) != len(self.dim_names):
            raise ValueError(f"tensor {self.name}: repeated dim in {self.dims!r}")
        self.ptr, self.strides  # parse the types now: a bad spelling fails at declaration

    @property
    def dim_names(self) -> tuple:
        return tuple(self.dims)

    @property
    def stride_prefix(self) -> str:
        if self.prefix is not None:
            return self.prefix
        base = self.name.lower()
        return "stride_" + (base[:-4] if base.endswith("_ptr") else base)

    @property
    def ptr(self) -> TensorPart:
        return TensorPart(self.name, f"*{self.dtype}" + (":16" if self.align else ""), tensor=self.name,
                          tensor_dims=self.dim_names)

    @property
    def strides(self) -> list:
        return [TensorPart(self.stride_prefix + d, self.stride, tensor=self.name, dim=d, tensor_dims=self.dim_names)
                for d in self.dim_names]

    @property
    def args(self) -> list:
        """Pointer then strides (for kernels that take them together)."""
        return [self.ptr, *self.strides]


def kernel_tensors(rule: Kernel) -> dict:
    """Tensor name -> (pointer Arg, [stride Args in kernel order]) of a rule,
    in the order of the pointers; every tensor's pointer and strides must all
    be arguments (a dropped stride is an error here, not a wrong address)."""
    out: dict = {}
    for a in rule.args:
        if isinstance(a, TensorPart):
            ptr, strides = out.setdefault(a.tensor, [None, []])
            if a.dim:
                strides.append(a)
            else:
                out[a.tensor][0] = a
    for name, (ptr, strides) in out.items():
        if ptr is None:
            raise ValueError(f"{rule.name}: tensor {name} has strides but its pointer is not an argument")
        if tuple(sorted(s.dim for s in strides)) != tuple(sorted(ptr.tensor_dims)):
            raise ValueError(f"{rule.name}: tensor {name} takes strides {ptr.tensor_dims}, "
                             f"the arguments have {tuple(s.dim for s in strides)}")
    return {n: (p, s) for n, (p, s) in out.items()}
