#!/usr/bin/env python3
"""List aotriton kernel image stores and their compression.

  python python/inspect_images.py PATH [--json]

PATH is one store file, a directory searched recursively (e.g.
<prefix>/lib/aotriton.images), or an install prefix (its lib/aotriton.images is
used). Files are recognised by their magic, whatever their name. Every store is
fully decoded and checked; unreadable or corrupt ones are reported on stderr and
make the exit status 1, the rest are still listed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

# Run as a script: its own directory (python/, or lib/aotriton.tools/ where it is
# installed beside image_store.py) is on the path.
import image_store

STORE_SUFFIX = ".aks"  # files with this suffix are stores even when their magic is broken


def find_stores(path: str) -> tuple[str, list[str]]:
    """(root used for relative names, candidate store files sorted)."""
    if os.path.isfile(path):
        return os.path.dirname(path) or ".", [path]
    images = os.path.join(path, "lib", "aotriton.images")
    root = images if os.path.isdir(images) else path
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if name.endswith(STORE_SUFFIX) or _has_magic(full):
                found.append(full)
    return root, found


def _has_magic(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(image_store.MAGIC)) == image_store.MAGIC
    except OSError:
        return False


def describe(path: str, root: str) -> dict:
    st = image_store.read_store(path)
    size = os.path.getsize(path)
    return {
        "path": os.path.relpath(path, root), "arch": st.arch, "kernel": st.kernel,
        "functional": st.functional, "triton_version": st.triton_version,
        "entries": len(st.entries), "unique_cubins": st.blob_count,
        "cubin_bytes": sum(len(e.cubin) for e in st.entries),  # before dedupe
        "raw_bytes": st.raw_size, "compressed_bytes": size,
        "ratio": _ratio(size, st.raw_size),
    }


def _ratio(compressed: int, raw: int) -> float:
    return round(compressed / raw, 4) if raw else 0.0


def totals(files: list) -> dict:
    t = {"files": len(files)}
    for k in ("entries", "unique_cubins", "raw_bytes", "compressed_bytes"):
        t[k] = sum(f[k] for f in files)
    t["ratio"] = _ratio(t["compressed_bytes"], t["raw_bytes"])
    return t


def summarize(files: list, key: str) -> dict:
    groups: dict = {}
    for f in files:
        groups.setdefault(f[key], []).append(f)
    return {str(k): totals(v) for k, v in sorted(groups.items())}


def _table(rows: list, headers: list) -> str:
    rows = [[str(c) for c in r] for r in rows]
    widths = [max(len(x) for x in [h] + [r[i] for r in rows]) for i, h in enumerate(headers)]
    numeric = [all(r[i].replace(".", "").isdigit() for r in rows) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(r, widths, numeric)).rstrip()
             for r in [headers] + rows]
    return "\n".join(lines[:1] + ["-" * max(map(len, lines))] + lines[1:])


def _summary_rows(groups: dict) -> list:
    return [[name, g["files"], g["entries"], g["unique_cubins"], g["raw_bytes"], g["compressed_bytes"],
             f"{g['ratio']:.3f}"] for name, g in groups.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="store file, image directory or install prefix")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    args = ap.parse_args(argv)
    if not os.path.exists(args.path):
        print(f"inspect_images: error: {args.path} does not exist", file=sys.stderr)
        return 1
    root, candidates = find_stores(args.path)
    files, errors = [], []
    for path in candidates:
        try:
            files.append(describe(path, root))
        except image_store.StoreError as e:
            errors.append({"path": os.path.relpath(path, root), "error": str(e)})
    total = totals(files)
    report = {"root": root, "files": files, "by_kernel": summarize(files, "kernel"),
              "by_arch": summarize(files, "arch"), "total": total, "errors": errors}
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"image stores under {root}")
        if files:
            print(_table([[f["arch"], f["kernel"], f["functional"], f["entries"], f["unique_cubins"], f["raw_bytes"],
                           f["compressed_bytes"], f"{f['ratio']:.3f}", f["path"]] for f in files],
                         ["arch", "kernel", "functional", "entries", "unique", "raw", "compressed", "ratio", "file"]))
            sums = ["files", "entries", "unique", "raw", "compressed", "ratio"]
            print("\nper kernel\n" + _table(_summary_rows(report["by_kernel"]), ["kernel"] + sums))
            print("\nper arch\n" + _table(_summary_rows({f"sm_{a}": g for a, g in report["by_arch"].items()}),
                                         ["arch"] + sums))
            print(f"\ntotal: {total['files']} files, {total['entries']} entries, {total['unique_cubins']} unique "
                  f"cubins, {total['raw_bytes']} raw bytes -> {total['compressed_bytes']} bytes "
                  f"(ratio {total['ratio']:.3f})")
    for e in errors:
        print(f"inspect_images: error: {e['error']}", file=sys.stderr)
    if not files and not errors:
        print(f"inspect_images: error: no image stores under {root}", file=sys.stderr)
        return 1
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
