"""Nearest memory-bank row of each patch: exact in fp32, or found in bf16 and measured exactly.

    blocks = bank_blocks(bank)                          # once per bank (PatchCore caches it)
    d = min_distance(queries, bank, blocks)             # (Q,) exact Euclidean distances
    d = min_distance(queries, bank, blocks, "bf16")     # argmin in bf16, distance in fp32

Both cut the work into ``QUERY_BLOCK x BANK_BLOCK`` distance blocks, small enough to stay in the
CPU's cache: on the 2-core EPYC, 16,384 queries x 16,384 rows x 128 dims took 29 ms per 1,024
queries in 1,024 x 2,048 blocks against 44 ms in one 4,096 x 16,384 block (same numbers).
``"bf16"`` finds the nearest row with bf16 arithmetic (3-4x faster where the CPU has
AVX512-BF16 or AMX) and then measures the distance to that row in fp32: the result is never
below the exact minimum and equals it unless bf16 rounding picked a near-tie (ELPV bank: 99 % of
patches exact, at most 0.1 % above). Pure PyTorch; touches nothing outside its arguments.
"""

from __future__ import annotations

import math

import torch

QUERY_BLOCK = 1024
BANK_BLOCK = 2048
SEARCHES = ("fp32", "bf16")

Blocks = list[tuple[torch.Tensor, torch.Tensor, int]]


def bf16_is_fast() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX), as torch reports it."""
    cpu = torch.cpu
    return bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
                or getattr(cpu, "_is_amx_tile_supported", lambda: False)())


def bank_blocks(bank: torch.Tensor, search: str = "fp32", bank_chunk: int = BANK_BLOCK) -> Blocks:
    """The bank cut into ``(rows transposed, squared norms, first row)`` blocks in the search's dtype."""
    dtype = torch.bfloat16 if search == "bf16" else bank.dtype
    return [(b.t().to(dtype).contiguous(), b.pow(2).sum(1).to(dtype), start)
            for start, b in zip(range(0, bank.shape[0], bank_chunk), bank.split(bank_chunk), strict=True)]


def min_distance(queries: torch.Tensor, bank: torch.Tensor, blocks: Blocks | None = None, search: str = "fp32",
                 chunk: int = QUERY_BLOCK) -> torch.Tensor:
    """``(Q,)`` Euclidean distance of each query ``(Q, D)`` to its nearest row of ``bank`` ``(M, D)``.

    ``blocks``: :func:`bank_blocks` of ``bank`` for this ``search`` (made here when None);
    temporary memory is ``chunk x BANK_BLOCK`` values. ``|q - b|^2 = |q|^2 - 2 q.b + |b|^2`` as one
    ``addmm`` per block.
    """
    if search not in SEARCHES:
        raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
    blocks = bank_blocks(bank, search) if blocks is None else blocks
    out = torch.empty(queries.shape[0], dtype=queries.dtype)
    for qs in range(0, queries.shape[0], chunk):
        q = queries[qs:qs + chunk]
        if search == "fp32":
            best = torch.full((q.shape[0],), math.inf, dtype=q.dtype)
            for b_t, b_sq, _ in blocks:
                best = torch.minimum(best, torch.addmm(b_sq, q, b_t, alpha=-2.0).min(1).values)
            out[qs:qs + chunk] = (best + q.pow(2).sum(1)).clamp_min_(0).sqrt_()
            continue
        q16 = q.to(torch.bfloat16)
        best = torch.full((q.shape[0],), math.inf, dtype=torch.bfloat16)
        arg = torch.zeros(q.shape[0], dtype=torch.long)
        for b_t, b_sq, start in blocks:
            value, index = torch.addmm(b_sq, q16, b_t, alpha=-2.0).min(1)
            better = value < best
            best = torch.where(better, value, best)
            arg = torch.where(better, index + start, arg)
        out[qs:qs + chunk] = (q - bank[arg]).pow(2).sum(1).sqrt_()
    return out


def chunked_min_distance(queries: torch.Tensor, bank: torch.Tensor, chunk: int = QUERY_BLOCK,
                         bank_chunk: int = BANK_BLOCK) -> torch.Tensor:
    """Exact ``(Q,)`` nearest-row distances in ``chunk x bank_chunk`` blocks (:func:`min_distance` in fp32)."""
    return min_distance(queries, bank, bank_blocks(bank, "fp32", bank_chunk), "fp32", chunk)


__all__ = ["BANK_BLOCK", "QUERY_BLOCK", "SEARCHES", "bank_blocks", "bf16_is_fast", "chunked_min_distance",
           "min_distance"]
