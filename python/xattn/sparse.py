"""Our block selection in the sparse formats other attention libraries take.

A selection is either the bool mask [batch, heads, nQB, nKB] that ``xattn.ops.estimate`` returns
or its compact form (count [batch, heads, nQB], ascending indices [batch, heads, nQB, nKB], the
first count of each row valid). Block (i, j) kept means query block i attends key block j; in
causal mode the token-level mask inside the diagonal block still applies (bottom-right aligned:
query i of len_q sits at key position len_k - len_q + i).

* ``to_block_mask``: a FlexAttention BlockMask (torch >= 2.5), causal mask_mod included.
* ``to_bsr``: CSR row pointers and column indices of the kept blocks (FlashInfer's BSR), per
  head; ``to_sparse_bsr``: one head as a torch.sparse_bsr_tensor.
"""

import warnings
from typing import List, NamedTuple, Tuple, Union

import torch

Selection = Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]


def _as_mask(selection: Selection) -> torch.Tensor:
    """The bool mask [batch, heads, nQB, nKB] of either form."""
    if isinstance(selection, torch.Tensor):
        if selection.dim() != 4:
            raise ValueError(f"a block mask must be [batch, heads, nQB, nKB], got shape "
                             f"{tuple(selection.shape)}")
        return selection.to(torch.bool)
    if not isinstance(selection, (tuple, list)) or len(selection) != 2:
        raise TypeError("pass the bool mask [batch, heads, nQB, nKB] or the compact form "
                        "(kv_block_count, kv_block_index)")
    count, index = selection
    if count.dim() != 3 or index.dim() != 4 or tuple(index.shape[:3]) != tuple(count.shape):
        raise ValueError(f"compact form: count must be [batch, heads, nQB] and index [batch, "
                         f"heads, nQB, nKB], got {tuple(count.shape)} and {tuple(index.shape)}")
    nkb = index.shape[-1]
    valid = torch.arange(nkb, device=index.device) < count.unsqueeze(-1).to(index.device)
    if bool((index[valid] < 0).any()) or bool((index[valid] >= nkb).any()):
        raise ValueError(f"compact form: an index among the first count of a row lies outside "
                         f"[0, {nkb})")
    # Entries past a row's count go to an extra column, dropped after the scatter.
    mask = torch.zeros(index.shape[:-1] + (nkb + 1,), dtype=torch.bool, device=index.device)
    mask.scatter_(-1, torch.where(valid, index.long(), nkb), True)
    return mask[..., :nkb]


def _as_compact(selection: Selection) -> Tuple[torch.Tensor, torch.Tensor]:
    """(count int32 [b, h, nQB], index int32 [b, h, nQB, nKB]: kept blocks ascending, then 0)."""
    mask = _as_mask(selection)
    nkb = mask.shape[-1]
    position = torch.arange(nkb, device=mask.device, dtype=torch.int32).expand(mask.shape)
    key = torch.where(mask, position, position + nkb)
    ordered = key.sort(dim=-1).values
    index = torch.where(ordered < nkb, ordered, torch.zeros_like(ordered))
    return mask.sum(-1).to(torch.int32), index.to(torch.int32).contiguous()


class BlockSparseRows(NamedTuple):
    """The kept blocks of every (batch, head) as CSR over block rows.

    indptr [batch, heads, nQB + 1] int32: row i of head (b, h) owns
    indices[b, h][indptr[b, h, i] : indptr[b, h, i + 1]] (each head's pointers start at 0);
    indices: a list over batch of lists over heads of int32 tensors [nnz] (ascending per row),
    since heads keep different numbers of blocks. ``head(b, h)`` gives one head's pair, what
    FlashInfer's BlockSparseAttentionWrapper.plan takes as (indptr, indices) with
    R = C = block_size.
    """
    indptr: torch.Tensor
    indices: List[List[torch.Tensor]]
    block_size: int

    def head(self, batch: int, head: int) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.indptr[batch, head], self.indices[batch][head]


def to_bsr(selection: Selection, block_size: int) -> BlockSparseRows:
    """Block CSR of a selection (bool mask or (count, index)); see BlockSparseRows."""
    mask = _as_mask(selection)
    batch, heads, nqb, _ = mask.shape
    counts = mask.sum(-1).to(torch.int32)
    indptr = torch.zeros(batch, heads, nqb + 1, dtype=torch.int32, device=mask.device)
    indptr[..., 1:] = counts.cumsum(-1)
    indices = [[mask[b, h].nonzero()[:, 1].to(torch.int32) for h in range(heads)]
               for b in range(batch)]
    return BlockSparseRows(indptr, indices, int(block_size))


def to_sparse_bsr(selection: Selection, block_size: int, batch: int = 0, head: int = 0,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """One head's selection as a torch.sparse_bsr_tensor of ones, size (nQB * block_size,
    nKB * block_size); ``.to_dense()`` gives the kept blocks at token level (causal masking
    inside the diagonal block not applied)."""
    if not hasattr(torch, "sparse_bsr_tensor"):
        raise RuntimeError(f"torch {torch.__version__} has no sparse_bsr_tensor (torch >= 1.13 "
                           "has); use to_bsr for the index arrays")
    mask = _as_mask(selection)
    nqb, nkb = mask.shape[2], mask.shape[3]
    rows = to_bsr(mask[batch:batch + 1, head:head + 1], block_size)
    crow, col = rows.head(0, 0)
    values = torch.ones(col.numel(), block_size, block_size, dtype=dtype, device=mask.device)
    with warnings.catch_warnings():  # torch's "sparse support is in beta" notice
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_bsr_tensor(crow, col, values,
                                       size=(nqb * block_size, nkb * block_size))


def to_block_mask(selection: Selection, block_size: int, len_q: int, len_k: int,
                  causal: bool = True, mask_mod=None):
    """A FlexAttention BlockMask with our kept blocks.

    Every kept block is a partial block: FlexAttention applies mask_mod inside it, by default
    the bottom-right causal mask (causal=True) or none. ``flex_attention(q, k, v,
    block_mask=to_block_mask(mask, 128, len_q, len_k))`` then computes what
    ``xattn.ops.block_sparse_attention(q, k, v, mask)`` does. Needs torch >= 2.5.
    """
    try:
        from torch.nn.attention.flex_attention import BlockMask
    except ImportError:
        raise RuntimeError(f"to_block_mask needs FlexAttention (torch >= 2.5); this is torch "
                           f"{torch.__version__}. to_bsr gives the same selection as CSR "
                           "arrays") from None
    count, index = _as_compact(selection)
    nqb, nkb = count.shape[-1], index.shape[-1]
    if nqb != (len_q + block_size - 1) // block_size or nkb != (len_k + block_size - 1) // \
            block_size:
        raise ValueError(f"the selection has {nqb}x{nkb} blocks, but len_q {len_q} and len_k "
                         f"{len_k} at block_size {block_size} give "
                         f"{(len_q + block_size - 1) // block_size}x"
                         f"{(len_k + block_size - 1) // block_size}")
    if mask_mod is None and causal:
        offset = len_k - len_q

        def mask_mod(b, h, q_idx, kv_idx):
            return kv_idx <= q_idx + offset
    import inspect

    kwargs = {"BLOCK_SIZE": block_size, "mask_mod": mask_mod}
    if "seq_lengths" in inspect.signature(BlockMask.from_kv_blocks).parameters:
        kwargs["seq_lengths"] = (len_q, len_k)
    return BlockMask.from_kv_blocks(count, index, **kwargs)

