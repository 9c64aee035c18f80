"""Head-dim buckets and default tiles of the decode kernels (decode.py), shared
by the rules (python/rules_flash.py) and the JIT launcher; no torch import."""
DECODE_HEAD_BUCKETS = (64, 128, 256)


def decode_head_bucket(head_dim):
    for b in DECODE_HEAD_BUCKETS:
        if head_dim <= b:
            return b
    raise ValueError(f"head_dim {head_dim} > 256")


def default_decode_config(head_dim):
    """BLOCK_M 16: the GQA group (and a few speculative tokens) fill one tile;
    BLOCK_N 64 (32 at D 256) keeps two pipelined K/V stages small."""
    bucket = decode_head_bucket(head_dim)
    return {"BLOCK_M": 16, "BLOCK_N": 32 if bucket == 256 else 64, "num_warps": 4, "num_stages": 2}
