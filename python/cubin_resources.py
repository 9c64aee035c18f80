"""Registers, spills and the SASS of a compiled cubin, without a GPU: through
the cuobjdump that ships beside Triton's ptxas (Triton's CompiledKernel.n_regs
and n_spills are filled in only when a driver loads the kernel)."""
from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path


def cuobjdump(args: list[str], cubin: bytes, arch: int = 90) -> str:
    from triton.backends.nvidia.compiler import get_ptxas
    tool = Path(get_ptxas(arch).path).with_name("cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        return subprocess.run([str(tool), *args, f.name], check=True, capture_output=True, text=True).stdout


def resources(cubin: bytes) -> dict:
    """{"n_regs", "stack", "local"}: spills go to the stack frame (STL/LDL), so
    any stack or local bytes count as spills."""
    text = cuobjdump(["-res-usage"], cubin)
    usage = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", text)
    if usage is None:
        raise RuntimeError(f"no resource line in cuobjdump output:\n{text}")
    reg, stack, _static_shared, local = map(int, usage.groups())
    return {"n_regs": reg, "stack": stack, "local": local}
