"""What the bench scripts share: the commit their results were measured at, and
writing a result file."""
import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def commit_id(short=True):
    """$AOTRITON_COMMIT (a device copy's .git may be stale), else git's HEAD,
    else "unknown"."""
    if os.environ.get("AOTRITON_COMMIT"):
        return os.environ["AOTRITON_COMMIT"]
    cmd = ["git", "-C", str(REPO), "rev-parse"] + (["--short"] if short else []) + ["HEAD"]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def write_results(doc, path, out_name):
    """doc as JSON at `path` and, when $OUT is set (a device run), at $OUT/out_name too."""
    for p in [path] + ([os.path.join(os.environ["OUT"], out_name)] if os.environ.get("OUT") else []):
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_text(json.dumps(doc, indent=1) + "\n")
        print(f"wrote {p}")
