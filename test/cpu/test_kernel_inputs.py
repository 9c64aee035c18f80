"""v2src/kernel_inputs.*: the generated make_args narrows every integer into
its kernel argument's type through narrow_arg; a value that does not fit is
kInvalidArgument with a message naming the kernel and argument, never a
silent wrap-around."""
import shutil
import subprocess

import pytest

from testenv import REPO

PROGRAM = r"""
#include <cstdio>
#include <cstdint>
#include "kernel_inputs.h"
#include "error.h"
using namespace aotriton;
int main() {
  int32_t i32 = 7; uint32_t u32 = 7; uint64_t u64 = 7; int64_t i64 = 0;
  Status ok = detail::narrow_arg("k", "a", 2147483647, &i32);
  std::printf("%d %d\n", static_cast<int>(ok), i32);
  Status bad = detail::narrow_arg("attn_fwd", "stride_qm (Q's m stride)", 2147483648LL, &i32);
  std::printf("%d %d %s\n", static_cast<int>(bad), i32, last_error_message());
  Status neg = detail::narrow_arg("k", "n", -1, &u32);
  std::printf("%d %u\n", static_cast<int>(neg), u32);
  Status low = detail::narrow_arg("k", "n", -2147483649LL, &i32);
  std::printf("%d\n", static_cast<int>(low));
  Status big = detail::narrow_arg("k", "n", 4294967295LL, &u32);
  std::printf("%d %u\n", static_cast<int>(big), u32);
  Status negu64 = detail::narrow_arg("k", "n", -5, &u64);
  Status wide = detail::narrow_arg("k", "n", -5, &i64);
  std::printf("%d %d %lld\n", static_cast<int>(negu64), static_cast<int>(wide), static_cast<long long>(i64));
}
"""


def test_out_of_range_integers_are_errors_naming_the_argument(tmp_path, build_dir):
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    (tmp_path / "main.cc").write_text(PROGRAM)
    exe = tmp_path / "narrow"
    cmd = [cxx, "-std=c++20", f"-I{REPO / 'include'}", f"-I{build_dir / 'include'}", f"-I{REPO / 'v2src'}",
           str(tmp_path / "main.cc"), str(REPO / "v2src" / "kernel_inputs.cc"), str(REPO / "v2src" / "error.cc"),
           "-o", str(exe)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines()
    ok, invalid = "0", "1"  # Status::kSuccess, Status::kInvalidArgument
    assert lines[0] == f"{ok} 2147483647"
    status, kept, *msg = lines[1].split(" ", 2)
    assert status == invalid and kept == "2147483647"  # the output is left alone on error
    assert msg == ["attn_fwd: stride_qm (Q's m stride) = 2147483648 does not fit the kernel's 32-bit argument"]
    assert lines[2] == f"{invalid} 7"
    assert lines[3] == invalid
    assert lines[4] == f"{ok} 4294967295"
    assert lines[5] == f"{invalid} {ok} -5"
