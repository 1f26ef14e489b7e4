"""Flash varlen attention for packed rows, through transformers' AttentionInterface.

A padding-free trainer on a GPU lays the tokens of all examples end to end and tells the kernel
where each starts (`cu_seqlens`), causal within each. No `flash_attn` package is needed: PyTorch's
own `torch.nn.attention.varlen.varlen_attn` runs FlashAttention kernels on CUDA. `varlen_attention`
plugs any such kernel into transformers, finding `cu_seqlens` where `position_ids` restart at 0;
the smoke test (smoke_test.py, check 4) runs it beside SDPA, and its tests drive it on the CPU
with a reference kernel.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable

import torch
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import flash_attention_mask

FLASH_VARLEN_INTERFACE = "masked_shards_varlen"  # its name in transformers' AttentionInterface: a name holding "flash" is taken for a hub kernel to download (found on an H200)

# (query, key, value [tokens, heads, dim], cu_seqlens [examples + 1] int32, longest example, scale)
# -> [tokens, heads, dim]: attention causal within each example, as varlen_attention calls it.
VarlenKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int, float], torch.Tensor]


def cu_seqlens(position_ids: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Where each example starts among a batch's tokens laid end to end, and the longest example:
    what a varlen kernel is told. An example starts where `position_ids` restart at 0 (packing.py
    writes them so, the loader lays rows out so) and at the start of every row.

    position_ids [[0 1 2 0 1 0 1 2 3]] -> cu_seqlens [0 3 5 9] (int32), longest 4
    """
    rows, width = position_ids.shape
    starts = position_ids.reshape(-1) == 0
    starts[::width] = True
    total = torch.tensor([rows * width], device=position_ids.device)
    bounds = torch.cat([torch.nonzero(starts)[:, 0], total]).to(torch.int32)
    return bounds, int((bounds[1:] - bounds[:-1]).max())


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0, *, kernel: VarlenKernel, position_ids: torch.Tensor | None = None, **_: object) -> tuple[torch.Tensor, None]:
    """An attention function for transformers' AttentionInterface that runs a varlen `kernel`
    on the batch's tokens end to end, each example apart (cu_seqlens from `position_ids`).

    For padding-free rows only: registered with flash attention's mask function, it is given the
    2D attention mask only when a row has padding, and refuses it. Under autocast the rotary
    embedding leaves queries and keys in fp32 beside bf16 values, and flash kernels take one
    16-bit dtype, so all three go to the autocast dtype. Grouped key/value heads are repeated
    as transformers' own attention does (query head h reads key head h // groups).

    query [rows, heads, tokens, dim], key and value [rows, key heads, tokens, dim]
    -> [rows, tokens, heads, dim] and no attention weights, as sdpa's function returns them
    """
    if attention_mask is not None or position_ids is None or dropout:
        raise ValueError("varlen attention takes padding-free rows with position_ids, no attention mask and no dropout")
    rows, heads, tokens, dim = query.shape
    bounds, longest = cu_seqlens(position_ids.expand(rows, -1))
    where = query.device.type
    dtype = torch.get_autocast_dtype(where) if torch.is_autocast_enabled(where) else query.dtype
    groups = heads // key.shape[1]
    q, k, v = (x.transpose(1, 2).reshape(rows * tokens, x.shape[1], dim).to(dtype) for x in (query, key, value))
    out = kernel(q, k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1), bounds, longest, dim**-0.5 if scaling is None else scaling)
    return out.reshape(rows, tokens, heads, dim), None


def register_varlen_attention(name: str, kernel: VarlenKernel) -> str:
    """Register `varlen_attention` over `kernel` in transformers' AttentionInterface as `name`,
    which a model then takes as its attn_implementation; returns the name. Its mask function is
    flash attention's (None unless there is padding): without one, transformers would drop a
    padding mask unseen."""
    AttentionInterface.register(name, functools.partial(varlen_attention, kernel=kernel))
    AttentionMaskInterface.register(name, flash_attention_mask)
    return name


def torch_varlen_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, bounds: torch.Tensor, longest: int, scale: float) -> torch.Tensor:
    """PyTorch's own varlen attention (FlashAttention kernels on CUDA; no flash_attn package),
    causal within each example. Imported here so that a torch without it is an error recorded
    by check 4, not a stage that cannot load. torch 2.10 asks for causal as `is_causal=True`,
    later versions as the window (-1, 0), and may take no `scale` (its default is dim**-0.5)."""
    from torch.nn.attention.varlen import varlen_attn

    accepted = inspect.signature(varlen_attn).parameters
    options: dict = {"window_size": (-1, 0)} if "window_size" in accepted else {"is_causal": True}
    if "scale" in accepted:
        options["scale"] = scale
    elif not math.isclose(scale, query.shape[-1] ** -0.5):
        raise ValueError(f"this torch's varlen_attn takes no scale, and the model's is {scale}")
    return varlen_attn(query, key, value, bounds, bounds, longest, longest, **options)
