#!/usr/bin/env python3
"""Seed stores for the image store fuzzer: the test suite's sample stores, plus
the smallest real stores of a build (if given), into OUT_DIR."""
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / "test" / "cpu")]  # python/ is a package at the repo root
from python import image_store as S  # noqa: E402
import test_image_store as T  # noqa: E402


def main(out: str, images: str = "", max_real: int = 8, max_bytes: int = 256 << 10) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    S.write_store(out_dir / "sample.aks", entries=T.sample_entries(), **T.STORE_META)
    S.write_store(out_dir / "two.aks", entries=T.sample_entries(3)[:2],
                  **dict(T.STORE_META, arch=80, kernel="moe", functional=""))
    S.write_store(out_dir / "one.aks", entries=[S.StoreEntry("c", "sym", b"x", 0, 1, 1)], arch=80, kernel="k",
                  functional="", triton_version="")
    if images and Path(images).is_dir():
        real = sorted((p for p in Path(images).rglob("*.aks") if p.stat().st_size <= max_bytes),
                      key=lambda p: (p.stat().st_size, str(p)))
        for i, p in enumerate(real[:max_real]):
            shutil.copyfile(p, out_dir / f"real{i}.aks")


if __name__ == "__main__":
    main(*sys.argv[1:2], *sys.argv[2:3])
