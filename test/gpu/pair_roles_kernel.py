"""A one-line Gluon harness around the int4 GEMM's _pair_role (tritonsrc/moe/grouped_gemm_wq_hopper.py):
program b stores the role block b's program takes (0 alone, 1 leads a pair, 2 its block is run by the
previous program). The GEMM's own outputs cannot show which program ran a block; this can."""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

from tritonsrc.moe.grouped_gemm_wq_hopper import _pair_role


@gluon.jit
def pair_roles_kernel(expert_ids_ptr, ntpp_ptr, roles_ptr, EM):
    pid_m = gl.program_id(0)
    expert = gl.load(expert_ids_ptr + pid_m).to(gl.int64)
    gl.store(roles_ptr + pid_m, _pair_role(expert_ids_ptr, pid_m, expert, gl.load(ntpp_ptr), EM, 16))
