"""Python mirror of tritonsrc/flash/seq_bounds.sequence_bounds, the varlen
contract the CPU and GPU hardening tests check the kernels against."""


def seq_bounds(cu, total, max_len):
    """[(start, length)] per sequence: start clamped into [0, total], end into
    [start, total], length capped at max_len."""
    out = []
    for b in range(len(cu) - 1):
        s = min(max(cu[b], 0), total)
        e = min(max(cu[b + 1], s), total)
        out.append((s, min(e - s, max_len)))
    return out
