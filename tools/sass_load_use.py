"""How far each global load in a loop body is from its first use (tools/sass_loops.py --load-use).

A latency-bound loop waits wherever a load's first reader comes too soon after it: the int4
decode GEMM's activations and scales were read at the end of the iteration that loaded them
(docs/notes-moe-perf.md, twenty-third session). For every LDG in the body this finds the first
later instruction, going round the back edge once, that reads one of the registers it writes,
and how many instructions lie between them.
"""
import re

_REG = re.compile(r"\bR(\d+)\b")
_WIDTH = {"64": 2, "128": 4}
# Opcodes whose first operand is read, not written.
_NO_DEST = ("ST", "RED", "ATOM", "BAR", "BRA", "EXIT", "MEMBAR", "FENCE", "DEPBAR", "WARPGROUP", "LDGDEPBAR")


def without_guard(ins: str) -> str:
    """The instruction text without its predicate guard (@P0, @!UP1, ...)."""
    return re.sub(r"^@!?U?P\w+\s+", "", ins.strip())


def _opcode_and_operands(ins: str):
    op, _, rest = without_guard(ins).rstrip(";").partition(" ")
    return op, [o.strip() for o in rest.split(",")] if rest else []


def _loaded_registers(op: str, operands):
    """The registers a global load (LDG, not LDGSTS/LDGDEPBAR) writes, else None."""
    parts = op.split(".")
    if parts[0] != "LDG" or not operands:
        return None
    m = _REG.fullmatch(operands[0])
    if not m:
        return None
    width = next((_WIDTH[p] for p in parts[1:] if p in _WIDTH), 1)
    return set(range(int(m.group(1)), int(m.group(1)) + width))


def _read_registers(op: str, operands):
    sources = operands if op.startswith(_NO_DEST) else operands[1:]
    return {int(r) for o in sources for r in _REG.findall(o)}


def load_uses(body):
    """[(load index, load text, first use index or None, distance, next trip)] for a loop body
    (instruction texts in order; the last is the backward branch). A use in the next trip
    (next trip True) lies past the back edge; distance counts the instructions from the load to
    it, wrapping round."""
    parsed = [_opcode_and_operands(ins) for ins in body]
    out = []
    n = len(body)
    for i, (op, operands) in enumerate(parsed):
        regs = _loaded_registers(op, operands)
        if regs is None:
            continue
        use = None
        for step in range(1, n):
            j = (i + step) % n
            if regs & _read_registers(*parsed[j]):
                use = j
                break
        distance = None if use is None else (use - i) % n
        out.append((i, body[i].strip(), use, distance, use is not None and use < i))
    return out


def report(body) -> list[str]:
    lines = []
    for i, ins, use, distance, next_trip in load_uses(body):
        if use is None:
            lines.append(f"  [{i}] {ins}: no reader in the loop")
        else:
            where = "next trip" if next_trip else "same trip"
            lines.append(f"  [{i}] {ins}: first read at [{use}] {body[use].strip().split()[0]}, "
                         f"{distance} of {len(body)} instructions later ({where})")
    return lines
