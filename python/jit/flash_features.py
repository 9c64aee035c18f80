"""Plain-Python mapping from the user-level attention features (causal kind,
window_size, softcap, alibi_slopes) to the kernels' LOCAL_WINDOW / SCORE_MOD
functionals and band arguments; the JIT launchers use it, and the C++
operators (v2src/ops/flash_features.cc) implement the same rules.
"""


def feature_args(causal_type, window=None, softcap=0.0, alibi_slopes=None):
    """dict of CAUSAL_TYPE, LOCAL_WINDOW, SCORE_MOD, window_left, window_right,
    window_align, softcap for one call.

    Any feature runs the band kernel with CAUSAL_TYPE 0: causal becomes
    window_right = 0 on the causal kind's diagonal (top-left: align 0,
    bottom-right: align 1); a window without causal is bottom-right aligned
    as in flash-attn."""
    left, right = (-1, -1) if window is None else (int(window[0]), int(window[1]))
    if left < -1 or right < -1:
        raise ValueError(f"window_size values must be >= -1 (-1 = unbounded), got ({left}, {right})")
    if softcap < 0:
        raise ValueError(f"softcap must be >= 0, got {softcap}")
    if softcap > 0 and alibi_slopes is not None:
        raise ValueError("softcap and alibi_slopes cannot be combined")
    score_mod = 1 if softcap > 0 else (2 if alibi_slopes is not None else 0)
    windowed = left >= 0 or right >= 0
    if not windowed and score_mod == 0:
        return dict(CAUSAL_TYPE=int(causal_type), LOCAL_WINDOW=False, SCORE_MOD=0,
                    window_left=-1, window_right=-1, window_align=0, softcap=0.0)
    if causal_type != 0:
        right = 0
    return dict(CAUSAL_TYPE=0, LOCAL_WINDOW=True, SCORE_MOD=score_mod, window_left=left, window_right=right,
                window_align=0 if causal_type == 1 else 1, softcap=float(softcap))
