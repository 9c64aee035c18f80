#!/usr/bin/env python3
"""Pack an installed aotriton tree (tools/release.sh's stage) into the release
tarball, byte-reproducibly: sorted entries, one fixed mtime, owner 0:0 with no
names, modes 0644/0755, xz at a fixed preset; writes MANIFEST first.

MANIFEST is text: "key: value" lines (name, version, abi_version,
image_format_version, profile, archs, triton_version, cuda_version, commit),
then "files:" and one "<sha256>  <path>" line per file (sha256sum's format,
paths relative to the unpacked top directory).
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import io
import lzma
import os
import sys
import tarfile
from pathlib import Path

BUILD_INFO = "lib/python/aotriton/_build_info.py"


def build_facts(stage: Path) -> dict:
    """The constants CMake wrote into the Python package's _build_info.py."""
    tree = ast.parse((stage / BUILD_INFO).read_text())
    facts = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            try:
                facts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass  # computed values (e.g. PTX_FALLBACK) are not facts we need
    return facts


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def files_of(stage: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(stage):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for f in files:
            p = Path(root) / f
            if p.is_symlink() or p.is_file():
                out.append(p.relative_to(stage).as_posix())
    return sorted(out)


def manifest(stage: Path, facts: dict, commit: str, files: list[str]) -> str:
    lines = [
        "name: aotriton",
        f"version: {facts['VERSION']}",
        f"abi_version: {facts['ABI_VERSION']}",
        f"image_format_version: {facts['IMAGE_FORMAT_VERSION']}",
        f"profile: {facts['PROFILE']}",
        f"archs: {';'.join(str(a) for a in facts['ARCHS'])}",
        f"triton_version: {facts['TRITON_VERSION']}",
        f"cuda_version: {facts['CUDA_VERSION']}",
        f"commit: {commit}",
        "files:",
    ]
    lines += [f"{sha256(stage / f)}  {f}" for f in files if not (stage / f).is_symlink()]
    return "\n".join(lines) + "\n"


def tar_info(name: str, mtime: int, *, mode: int, kind=tarfile.REGTYPE, size: int = 0, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime, ti.linkname = kind, mode, size, mtime, link
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = ""
    return ti


def pack(stage: Path, top: str, files: list[str], manifest_text: str, mtime: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs = {p.as_posix() for f in files for p in Path(f).parents if p != Path(".")}
        tar.addfile(tar_info(top, mtime, mode=0o755, kind=tarfile.DIRTYPE))
        data = manifest_text.encode()
        tar.addfile(tar_info(f"{top}/MANIFEST", mtime, mode=0o644, size=len(data)), io.BytesIO(data))
        entries = [(d, "dir") for d in dirs] + [(f, "file") for f in files]
        for rel, what in sorted(entries):
            path = stage / rel
            name = f"{top}/{rel}"
            if what == "dir":
                tar.addfile(tar_info(name, mtime, mode=0o755, kind=tarfile.DIRTYPE))
            elif path.is_symlink():
                tar.addfile(tar_info(name, mtime, mode=0o777, kind=tarfile.SYMTYPE, link=os.readlink(path)))
            else:
                mode = 0o755 if os.access(path, os.X_OK) else 0o644
                with open(path, "rb") as f:
                    tar.addfile(tar_info(name, mtime, mode=mode, size=path.stat().st_size), f)
    return lzma.compress(raw.getvalue(), format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=9)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", required=True, type=Path, help="installed tree to pack")
    ap.add_argument("--out-dir", required=True, type=Path)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--mtime", required=True, type=int, help="the one mtime of every entry (e.g. the commit time)")
    ap.add_argument("--arch-tag", required=True, help="e.g. sm80_sm90")
    args = ap.parse_args(argv)
    stage = args.stage.resolve()
    facts = build_facts(stage)
    top = f"aotriton-{facts['VERSION']}-cuda{facts['CUDA_VERSION']}-{args.arch_tag}-{facts['PROFILE']}"
    files = files_of(stage)
    if "MANIFEST" in files:
        raise SystemExit(f"{stage} already has a MANIFEST")
    text = manifest(stage, facts, args.commit, files)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"{top}.tar.xz"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(pack(stage, top, files, text, args.mtime))
    os.replace(tmp, out)
    print(f"release: {out} ({out.stat().st_size} bytes, {len(files)} files), sha256 {sha256(out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
