"""Rule grids are C++ expressions that python/jit_launch.py evaluates the same
way: the helpers they may use (cdiv, grid_min, select) exist on both sides,
and the sm_90 forward's grid is one CTA per (query block, batch x head) for
its one-CTA-per-block schedules and min(tiles, SMs) CTAs for the persistent one."""
import re
from pathlib import Path

import pytest

from python.jit_launch import grid_of
from python.rules_flash_hopper import attn_fwd_hopper

REPO = Path(__file__).resolve().parents[2]


def _grid(schedule, seqlen_q, num_seqs, heads, sms):
    return grid_of(attn_fwd_hopper, dict(seqlen_q=seqlen_q, num_seqs=num_seqs, num_heads_q=heads, num_sms=sms,
                                         BLOCK_M=128, SCHEDULE=schedule))


@pytest.mark.parametrize("schedule", [0, 3])
def test_one_cta_per_query_block(schedule):
    assert _grid(schedule, 1000, 3, 16, 132) == (8, 48, 1)


@pytest.mark.parametrize("seqlen_q,num_seqs,heads,want", [
    (1000, 3, 16, 132),   # 384 tiles: one CTA per SM
    (1000, 1, 2, 16),     # 16 tiles: one CTA per tile
    (1, 1, 1, 1),
])
def test_persistent_grid_is_min_of_tiles_and_sms(seqlen_q, num_seqs, heads, want):
    assert _grid(4, seqlen_q, num_seqs, heads, 132) == (want, 1, 1)


def test_cpp_has_every_grid_helper():
    header = (REPO / "v2src" / "kernel_runtime.h").read_text()
    for name in ("cdiv", "grid_min", "select"):
        assert re.search(rf"inline int64_t {name}\(", header), name
