"""Checks for flash-attn's window_size / softcap / alibi_slopes, before any
launch (they also run on fake tensors, where the C++ checks do not).

The checked features travel as one tuple, feat = (window_left, window_right,
softcap, alibi_slopes [1 or B, Hq] fp32 or None), or None when all are off
(the common call passes nothing extra)."""
import math

import torch

_NO_WINDOW = (-1, -1)


def check_features(window_size, softcap, alibi_slopes, q, batch, num_heads_q, dropout_p):
    """feat tuple or None; ValueError naming the bad argument."""
    try:
        left, right = (int(w) for w in window_size)
    except (TypeError, ValueError):
        raise ValueError(f"window_size must be a pair of ints (left, right), got {window_size!r}") from None
    if (left, right) == _NO_WINDOW and not softcap and alibi_slopes is None:
        return None
    if left < -1 or right < -1:
        raise ValueError(f"window_size values must be >= -1 (-1 = unbounded), got ({left}, {right})")
    softcap = float(softcap)
    if not (softcap >= 0 and math.isfinite(softcap)):
        raise ValueError(f"softcap must be a finite number >= 0, got {softcap}")
    if softcap > 0 and alibi_slopes is not None:
        raise ValueError("softcap and alibi_slopes cannot be combined")
    if alibi_slopes is not None:
        alibi_slopes = _check_slopes(alibi_slopes, q, batch, num_heads_q)
    if q.dtype == torch.float32:
        raise ValueError("window_size, softcap and alibi_slopes need fp16 or bf16 inputs, not fp32")
    if dropout_p > 0:
        raise ValueError("window_size, softcap and alibi_slopes do not support dropout (dropout_p > 0)")
    return (left, right, softcap, alibi_slopes)


def _check_slopes(s, q, batch, hq):
    if not isinstance(s, torch.Tensor):
        raise ValueError(f"alibi_slopes must be a torch.Tensor, got {type(s).__name__}")
    if s.dtype != torch.float32:
        raise ValueError(f"alibi_slopes must be float32, got {s.dtype}")
    if s.device != q.device:
        raise ValueError(f"alibi_slopes must be on q's device {q.device}, got {s.device}")
    if tuple(s.shape) == (hq,):
        s = s.unsqueeze(0)
    elif tuple(s.shape) != (batch, hq):
        raise ValueError(f"alibi_slopes must have shape ({hq},) or ({batch}, {hq}), got {tuple(s.shape)}")
    return s if s.stride(-1) == 1 or hq == 1 else s.contiguous()


def unpack(feat):
    """(window_left, window_right, softcap, alibi_slopes) for the ops and the launchers."""
    return (-1, -1, 0.0, None) if feat is None else feat
