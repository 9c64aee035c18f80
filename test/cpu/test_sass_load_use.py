"""tools/sass_load_use.py: how far each global load in a loop body is from its first reader."""
from tools.sass_load_use import load_uses  # the repository root is on pytest's pythonpath

BODY = [
    "LDG.E.128 R16, desc[UR8][R16.64]",    # 0: R16-R19
    "LDG.E R84, desc[UR8][R30.64]",        # 1: R84
    "IADD3 R2, R3, R4, RZ",                # 2
    "STS [R9+UR5+0x8000], R38",            # 3: reads R9, R38 (no destination)
    "@P1 PRMT R37, R19, 0x7632, R7",       # 4: reads R19 (the 128-bit load's last register)
    "FFMA R10, R5, R6, R10",               # 5
    "IMAD.MOV.U32 R6, RZ, RZ, R20",        # 6
    "LDG.E.U8 R5, desc[UR8][R12.64]",      # 7: R5, read at 5 in the next trip
    "FFMA R11, R84, R6, R11",              # 8: reads R84
    "@P2 BRA @0x1d40",                     # 9
]


def test_first_readers_and_distances():
    uses = {i: (use, dist, nxt) for i, _, use, dist, nxt in load_uses(BODY)}
    assert uses == {0: (4, 4, False), 1: (8, 7, False), 7: (5, 8, True)}


def test_a_load_nobody_reads():
    body = ["LDG.E R40, desc[UR8][R2.64]", "IADD3 R2, R3, R4, RZ", "BRA @0x100"]
    assert load_uses(body) == [(0, body[0], None, None, False)]


def test_ldgsts_is_not_a_register_load():
    body = ["LDGSTS.E.BYPASS.128 [R41], desc[UR8][R24.64]", "LDGDEPBAR", "IADD3 R41, R41, 0x10, RZ", "BRA @0x0"]
    assert load_uses(body) == []
