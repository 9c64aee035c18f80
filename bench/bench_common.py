"""What the bench scripts share: the commit their results were measured at."""
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
