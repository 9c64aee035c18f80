"""Every kernel's argument list (names, types, order), grid and grid args as
the rules expand them, against test/cpu/data/rule_signatures.json, which was
written from the hand-written Arg lists before Tensor existed (the kernels
main added later, the _vdim ones, attn_fwd_hopper and attn_decode's
keys_per_split, from main's hand-written lists at the merge): the Tensor
vocabulary changed no kernel's signature, so build.ninja's rule_hash and every
cubin stay the same. A deliberate change to a kernel's arguments updates the
file: python test/cpu/test_rule_signatures.py --update
"""
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data" / "rule_signatures.json"


def current():
    from python import rules
    return {k.name: {"args": [f"{a.name} {a.type}" for a in k.args], "grid": list(k.grid),
                     "grid_args": list(k.grid_args)} for k in rules.KERNELS}


def test_rule_signatures_unchanged():
    want = json.loads(DATA.read_text())
    got = current()
    changed = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    assert not changed, (f"kernel signatures differ from {DATA.name}: {changed}; if on purpose, run "
                         f"python {Path(__file__).relative_to(DATA.parents[3])} --update")


if __name__ == "__main__" and "--update" in sys.argv:
    sys.path.insert(0, str(DATA.parents[3]))  # run as a script: the repo root, where python/ is a package
    items = sorted(current().items())
    body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in items)
    DATA.write_text("{\n" + body + "\n}\n")
    print(f"wrote {DATA}")
