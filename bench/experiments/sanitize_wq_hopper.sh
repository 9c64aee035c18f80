#!/usr/bin/env bash
# compute-sanitizer on the sm_90 int4 decode GEMM's GPU tests (tritonsrc/moe/grouped_gemm_wq_hopper.py):
# memcheck on all of them (reads of an empty split, bad expert ids, wrapped rows), racecheck on two
# (the activation buffers in shared memory, the cp.async ring). For a BENCHES entry of tools/gpu_final.sh.
cd "$(dirname "$0")/../.." || exit 1
T=test/gpu/test_moe_wq_hopper_gpu.py
TESTS=$T SHARDS=${SHARDS:-4} TIME_S=${TIME_S:-240} \
  RACECHECK="$T::test_splits_past_the_last_k_tile_write_zeros;$T::test_bad_expert_ids_write_zeros" \
  exec tools/gpu_sanitize.sh
