#!/usr/bin/env bash
# compute-sanitizer on the sm_90 int4 decode GEMM's GPU tests (tritonsrc/moe/grouped_gemm_wq_hopper.py):
# memcheck on all of them (reads of an empty split, bad expert ids, wrapped rows), racecheck on six
# (the one activation buffer and the cp.async ring under two CTA barriers a tile, since 91b947e and
# 4c61f80; the default without zero points; the two-tiles-ahead loop with an odd tile count and with
# splits (its even and odd rings), and the one-ahead loop). For a BENCHES entry of tools/gpu_final.sh.
cd "$(dirname "$0")/../.." || exit 1
T=test/gpu/test_moe_wq_hopper_gpu.py
TESTS=$T SHARDS=${SHARDS:-4} TIME_S=${TIME_S:-240} \
  RACECHECK="$T::test_splits_past_the_last_k_tile_write_zeros;$T::test_bad_expert_ids_write_zeros;\
$T::test_gemm_matches_reference_and_the_triton_kernel[7-True-False-128-dtype0];\
$T::test_load_distances_match_the_reference[2-640-128-1-True-dtype1];\
$T::test_load_distances_match_the_reference[2-1664-128-4-False-dtype0];\
$T::test_load_distances_match_the_reference[1-1664-128-4-True-dtype1]" \
  exec tools/gpu_sanitize.sh
