"""The torch layer of a simple operator in one line. bindings/bind_op.h's
def_op records the operator's fields in pyaotriton.OP_SPECS (names in the C++
order, tensors with their rank, whether it takes a forced config); from them

    moe_sum = simple_op("moe_sum", {"out": lambda x: x.new_empty(x.shape[0], x.shape[2])})

makes the custom op torch.ops.aotriton.moe_sum(out!, x, force_config?) (the
fields in the C++ order; it writes the outputs in place, for torch.compile,
export and fake tensors) and returns the public function
moe_sum(x, out=None, *, force_config=None): the inputs in order, then each
output (allocated from the inputs when not given), then force_config. It
checks that every tensor is a CUDA tensor of one device with its field's rank
and that no input needs a gradient (simple operators have no backward), and
returns the output (a tuple for several).
"""
import pyaotriton as _C
import torch

from ._glue import check_same_device, eager_stream, traced, view

_SCHEMA_TYPES = {"tensor": "Tensor", "float": "float", "int": "int", "bool": "bool"}
_grad_enabled = torch.is_grad_enabled


def simple_op(name: str, outputs: dict, doc: str = ""):
    """outputs: {output field: function of the inputs (in order) that allocates it}."""
    fields, takes_config = _C.OP_SPECS[name]
    names = [f[0] for f in fields]
    rank = {f[0]: f[2] for f in fields if f[1] == "tensor"}
    if not outputs or not set(outputs) <= set(rank):
        raise ValueError(f"simple_op {name}: outputs {sorted(outputs)} must be tensor fields of {names}")
    inputs = [n for n in names if n not in outputs]
    outs = [n for n in names if n in outputs]
    anchor = next((n for n in inputs if n in rank), None)  # its device and stream serve the launch
    if anchor is None:
        raise ValueError(f"simple_op {name}: needs an input tensor (its device and stream serve the launch)")
    index = {n: i for i, n in enumerate(names)}

    def launch(*values):
        """The eager launch: the fields in the C++ order (then force_config)."""
        first = values[index[anchor]]
        stream = eager_stream(first)
        if stream is None:  # the default stream of another device: launch in its context
            with torch.cuda.device(first.get_device()):
                return launch(*values)
        args = [view(v, n) if n in rank else v for n, v in zip(names, values)]
        getattr(_C, name)(*args, stream, *values[len(names):])

    mutated = [f"Tensor(a{i}!) {n}" if n in outputs else f"{_SCHEMA_TYPES[kind]} {n}"
               for i, (n, kind, _) in enumerate(fields)]
    schema = "(" + ", ".join(mutated + (["str? force_config"] if takes_config else [])) + ") -> ()"
    op = torch.library.custom_op(f"aotriton::{name}", launch, mutates_args=tuple(outs), schema=schema)

    @op.register_fake
    def _(*values):
        ins = [values[index[n]] for n in inputs]
        for n in outs:
            want = tuple(outputs[n](*ins).shape)
            if tuple(values[index[n]].shape) != want:
                raise ValueError(f"{n} must have shape {want}, got {tuple(values[index[n]].shape)}")

    traced_op = getattr(torch.ops.aotriton, name)

    tensors = [n for n in names if n in rank]
    in_tensors = [n for n in inputs if n in rank]

    def call(ins, given, config):
        named = dict(zip(inputs, ins))
        named.update(zip(outs, given))
        try:  # the common case cheaply; the checks below name the problem otherwise
            device = named[anchor].get_device()
            same = (device >= 0 and all(named[n].get_device() == device for n in in_tensors)
                    and all(named[n] is None or named[n].get_device() == device for n in outs))
        except AttributeError:
            same = False
        if not same:
            for n in in_tensors:  # outputs may be None (allocated below), inputs not
                if named[n] is None:
                    raise TypeError(f"{n} must be a torch.Tensor, got None")
            check_same_device((n, named[n]) for n in tensors)
        for n, r in rank.items():
            t = named[n]
            if t is not None and t.dim() != r:
                raise ValueError(f"{name}: {n} must be a {r}-D tensor, got shape {tuple(t.shape)}")
        if _grad_enabled() and any(n in rank and named[n].requires_grad for n in inputs):
            raise NotImplementedError(f"aotriton {name} has no backward: call it under torch.no_grad() / "
                                      f"torch.inference_mode(), or on tensors that do not require grad")
        for n in outs:
            if named[n] is None:
                named[n] = outputs[n](*ins)
        values = [named[n] for n in names] + ([config] if takes_config else [])
        (traced_op if traced(named[anchor]) else launch)(*values)
        return named[outs[0]] if len(outs) == 1 else tuple(named[n] for n in outs)

    # The public function with its real signature (what help() and keyword callers see).
    params = inputs + [f"{n}=None" for n in outs] + (["*", "force_config=None"] if takes_config else [])
    source = (f"def {name}({', '.join(params)}):\n"
              f"    return _call(({''.join(n + ', ' for n in inputs)}), ({''.join(n + ', ' for n in outs)}), "
              f"{'force_config' if takes_config else 'None'})\n")
    namespace = {"_call": call}
    exec(compile(source, f"<aotriton simple_op {name}>", "exec"), namespace)  # noqa: S102 - names from OP_SPECS
    public = namespace[name]
    public.__doc__ = doc
    public.__module__ = "aotriton"
    return public
