"""tools/sass_loops.py (loop SASS counts without a GPU) keeps working: it compiles
a rule's functional, finds the loops by their backward branches and counts them."""
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_counts_the_loops_of_a_kernel():
    r = subprocess.run([sys.executable, str(REPO / "tools/sass_loops.py"), "moe_sum", "--functional",
                        '{"dtype": "fp16"}', "--config", '{"BLOCK": 256}', "--min-size", "1"],
                       capture_output=True, text=True, timeout=300, cwd=REPO,
                       env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert r.returncode == 0, r.stderr
    assert re.search(r"resources \{'n_regs': \d+", r.stdout), r.stdout
    loops = re.findall(r"loop 0x[0-9a-f]+-0x[0-9a-f]+: (\d+) instructions", r.stdout)
    assert loops and all(int(n) > 0 for n in loops), r.stdout  # moe_sum loops over the top-k rows
