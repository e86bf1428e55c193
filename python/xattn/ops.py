"""Typed wrappers over torch.ops.xattn.* (the op library's stable schemas, README "C++ and PyTorch
API"; docs/python.md has the contract).

Layout: q [batch, heads_q, len_q, head_dim], k and v [batch, heads_kv, len_k, head_dim], the
layout of torch.nn.functional.scaled_dot_product_attention (transformers' q/k/v after their
transpose; flash-attn's [batch, len, heads, head_dim] needs ``.transpose(1, 2)``). A tensor in
the other layout is refused whenever the shapes tell (the thresholds count equals q's length, or
GQA heads land in the length axis), with a message that says to transpose.

Thresholds: a float tensor [heads_q], a list of floats, or a profile layer
(``profile.layer(i)``), whose stride, block size, causal flag, dense_last_query_block and sliding
window then become the defaults. CPU tensors run the CPU reference, CUDA tensors the kernels.

window: a sliding window (causal only; 0 or None from a plain threshold list: none). The query at
position p sees keys p - window + 1 .. p, as transformers' sliding_window; key blocks before a
query block's window are never selected, and the window's edge is masked per token.

Every op has a Meta kernel (shapes only), so FakeTensor and torch.compile(fullgraph=True) trace
through them (torch >= 2.0).
"""

from typing import Optional, Sequence, Tuple, Union

import torch

from . import _library
from .profile import ProfileLayer

_library.load()

Thresholds = Union[torch.Tensor, Sequence[float], ProfileLayer]

DEFAULT_STRIDE = 8
DEFAULT_BLOCK_SIZE = 128


def _settings(thresholds, stride, block_size, causal, dense_last_query_block, window=None):
    """Fills unset kernel settings from a profile layer, else the op's defaults."""
    layer = thresholds if isinstance(thresholds, ProfileLayer) else None

    def pick(value, name, default):
        if value is not None:
            return value
        return getattr(layer, name) if layer is not None else default

    return (pick(stride, "stride", DEFAULT_STRIDE), pick(block_size, "block_size",
                                                         DEFAULT_BLOCK_SIZE),
            pick(causal, "causal", True),
            pick(dense_last_query_block, "dense_last_query_block", True),
            pick(window, "window", 0))


def as_thresholds(thresholds: Thresholds, device=None) -> torch.Tensor:
    """A float32 tensor [heads] from a tensor, a list of floats or a ProfileLayer."""
    if isinstance(thresholds, ProfileLayer):
        thresholds = thresholds.thresholds
    if isinstance(thresholds, torch.Tensor):
        if device is not None and thresholds.device != torch.device(device):
            thresholds = thresholds.to(device)
        return thresholds
    if isinstance(thresholds, (int, float)):
        raise TypeError("thresholds must hold one τ per query head (a list, a tensor [heads_q] "
                        "or profile.layer(i)), not a single number; for one τ everywhere pass "
                        "[tau] * heads_q")
    try:
        values = [float(t) for t in thresholds]
    except TypeError:
        raise TypeError(f"thresholds must be a tensor [heads_q], a list of floats or "
                        f"profile.layer(i), not {type(thresholds).__name__}") from None
    return torch.tensor(values, dtype=torch.float32, device=device)


def estimate(q: torch.Tensor, k: torch.Tensor, thresholds: Thresholds, *,
             stride: Optional[int] = None, block_size: Optional[int] = None,
             causal: Optional[bool] = None, scale: Optional[float] = None,
             dense_last_query_block: Optional[bool] = None,
             window: Optional[int] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Antidiagonal scoring and selection: (scores float32, mask bool), each
    [batch, heads_q, ceil(len_q / block_size), ceil(len_k / block_size)].

    scale: the scoring scale (default 1 / (sqrt(head_dim) * stride)). window: sliding window.
    """
    stride, block_size, causal, dense_last, window = _settings(
        thresholds, stride, block_size, causal, dense_last_query_block, window)
    return torch.ops.xattn.estimate(q, k, as_thresholds(thresholds, q.device), stride=stride,
                                    block_size=block_size, causal=causal, scale=scale,
                                    dense_last_query_block=dense_last, window=window)


def block_sparse_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           mask: torch.Tensor, *, causal: bool = True,
                           scale: Optional[float] = None,
                           window: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """Attention over the kept blocks of a bool mask [batch, heads_q, nQB, nKB] (the block size
    is read off its shape): (out like q, lse float32 [batch, heads_q, len_q])."""
    return torch.ops.xattn.block_sparse_attention(q, k, v, mask, causal=causal, scale=scale,
                                                  window=window)


def block_sparse_attention_compact(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                   kv_block_count: torch.Tensor, kv_block_index: torch.Tensor,
                                   *, block_size: int = DEFAULT_BLOCK_SIZE, causal: bool = True,
                                   scale: Optional[float] = None, window: int = 0
                                   ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The same with the compact form: int32 count [batch, heads_q, nQB] and ascending indices
    [batch, heads_q, nQB, nKB] (the first count of each row are read)."""
    return torch.ops.xattn.block_sparse_attention_compact(
        q, k, v, kv_block_count, kv_block_index, block_size=block_size, causal=causal,
        scale=scale, window=window)


def prefill(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, thresholds: Thresholds, *,
            stride: Optional[int] = None, block_size: Optional[int] = None,
            causal: Optional[bool] = None, dense_last_query_block: Optional[bool] = None,
            scale: Optional[float] = None, return_lse: bool = False,
            window: Optional[int] = None
            ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """XAttention prefill: scoring, per-head selection, block-sparse attention.

    scale: the softmax scale, as in scaled_dot_product_attention (default 1 / sqrt(head_dim));
    scoring runs at scale / stride. return_lse: also return the row log-sum-exp, float32
    [batch, heads_q, len_q], natural log, over the keys each row attended (its kept blocks), as
    flash-attn's softmax_lse, for merging with attention over other keys. window: sliding window
    (default: the profile layer's, else none).
    Returns out (like q), or (out, lse).
    """
    stride, block_size, causal, dense_last, window = _settings(
        thresholds, stride, block_size, causal, dense_last_query_block, window)
    tau = as_thresholds(thresholds, q.device)
    if return_lse:
        return torch.ops.xattn.prefill_with_lse(q, k, v, tau, stride=stride,
                                                block_size=block_size, causal=causal,
                                                dense_last_query_block=dense_last, scale=scale,
                                                window=window)
    return torch.ops.xattn.prefill(q, k, v, tau, stride=stride, block_size=block_size,
                                   causal=causal, dense_last_query_block=dense_last, scale=scale,
                                   window=window)


def prefill_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   cu_seqlens_q: torch.Tensor, cu_seqlens_k: torch.Tensor,
                   thresholds: Thresholds, *, stride: Optional[int] = None,
                   block_size: Optional[int] = None, causal: Optional[bool] = None,
                   dense_last_query_block: Optional[bool] = None,
                   window: Optional[int] = None) -> torch.Tensor:
    """Packed sequences (flash-attn's varlen layout): q [total_q, heads_q, d], k and v
    [total_k, heads_kv, d], sequence b at rows cu_seqlens[b] .. cu_seqlens[b + 1]."""
    stride, block_size, causal, dense_last, window = _settings(
        thresholds, stride, block_size, causal, dense_last_query_block, window)
    return torch.ops.xattn.prefill_varlen(q, k, v, cu_seqlens_q, cu_seqlens_k,
                                          as_thresholds(thresholds, q.device), stride=stride,
                                          block_size=block_size, causal=causal,
                                          dense_last_query_block=dense_last, window=window)
