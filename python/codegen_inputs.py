"""Generated marshalling of one kernel: an `Inputs` struct that names every
value the kernel takes (tensors as pointer + the strides of the rule's dims,
scalars, grid-only integers), and `make_args`, which fills the kernel's Args
from it with each integer narrowed to its argument's type (out of range is
an error naming the argument).

Every Inputs field is `Required<T>` (v2src/kernel_inputs.h): it has no
default, so an operator that leaves a field out of its designated
initializer does not compile; operators never fill Args by hand.
"""
from __future__ import annotations

from python.kernel_rules import Kernel, TensorPart, kernel_tensors

# Integer argument types narrowed from int64_t (ranges checked at run time).
_INTEGER_TYPES = {"int32_t", "uint32_t", "int64_t", "uint64_t"}


def _fields(rule: Kernel) -> list[tuple[str, str, str]]:
    """(field name, field type, comment) in kernel order; a tensor sits at its pointer."""
    tensors = kernel_tensors(rule)
    out = []
    for a in rule.args:
        if isinstance(a, TensorPart):
            if a.dim:
                continue
            strides = tensors[a.tensor][1]
            if strides:
                dims = ", ".join(s.dim for s in strides)
                out.append((a.tensor, f"KernelTensor<{len(strides)}>",
                            f"{a.type}; strides of {dims} ({strides[0].type})"))
            else:
                out.append((a.tensor, "const void*", a.type))
            continue
        ctype = a.cpp_type()
        if ctype in _INTEGER_TYPES:
            out.append((a.name, "int64_t", a.type))
        else:
            out.append((a.name, ctype, a.type))
    for g in rule.grid_args:
        out.append((g, "int64_t", "grid only"))
    return out


def header(rule: Kernel) -> str:
    """Declarations appended to the kernel's generated header (inside its namespace)."""
    out = ["\n// Everything the kernel takes, by name (python/codegen_inputs.py). Fill it with a\n"
           "// designated initializer: every field is Required, so leaving one out does not compile.\n"
           "struct Inputs {\n"]
    for name, ftype, comment in _fields(rule):
        out.append(f"  Required<{ftype}> {name};  // {comment}\n")
    out.append("};\n\n"
               "// Args from `in`: tensors' pointers and strides, integers narrowed to their\n"
               "// argument types (kInvalidArgument naming the argument when one does not fit).\n"
               "Status make_args(const Inputs& in, Args* out);\n\n"
               "// make_args, then launch.\n"
               "Status launch(const Inputs& in, const Functional& functional, Stream stream,\n"
               "              const KernelOptions* options);\n\n")
    return "".join(out)


def source(rule: Kernel) -> str:
    """make_args, appended to the kernel's generated source (inside its namespace)."""
    k = rule.name
    tensors = kernel_tensors(rule)
    out = ["Status make_args(const Inputs& in, Args* out) {\n  Args a{};\n"]

    def assign(field: str, expr: str, ctype: str, what: str):
        if ctype in _INTEGER_TYPES:
            out.append(f'  AOTRITON_RETURN_IF_ERROR(narrow_arg("{k}", "{what}", {expr}, &a.{field}));\n')
        else:
            out.append(f"  a.{field} = {expr};\n")

    for a in rule.args:
        if isinstance(a, TensorPart):
            if a.dim:
                i = [s.dim for s in tensors[a.tensor][1]].index(a.dim)
                assign(a.name, f"in.{a.tensor}.value.strides[{i}]", a.cpp_type(),
                       f"{a.name} ({a.tensor}'s {a.dim} stride)")
            elif tensors[a.tensor][1]:
                out.append(f"  a.{a.name} = in.{a.tensor}.value.ptr;\n")
            else:
                out.append(f"  a.{a.name} = in.{a.tensor}.value;\n")
        else:
            assign(a.name, f"in.{a.name}.value", a.cpp_type(), a.name)
    for g in rule.grid_args:
        out.append(f"  a.{g} = in.{g}.value;\n")
    out.append("  *out = a;\n  return Status::kSuccess;\n}\n\n")
    out.append("Status launch(const Inputs& in, const Functional& functional, Stream stream,\n"
               "              const KernelOptions* options) {\n"
               "  Args args;\n  AOTRITON_RETURN_IF_ERROR(make_args(in, &args));\n"
               "  return launch(args, functional, stream, options);\n}\n\n")
    return "".join(out)
