"""What the torch-layer tests (test/cpu/test_*_ops.py) share: a recorder of
the aten / custom ops a call dispatches, a guard that fails a test when a
traced call reaches the extension, and an aot_autograd backend that keeps the
forward and backward graphs it compiles."""
from torch.utils._python_dispatch import TorchDispatchMode


class RecordOps(TorchDispatchMode):
    """`with RecordOps() as rec:` -> rec.ops, the op packets dispatched."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def fail_on_launch(monkeypatch, module, names):
    """Replace module.<name> for each name by a function that fails the test."""
    def boom(*args, **kwargs):
        raise AssertionError("a traced call reached the extension")
    for name in names:
        monkeypatch.setattr(module, name, boom)


def graph_recording_backend(graphs):
    """An aot_autograd backend that stores str(graph) of the forward and the
    backward in graphs["fw"] / graphs["bw"] and runs them unchanged."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.aot_autograd import make_boxed_func

    def recorder(kind):
        def compile_graph(gm, example_inputs):
            graphs[kind] = str(gm.graph)
            return make_boxed_func(gm.forward)
        return compile_graph
    return aot_autograd(fw_compiler=recorder("fw"), bw_compiler=recorder("bw"))
