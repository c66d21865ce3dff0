"""The weighted gather: each vertex's weighted sum of token-table rows (METHOD.md §2).

Every vertex reads ``5 L`` rows of a small token table (4 bilinear taps per layer for
the local tokens, 1 row per layer for the global token) with weights from its
selectors. Three implementations of the same numbers:

- ``"bag"`` (:func:`weighted_gather`, the CPU's): :func:`torch.nn.functional.embedding_bag`
  with ``per_sample_weights`` and a parallel backward;
- ``"dense"`` (the GPU's): a per-vertex selection matrix times the table, in blocks;
- :func:`gather_readout` (the CPU's forward of :class:`~.model.FactorTopy`): the bag sum
  and the per-vertex readout in blocks of vertices, never keeping the (V, B, D) features;
  the rows every vertex reads (the global tokens) by a matrix product instead.

Gradients reach both the table (hence the channel-align weights) and the weights (hence
the selectors).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = [
    "DENSE_BLOCK_BYTES",
    "GATHER_METHODS",
    "GROUP_MIN_MEAN",
    "READOUT_BLOCK_BYTES",
    "gather_method",
    "gather_readout",
    "weighted_gather",
]

#: The weighted gather's implementations: ``"bag"`` (``embedding_bag``, made for the
#: CPU) and ``"dense"`` (a selection matrix times the table, made for GPUs).
GATHER_METHODS = ("bag", "dense")

#: Bytes of selection matrix the dense gather builds at once (it works in blocks of
#: vertices below this); 256 MiB.
DENSE_BLOCK_BYTES = 256 * 2**20

#: Bytes of features per vertex block in the CPU's fused gather and readout
#: (:func:`gather_readout`); 4 MiB, so that a block's feature gradient stays in cache.
READOUT_BLOCK_BYTES = 4 * 2**20

#: :func:`gather_readout` reads vertices that name the same rows (a grid cell's
#: vertices, once the spatial selectors are trained) as a group, by matrix products,
#: when its groups hold at least this many vertices on average; else by bag sums.
GROUP_MIN_MEAN = 32


class _WeightedGather(torch.autograd.Function):
    """``out[v] = Σ_k weight[v, k] · table[index[v, k]]`` with a parallel backward.

    The forward is :func:`torch.nn.functional.embedding_bag`. Its stock backward to
    the table scatters V·K rows into few (≈ 10³) table rows, which serialises on
    CPU; here the table gradient is computed as the same bag-sum over the transposed
    index (one bag per table row), and the weight gradient by ATen's per-sample-weight
    kernel (row dot products), so no (V, K, E) tensor is ever formed.
    """

    @staticmethod
    def forward(ctx, index, weight, table):
        ctx.save_for_backward(index, weight, table)
        return F.embedding_bag(index, table, per_sample_weights=weight, mode="sum")

    @staticmethod
    def backward(ctx, grad_out):
        index, weight, table = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_weight = grad_table = None
        if ctx.needs_input_grad[2]:
            grad_table = _transposed_bag(index, weight, grad_out, table.shape[0])
        if ctx.needs_input_grad[1]:
            grad_weight = _row_dots(grad_out, table, index).to(weight.dtype)
        return None, grad_weight, grad_table


def _transposed_bag(
    index: torch.Tensor, weight: torch.Tensor, grad_out: torch.Tensor, n_rows: int
) -> torch.Tensor:
    """The bag sum's gradient to its table, (n_rows, E): ``Σ_{v,k: index[v,k]=r}
    weight[v, k] · grad_out[v]`` as a bag sum over the transposed index (one bag per
    table row; entries in the order of ``v``). ``index``, ``weight`` (V, K);
    ``grad_out`` (V, E)."""
    k = index.shape[1]
    flat = index.reshape(-1)
    order = torch.argsort(flat, stable=True)
    counts = torch.bincount(flat, minlength=n_rows)
    offsets = torch.cumsum(counts, 0) - counts
    return F.embedding_bag(
        torch.div(order, k, rounding_mode="floor"),
        grad_out,
        offsets,
        per_sample_weights=weight.reshape(-1)[order].to(grad_out.dtype),
        mode="sum",
    )


def _row_dots(grad_out: torch.Tensor, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Row dot products ``<table[index[v, k]], grad_out[v]>``, (V, K), by ATen's own
    kernel for the bag sum's per-sample-weight gradient (no (V, K, E) tensor)."""
    n_v, k = index.shape
    flat = index.reshape(-1)
    bags = torch.arange(n_v, device=index.device)
    bag_of = bags.repeat_interleave(k)  # offset2bag: the bag of each flat entry
    return torch.ops.aten._embedding_bag_per_sample_weights_backward(
        grad_out, table, flat, bags * k, bag_of, 0, -1
    ).view(n_v, k)


class _GatherReadout(torch.autograd.Function):
    """The bag sum and the per-vertex readout in one, in blocks of vertices.

    ``y[v, b] = Σ_d beta[v, d] · f[v, b, d]`` with ``f[v] = Σ_k weight[v, k] ·
    table[index[v, k]]`` viewed (B, D), computed in blocks of vertices. The columns of
    ``index`` split in two: ``index`` (V, K_bag), read by a bag sum, and ``shared``
    (K_sh,), rows read by every vertex (the global tokens), with weights ``weight``
    (V, K_bag) and ``shared_weight`` (V, K_sh); the shared rows' part is a matrix
    product ``shared_weight @ table[shared]``.
    Forward: per block the bag sum, the shared product and the readout (``bmm``);
    nothing of size V·B·D is kept. Backward: per block the features are computed again
    for ``grad_beta`` (as fast as keeping them, measured, and 155 MB less at paper
    scale), and the block's feature gradient
    ``g[v, b, d] = gy[v, b] · beta[v, d]`` (an outer product) gives the weight
    gradient (row dot products; a product with ``table[shared]ᵀ`` for the shared rows)
    and the table gradient (a bag sum over the block's transposed index; a product
    ``shared_weightᵀ @ g`` for the shared rows). A block's ``g`` stays in cache while
    the transposed bag reads its rows in index order: over the whole (V, B·D) gradient
    those reads were scattered and the step memory-bound (issue 19, item 4).
    """

    @staticmethod
    def forward(ctx, index, weight, shared, shared_weight, table, beta, block):
        n_v, d = beta.shape
        b = table.shape[1] // d
        y = table.new_empty(n_v, b)
        t_sh = table[shared]  # (K_sh, B·D)
        for lo in range(0, n_v, block):
            hi = min(lo + block, n_v)
            f = _block_features(index, weight, shared_weight, table, t_sh, lo, hi)
            y[lo:hi] = torch.bmm(f.view(hi - lo, b, d), beta[lo:hi, :, None])[..., 0]
        ctx.save_for_backward(index, weight, shared, shared_weight, table, beta)
        ctx.block = block
        return y

    @staticmethod
    def backward(ctx, grad_y):
        index, weight, shared, shared_weight, table, beta = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        need_w, need_sw, need_t, need_b = (ctx.needs_input_grad[i] for i in (1, 3, 4, 5))
        n_v, d = beta.shape
        b = grad_y.shape[1]
        t_sh = table[shared]
        grad_weight = torch.empty_like(weight) if need_w else None
        grad_sw = torch.empty_like(shared_weight) if need_sw else None
        grad_table = torch.zeros_like(table) if need_t else None
        grad_sh = torch.zeros_like(t_sh) if need_t else None
        grad_beta = torch.empty_like(beta) if need_b else None
        for lo in range(0, n_v, ctx.block):
            hi = min(lo + ctx.block, n_v)
            gy = grad_y[lo:hi]
            if need_b:
                f = _block_features(index, weight, shared_weight, table, t_sh, lo, hi)
                f = f.view(hi - lo, b, d)
                grad_beta[lo:hi] = torch.bmm(f.transpose(1, 2), gy[:, :, None])[..., 0]
            if need_w or need_sw or need_t:
                g = (gy[:, :, None] * beta[lo:hi, None, :]).view(hi - lo, b * d)
                if need_w and index.shape[1]:
                    grad_weight[lo:hi] = _row_dots(g, table, index[lo:hi])
                if need_sw:
                    torch.mm(g, t_sh.t(), out=grad_sw[lo:hi])
                if need_t:
                    if index.shape[1]:
                        grad_table += _transposed_bag(
                            index[lo:hi], weight[lo:hi], g, table.shape[0]
                        )
                    grad_sh.addmm_(shared_weight[lo:hi].t(), g)
        if need_t:
            grad_table.index_add_(0, shared, grad_sh)
        return None, grad_weight, None, grad_sw, grad_table, grad_beta, None


def _block_features(index, weight, shared_weight, table, t_sh, lo, hi):
    """Vertices ``lo:hi``'s features (hi - lo, B·D): the bag sum plus the shared rows'
    product. Detached: ATen's bag sum then skips the bookkeeping of its own backward."""
    weight, shared_weight, table = weight.detach(), shared_weight.detach(), table.detach()
    if index.shape[1]:
        f = F.embedding_bag(index[lo:hi], table, per_sample_weights=weight[lo:hi], mode="sum")
        f.addmm_(shared_weight[lo:hi], t_sh)
    else:
        f = torch.mm(shared_weight[lo:hi], t_sh)
    return f


class _GroupedReadout(torch.autograd.Function):
    """:class:`_GatherReadout` for vertices in groups that read the same rows.

    Vertices come sorted by group: group ``g`` is ``counts[g]`` consecutive vertices
    whose bag columns all name ``rows[g]`` (K_bag,). A group's features are then a
    matrix product ``weight[group] @ table[rows[g]]`` (n, K) × (K, B·D), its weight
    gradient ``g @ table[rows[g]]ᵀ`` and its table gradient ``weight[group]ᵀ @ g``
    (added to the group's rows), where the bag sums read the same numbers row by row.
    The shared rows (every vertex's) and the readout are as in :class:`_GatherReadout`.
    Trained spatial selectors put each vertex's bilinear taps in one cell of the token
    grid (the same cell in every layer), so an 8×8 grid gives at most 49 groups.
    """

    @staticmethod
    def forward(ctx, weight, shared, shared_weight, table, beta, rows, counts, block):
        n_v, d = beta.shape
        b = table.shape[1] // d
        y = table.new_empty(n_v, b)
        t_sh = table[shared]
        for g, lo, hi in _group_spans(counts):
            t_g = table[rows[g]]
            for s in range(lo, hi, block):
                e = min(s + block, hi)
                f = torch.mm(weight[s:e], t_g).addmm_(shared_weight[s:e], t_sh)
                y[s:e] = torch.bmm(f.view(e - s, b, d), beta[s:e, :, None])[..., 0]
        ctx.save_for_backward(weight, shared, shared_weight, table, beta, rows)
        ctx.counts, ctx.block = counts, block
        return y

    @staticmethod
    def backward(ctx, grad_y):
        weight, shared, shared_weight, table, beta, rows = ctx.saved_tensors
        grad_y = grad_y.contiguous()
        need_w, need_sw, need_t, need_b = (ctx.needs_input_grad[i] for i in (0, 2, 3, 4))
        d = beta.shape[1]
        b = grad_y.shape[1]
        t_sh = table[shared]
        grad_weight = torch.empty_like(weight) if need_w else None
        grad_sw = torch.empty_like(shared_weight) if need_sw else None
        grad_table = torch.zeros_like(table) if need_t else None
        grad_sh = torch.zeros_like(t_sh) if need_t else None
        grad_beta = torch.empty_like(beta) if need_b else None
        for g, lo, hi in _group_spans(ctx.counts):
            t_g = table[rows[g]]
            grad_g = torch.zeros_like(t_g) if need_t else None
            for s in range(lo, hi, ctx.block):
                e = min(s + ctx.block, hi)
                gy = grad_y[s:e]
                if need_b:
                    f = torch.mm(weight[s:e], t_g).addmm_(shared_weight[s:e], t_sh)
                    f = f.view(e - s, b, d).transpose(1, 2)
                    grad_beta[s:e] = torch.bmm(f, gy[:, :, None])[..., 0]
                if not (need_w or need_sw or need_t):
                    continue
                grad_f = (gy[:, :, None] * beta[s:e, None, :]).view(e - s, b * d)
                if need_w:
                    torch.mm(grad_f, t_g.t(), out=grad_weight[s:e])
                if need_sw:
                    torch.mm(grad_f, t_sh.t(), out=grad_sw[s:e])
                if need_t:
                    grad_g.addmm_(weight[s:e].t(), grad_f)
                    grad_sh.addmm_(shared_weight[s:e].t(), grad_f)
            if need_t:
                grad_table.index_add_(0, rows[g], grad_g)
        if need_t:
            grad_table.index_add_(0, shared, grad_sh)
        return grad_weight, None, grad_sw, grad_table, grad_beta, None, None, None


def _group_spans(counts: list[int]):
    """``(group, first, end)`` of consecutive groups of ``counts[g]`` vertices."""
    lo = 0
    for g, n in enumerate(counts):
        yield g, lo, lo + n
        lo += n


def _row_groups(index: torch.Tensor, min_mean: float):
    """Vertices whose rows of ``index`` (V, K) are equal, as groups.

    Returns ``(order, counts, rows)``: the vertices sorted by group (int64 (V,)), the
    group sizes (list of int) and each group's row of ``index`` ((G, K)); or None when
    the groups hold fewer than ``min_mean`` vertices on average. Rows are told apart by
    a hash, then checked to be equal (a collision falls back to an exact comparison).
    """
    n_v, k = index.shape
    mult = torch.arange(k, dtype=torch.int64, device=index.device) * 2654435761 + 40503
    key = (index * (mult | 1)).sum(1)
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    if len(counts) * min_mean > n_v:
        return None
    order = torch.argsort(inverse, stable=True)
    rows = index[order[torch.cumsum(counts, 0) - counts]]
    if not torch.equal(index[order], rows.repeat_interleave(counts, 0)):  # a collision
        rows, inverse, counts = torch.unique(index, dim=0, return_inverse=True, return_counts=True)
        if len(counts) * min_mean > n_v:
            return None
        order = torch.argsort(inverse, stable=True)
    return order, counts.tolist(), rows.contiguous()


class _DenseGather(torch.autograd.Function):
    """The weighted gather as matrix products, for GPUs.

    For a block of vertices the selection matrix ``S`` (block, R) is built by a
    scatter-add of the block's weights at its indices (duplicate indices add up, as
    in the bag sum); then ``out = S @ table``. Backward: ``grad_table = Σ_blocks
    Sᵀ @ grad_out`` and ``grad_weight[v, k] = (grad_out @ tableᵀ)[v, index[v, k]]``
    (the row dot products, read off one matrix product). ``S`` is rebuilt in the
    backward instead of kept. Work is V·R·E multiply-adds per product, done by the
    GPU's matrix units; the embedding-bag kernels instead serialise on CUDA. The
    products run in the table's dtype (float32, or bfloat16 under autocast) with
    autocast off inside, so their precision is the caller's choice, not autocast's.
    """

    @staticmethod
    def forward(ctx, index, weight, table, block):
        ctx.save_for_backward(index, weight, table)
        ctx.block = block
        out = table.new_empty(index.shape[0], table.shape[1])
        with torch.autocast(table.device.type, enabled=False):
            for lo in range(0, index.shape[0], block):
                s = _selection(index[lo : lo + block], weight[lo : lo + block], table)
                torch.mm(s, table, out=out[lo : lo + block])
        return out

    @staticmethod
    def backward(ctx, grad_out):
        index, weight, table = ctx.saved_tensors
        grad_out = grad_out.contiguous().to(table.dtype)
        need_w, need_t = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        grad_weight = weight.new_empty(weight.shape) if need_w else None
        acc = torch.promote_types(table.dtype, torch.float32)
        grad_table = torch.zeros_like(table, dtype=acc) if need_t else None
        with torch.autocast(table.device.type, enabled=False):
            for lo in range(0, index.shape[0], ctx.block):
                hi = min(lo + ctx.block, index.shape[0])
                g = grad_out[lo:hi]
                if need_t:  # blocks summed in float32 at least
                    s = _selection(index[lo:hi], weight[lo:hi], table)
                    grad_table += torch.mm(s.t(), g)
                if need_w:  # (block, R): every row dot product, kept in float32
                    rows = _mm_float32(g, table.t())
                    grad_weight[lo:hi] = rows.gather(1, index[lo:hi]).to(weight.dtype)
        if grad_table is not None:
            grad_table = grad_table.to(table.dtype)
        return None, grad_weight, grad_table, None


def _mm_float32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with a float32 (or float64) result: a low-precision product's output is
    not rounded to its inputs' dtype (the selector gradients are differences of these
    dot products and lose most of their digits to a bfloat16 rounding)."""
    if a.dtype in (torch.float32, torch.float64):
        return torch.mm(a, b)
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return torch.mm(a.float(), b.float())


def _selection(index: torch.Tensor, weight: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """The block's selection matrix (n, R) in the table's dtype (summed in float32 at
    least)."""
    acc = torch.promote_types(table.dtype, torch.float32)
    s = torch.zeros(index.shape[0], table.shape[0], dtype=acc, device=table.device)
    s.scatter_add_(1, index, weight.to(acc))
    return s.to(table.dtype)


def gather_method(device: torch.device | str) -> str:
    """The weighted gather made for a device: ``"bag"`` on the CPU, ``"dense"`` elsewhere."""
    return "bag" if torch.device(device).type == "cpu" else "dense"


def weighted_gather(
    index: torch.Tensor,
    weight: torch.Tensor,
    table: torch.Tensor,
    method: str | None = None,
    block_bytes: int = DENSE_BLOCK_BYTES,
) -> torch.Tensor:
    """Weighted sum of table rows per bag, differentiable in ``weight`` and ``table``.

    Parameters
    ----------
    index : int64 tensor of shape (V, K)
    weight : tensor of shape (V, K)
    table : tensor of shape (R, E)
    method : {"bag", "dense"}, optional
        The implementation (same numbers, within rounding): ``"bag"``
        (``embedding_bag``, for the CPU) or ``"dense"`` (selection-matrix products,
        for GPUs). Default: :func:`gather_method` of the table's device.
    block_bytes : int
        ``"dense"`` only: the largest selection-matrix block, in bytes of float32
        (vertices are taken in blocks of ``block_bytes // (4 R)``).

    Returns
    -------
    tensor of shape (V, E)
        ``out[v] = Σ_k weight[v, k] · table[index[v, k]]``.
    """
    method = gather_method(table.device) if method is None else method
    if method == "bag":
        return _WeightedGather.apply(index, weight.to(table.dtype), table)
    if method == "dense":
        block = max(1, int(block_bytes) // (4 * max(1, table.shape[0])))
        return _DenseGather.apply(index, weight.to(table.dtype), table, block)
    raise ValueError(f"gather method must be one of {GATHER_METHODS}; found {method!r}")


def gather_readout(
    index: torch.Tensor,
    weight: torch.Tensor,
    table: torch.Tensor,
    beta: torch.Tensor,
    block_bytes: int = READOUT_BLOCK_BYTES,
    group_min_mean: float = GROUP_MIN_MEAN,
) -> torch.Tensor:
    """Each vertex's readout of its bag sum, without the (V, B, D) features.

    Parameters
    ----------
    index, weight : tensors of shape (V, K)
        As in :func:`weighted_gather` (int64 rows of ``table``; their weights).
    table : tensor of shape (R, B * D)
        Rows of B images' D-channel tokens.
    beta : tensor of shape (V, D)
        Per-vertex readout weights.
    block_bytes : int
        Largest block of features (vertices × B·D × 4 bytes) held at once.
    group_min_mean : float
        Vertices whose bag columns name the same rows are read as groups, by matrix
        products, when the groups hold at least this many vertices on average
        (``math.inf``: never; 0: always).

    Returns
    -------
    tensor of shape (V, B)
        ``y[v, b] = Σ_d beta[v, d] · (Σ_k weight[v, k] · table[index[v, k]])[b, d]``,
        the same numbers as :func:`weighted_gather` followed by the readout;
        differentiable in ``weight``, ``table`` and ``beta``.

    Notes
    -----
    Columns of ``index`` that name the same row for every vertex (the global tokens;
    every column in the no-space ablation) are read by matrix products rather than the
    bag sum: at paper scale they are 12 of 60 columns, and as bags of the transposed
    index (one bag of V entries per row) they took most of the table gradient's time.
    The other columns are read by matrix products too, a group at a time, when
    vertices share them (:class:`_GroupedReadout`: a trained model's vertices fall in
    at most 49 cells of an 8×8 grid); the bag sums, whose scattered row reads made a
    trained model's step 2–4× slower than a fresh one's, are left for vertices that
    share little.
    """
    block = max(1, int(block_bytes) // (4 * max(1, table.shape[1])))
    dtype = table.dtype
    weight = weight.to(dtype)
    # columns that name the same row for every vertex (the global tokens) are read by
    # a matrix product instead of the bag sum
    shared = (index == index[:1]).all(0) if len(index) else index.new_zeros(index.shape[1]).bool()
    bag_cols = (~shared).nonzero()[:, 0]
    sh_cols = shared.nonzero()[:, 0]
    bag_index = index[:, bag_cols].contiguous()
    groups = _row_groups(bag_index, group_min_mean) if len(bag_cols) and len(index) else None
    if groups is not None:  # trained spatial selectors: a grid cell's vertices together
        order, counts, rows = groups
        back = torch.empty_like(order)
        back[order] = torch.arange(len(order), device=order.device)
        sorted_weight = weight[order]  # the vertices in group order
        y = _GroupedReadout.apply(
            sorted_weight[:, bag_cols].contiguous(),
            index[0, sh_cols].contiguous(),
            sorted_weight[:, sh_cols].contiguous(),
            table,
            beta.to(dtype)[order],
            rows,
            counts,
            block,
        )
        return y[back]
    return _GatherReadout.apply(
        bag_index,
        weight[:, bag_cols].contiguous(),
        index[0, sh_cols].contiguous(),
        weight[:, sh_cols].contiguous(),
        table,
        beta.to(dtype),
        block,
    )
