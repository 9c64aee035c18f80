"""Head-dim buckets and default tiles of the decode kernels (decode.py), shared
by the rules (python/rules_flash.py) and the JIT launcher; no torch import."""
DECODE_HEAD_BUCKETS = (64, 128, 256)
# Autotune key of attn_decode: keys per split, cdiv(capacity, num_splits).
DECODE_KEYS_PER_SPLIT_BINS = (1024, 8192, 1 << 30)
# The split rule of v2src/ops/flash_decode.cc (choose_splits), mirrored.
PROGRAMS_PER_SM, KEYS_PER_SPLIT_MIN, MAX_SPLITS, DEFAULT_SMS = 2, 256, 128, 132


def decode_head_bucket(head_dim):
    for b in DECODE_HEAD_BUCKETS:
        if head_dim <= b:
            return b
    raise ValueError(f"head_dim {head_dim} > 256")


# How attn_decode walks a paged cache, its PAGE_TILES functional: 0 one page lookup per
# key; 1 (pages a multiple of PAGE_TILE_KEYS) one per tile, its tiles at most that long;
# 2 (pages dividing PAGE_STEP_KEYS: 16 or 32) whole pages per tile of at least PAGE_STEP_KEYS
# keys, each key's page stepping by BLOCK_N // page_size pages a tile and its place in the
# page loop-invariant.
PAGE_TILE_KEYS = 64
PAGE_STEP_KEYS = 32


def page_tiles(page_size, row_stride=0):
    """The PAGE_TILES functional of a paged cache with this page size and largest K/V row
    stride in elements (flash_decode.cc mirrors it); 1's in-tile and 2's in-page key
    offsets are 32-bit."""
    if page_size % PAGE_TILE_KEYS == 0 and row_stride <= (2**31 - 1) // PAGE_TILE_KEYS:
        return 1
    if PAGE_STEP_KEYS % page_size == 0 and row_stride <= (2**31 - 1) // PAGE_STEP_KEYS:
        return 2
    return 0


def default_decode_config(head_dim, page_tiles=0):
    """BLOCK_M 16: the GQA group (and a few speculative tokens) fill one tile.
    BLOCK_N: a 16 KB K tile (128 keys at D 64, 64 at D 128, 32 at D 256).
    num_stages 3: two K/V tiles in flight while one is consumed (Triton's
    pipeliner keeps num_stages - 1 buffers); with 2 the next tile's loads
    were issued only after the current one was consumed, so every tile paid
    a full memory round trip (the 2026-12-02 H200 run: 0.19-0.61 of roofline)."""
    bucket = decode_head_bucket(head_dim)
    block_n = 8192 // bucket  # >= PAGE_STEP_KEYS at every bucket
    if page_tiles == 1:
        block_n = min(block_n, PAGE_TILE_KEYS)
    return {"BLOCK_M": 16, "BLOCK_N": block_n, "num_warps": 4, "num_stages": 3}


def combine_config(head_dim):
    """Splits per chunk of the combine kernel: a [BLOCK_S, D] fp32 tile of 16 KB."""
    return {"BLOCK_S": 4096 // decode_head_bucket(head_dim), "num_warps": 4, "num_stages": 1}


def choose_splits(batch, seqlen_q, heads_q, heads_k, capacity, num_sms=DEFAULT_SMS, forced=0):
    """The operator's split count (flash_decode.cc choose_splits, same numbers):
    fill PROGRAMS_PER_SM slots per SM in one wave, rounded down, at least
    KEYS_PER_SPLIT_MIN keys of the capacity per split."""
    if forced > 0:
        return min(forced, MAX_SPLITS)
    sms = num_sms if num_sms > 0 else DEFAULT_SMS
    programs = batch * heads_k * ((seqlen_q * (heads_q // heads_k) + 15) // 16)
    if programs == 0 or programs >= PROGRAMS_PER_SM * sms:
        return 1
    want = PROGRAMS_PER_SM * sms // programs
    by_length = max(1, capacity // KEYS_PER_SPLIT_MIN)
    return max(1, min(want, by_length, MAX_SPLITS))
