"""Paired augmentation: sample random square crops and pixel noise, then apply them.

Sampling and applying are separate (as in Kornia): :func:`sample_crops` returns a
:class:`Crops` value holding the boxes and the noise, and :func:`apply_crops`
applies that value to any batch of canvases. The engine applies the same value to
the images being optimized and to their seeds, so the regularizer compares like
with like, and the opacity accumulator maps gradients back through the same boxes.

All crops of a step are resampled in one ``grid_sample`` call: the K crops are
stacked along the output height of one sampling grid, so no Python loop runs per
crop and the canvases are never copied K times.

:class:`CropOperator` is the same linear map (bilinear sampling averaged over
``supersample x supersample`` points per output pixel) written as two sparse
resampling passes, one per axis, with its adjoint. The engine uses it: on CPU it
is several times cheaper than ``grid_sample`` and its backward (whose CPU kernel
runs on one thread per image), and the adjoint maps several gradients back to the
canvas in one call. On other devices it falls back to ``grid_sample``.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["CropOperator", "Crops", "apply_crops", "draw_noise", "sample_crops"]


@dataclass(frozen=True)
class Crops:
    """Crop boxes and pixel noise of one step.

    Attributes:
        boxes: ``(K, 3)`` float tensor of ``(top, left, side)`` in canvas pixels.
        noise: ``(K, 3, h, w)`` additive pixel noise, or ``None``.
        canvas: ``(H, W)`` of the canvas the boxes were drawn for.
        out: ``(h, w)`` of each resized crop (the model's input size).
        supersample: samples per output pixel along each axis (antialiasing).
    """

    boxes: torch.Tensor
    noise: torch.Tensor | None
    canvas: tuple[int, int]
    out: tuple[int, int]
    supersample: int = 1

    @property
    def k(self) -> int:
        return int(self.boxes.shape[0])


def sample_crops(
    canvas: tuple[int, int],
    out: tuple[int, int],
    k: int = 16,
    crop_range: tuple[float, float] = (0.05, 0.99),
    noise_sd: float = 0.02,
    noise_uniform: float = 0.02,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    antialias: bool = True,
    max_supersample: int = 2,
) -> Crops:
    """Draw ``k`` square crops and their noise.

    The side of each crop is uniform in ``crop_range`` times the canvas's shorter
    side; its top-left corner is uniform over the positions where it fits. The
    noise is Gaussian (``noise_sd``) plus uniform of total width ``noise_uniform``,
    in [0, 1] pixel units (see :func:`draw_noise`).

    Args:
        canvas: ``(H, W)`` of the canvas.
        out: ``(h, w)`` each crop is resized to.
        k: number of crops.
        crop_range: ``(min, max)`` fractions of the shorter canvas side, in (0, 1].
        generator: source of all randomness (on ``device``).
        antialias: average ``supersample x supersample`` bilinear samples per output
            pixel, with ``supersample = ceil(largest side / output side)`` capped at
            ``max_supersample``.

    Returns:
        A :class:`Crops` value.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> c = sample_crops((64, 96), (32, 32), k=4, generator=g)
        >>> tuple(c.boxes.shape), tuple(c.noise.shape)
        ((4, 3), (4, 3, 32, 32))
    """
    lo, hi = crop_range
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"crop_range must satisfy 0 < min <= max <= 1; got ({lo}, {hi})")
    if k < 1:
        raise ValueError(f"crops must be at least 1; got {k}")
    if noise_sd < 0 or noise_uniform < 0:
        raise ValueError(f"noise sd and width must be >= 0; got ({noise_sd}, {noise_uniform})")
    h, w = canvas
    short = min(h, w)
    u = torch.rand((k, 3), generator=generator, device=device)
    side = (lo + (hi - lo) * u[:, 0]) * short
    top = u[:, 1] * (h - side)
    left = u[:, 2] * (w - side)
    boxes = torch.stack([top, left, side], dim=1)
    noise = None
    if noise_sd > 0 or noise_uniform > 0:
        noise = draw_noise((k, 3, out[0], out[1]), noise_sd, noise_uniform, generator=generator, device=device)
    ss = 1
    if antialias:
        ss = max(1, min(max_supersample, math.ceil(hi * short / min(out))))
    return Crops(boxes=boxes, noise=noise, canvas=(h, w), out=tuple(out), supersample=ss)  # type: ignore[arg-type]


#: Bits of one noise value: each value is a quantile of the noise distribution at one
#: of 2**15 equally likely levels, so a 31-bit random word gives two values.
NOISE_BITS = 15
_NOISE_MASK = (1 << NOISE_BITS) - 1


@functools.lru_cache(maxsize=16)
def _noise_levels(sd: float, width: float, device: str) -> torch.Tensor:
    """The ``2**NOISE_BITS`` quantiles, at ``(i + 1/2) / 2**NOISE_BITS``, of ``N(0, sd) + U(-width/2, width/2)``."""
    n = 1 << NOISE_BITS
    p = (torch.arange(n, dtype=torch.float64, device="cpu") + 0.5) / n  # a host-side table, moved once
    h = width / 2
    if h == 0:
        q = sd * math.sqrt(2) * torch.erfinv(2 * p - 1)
    elif sd == 0:
        q = (2 * p - 1) * h
    else:
        # CDF of the sum: (G(x + h) - G(x - h)) / (2 h), with G the antiderivative of the
        # Gaussian CDF, G(t) = t Phi(t / sd) + sd phi(t / sd). Inverted by bisection.
        def g(t: torch.Tensor) -> torch.Tensor:
            z = t / sd
            return t * 0.5 * torch.erfc(-z / math.sqrt(2)) + sd * torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)

        lo = torch.full_like(p, -(h + 10 * sd))
        hi = torch.full_like(p, h + 10 * sd)
        for _ in range(64):
            mid = (lo + hi) / 2
            below = (g(mid + h) - g(mid - h)) / (2 * h) < p
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        q = (lo + hi) / 2
    return q.to(device=device, dtype=torch.float32)


def draw_noise(shape: tuple[int, ...], sd: float, width: float, generator: torch.Generator | None = None,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Independent pixel noise: Gaussian of ``sd`` plus uniform of total ``width``, as one draw.

    Each value is drawn from the distribution of the sum by its inverse CDF at
    ``2**NOISE_BITS`` equally likely levels (the tails are cut near 4 standard
    deviations; near zero the levels are 1e-6 apart at the default scale). One
    31-bit random word from ``generator`` gives two values, so the default step's
    2.4 million values cost about a third of separate normal and uniform draws.

    Example:
        >>> x = draw_noise((4, 3, 64, 64), 0.02, 0.02, generator=torch.Generator().manual_seed(0))
        >>> round(x.std().item(), 3), round((0.02 ** 2 + 0.02 ** 2 / 12) ** 0.5, 3)
        (0.021, 0.021)
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    levels = _noise_levels(float(sd), float(width), str(dev))
    n = math.prod(shape)
    half = (n + 1) // 2
    words = torch.empty(half, dtype=torch.int32, device=dev).random_(generator=generator)  # [0, 2**31)
    out = torch.empty(2 * half, device=dev)
    torch.index_select(levels, 0, words & _NOISE_MASK, out=out[:half])
    words >>= NOISE_BITS
    words &= _NOISE_MASK
    torch.index_select(levels, 0, words, out=out[half:])
    return out[:n].view(shape)


def _grid(crops: Crops, dtype: torch.dtype) -> torch.Tensor:
    """Sampling grid ``(1, K*h*ss, w*ss, 2)`` in grid_sample's normalized coordinates."""
    H, W = crops.canvas
    oh, ow = crops.out
    ss = crops.supersample
    dev = crops.boxes.device
    boxes = crops.boxes.to(dtype)
    iy = (torch.arange(oh * ss, device=dev, dtype=dtype) + 0.5) / (oh * ss)
    ix = (torch.arange(ow * ss, device=dev, dtype=dtype) + 0.5) / (ow * ss)
    top, left, side = boxes[:, 0:1], boxes[:, 1:2], boxes[:, 2:3]
    gy = (top + iy[None, :] * side) / H * 2 - 1  # (K, oh*ss)
    gx = (left + ix[None, :] * side) / W * 2 - 1  # (K, ow*ss)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    return grid.reshape(1, -1, ow * ss, 2)


def apply_crops(images: torch.Tensor, crops: Crops, add_noise: bool = True) -> torch.Tensor:
    """Apply crops (and noise) to a batch of canvases.

    Args:
        images: ``(B, C, H, W)`` canvases of the size the crops were drawn for.
        crops: the value from :func:`sample_crops`.
        add_noise: add the crops' pixel noise.

    Returns:
        ``(B * K, C, h, w)``, ordered image-major: row ``b * K + k`` is crop ``k`` of image ``b``.
    """
    b, c, h, w = images.shape
    if (h, w) != tuple(crops.canvas):
        raise ValueError(f"crops were drawn for a {crops.canvas} canvas; images are {(h, w)}")
    k, (oh, ow), ss = crops.k, crops.out, crops.supersample
    grid = _grid(crops, images.dtype).expand(b, -1, -1, -1)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    out = out.view(b, c, k, oh * ss, ow * ss).transpose(1, 2).reshape(b * k, c, oh * ss, ow * ss)
    if ss > 1:
        out = F.avg_pool2d(out, ss)
    if add_noise and crops.noise is not None:
        out = (out.view(b, k, c, oh, ow) + crops.noise.to(out.dtype)).view(b * k, c, oh, ow)
    return out


def _axis_taps(start: torch.Tensor, side: torch.Tensor, n_out: int, ss: int, size: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Source indices and weights along one axis: ``(K, n_out, 2 * ss)`` each.

    Output sample ``i`` of crop ``k`` averages ``ss`` bilinear samples at canvas
    positions ``start + (i * ss + a + 0.5) / (n_out * ss) * side - 0.5`` (pixel
    centres, ``align_corners=False``), clamped to the canvas (border padding),
    exactly as :func:`apply_crops` samples them with ``grid_sample``.
    """
    dev = start.device
    a = torch.arange(n_out * ss, device=dev, dtype=torch.float64)
    pos = start.double()[:, None] + (a[None, :] + 0.5) / (n_out * ss) * side.double()[:, None] - 0.5
    pos = pos.clamp(0, size - 1)
    lo = pos.floor()
    frac = pos - lo
    i0 = lo.long()
    i1 = (i0 + 1).clamp(max=size - 1)  # weight 0 when pos sits on the last pixel
    k = start.shape[0]
    idx = torch.stack([i0, i1], dim=-1).reshape(k, n_out, 2 * ss)
    w = (torch.stack([1 - frac, frac], dim=-1) / ss).reshape(k, n_out, 2 * ss)
    return idx, w


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix; rows may repeat a column (products then sum the repeats)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": the products used here are stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, shape, device=val.device, check_invariants=False)


def _spmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` for CSR ``a`` and strided ``b``, written straight into a new tensor.

    (``a @ b`` goes through ``addmm`` on a zero-filled copy: two more passes over the output.)
    """
    return torch.empty((a.shape[0], b.shape[1]), dtype=b.dtype, device=b.device).addmm_(a, b, beta=0)


def _fixed_rows(idx: torch.Tensor, val: torch.Tensor, n_cols: int) -> torch.Tensor:
    """CSR of a matrix whose every row holds ``idx.shape[-1]`` entries (``idx``: (rows, T))."""
    rows, t = idx.shape
    crow = torch.arange(rows + 1, device=idx.device, dtype=torch.int32) * t
    return _csr(crow, idx.reshape(-1).to(torch.int32), val.reshape(-1), (rows, n_cols))


def _transposed_rows(idx: torch.Tensor, val: torch.Tensor, size: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Transpose of ``G`` blocks given as fixed-width rows: ``idx``, ``val`` ``(G, R, T)``.

    Returns per block the CSR arrays of its ``(size, R)`` transpose: ``crow`` ``(G, size + 1)``
    (offsets within the block), ``col`` and ``val`` ``(G, R * T)``.
    """
    g, r, t = idx.shape
    flat = idx.reshape(g, r * t)
    order = torch.argsort(flat, dim=1, stable=True)
    col = torch.div(order, t, rounding_mode="floor")
    counts = torch.zeros((g, size), dtype=torch.long, device=idx.device)
    counts.scatter_add_(1, flat, torch.ones_like(flat))
    crow = torch.zeros((g, size + 1), dtype=torch.long, device=idx.device)
    crow[:, 1:] = counts.cumsum(1)
    return crow, col, val.reshape(g, r * t).gather(1, order)


class CropOperator:
    """The crops of one step as a linear operator with an adjoint.

    ``op(images)`` equals ``apply_crops(images, crops)`` (to float rounding) and
    ``op.adjoint(grads)`` maps gradients with respect to the crops back to the
    canvases (the transpose of the same linear map; the noise is additive and
    passes gradients through unchanged).

    On CPU the map is applied, image by image, as two sparse matrix products, one
    per axis (the bilinear weights are separable): first the rows of every crop from
    the canvas rows, ``(K * h, H) @ (H, W * C)``, then, for each of those rows, its
    output columns, a block-diagonal ``(K * h * w, K * h * W)`` matrix applied to the
    result viewed as ``(K * h * W, C)``. Each output pixel costs ``2 * supersample``
    multiply-adds per pass, no tensor is transposed on the way, and the result comes
    out in ``channels_last`` memory order. Elsewhere it uses ``grid_sample``.

    Args:
        crops: the value from :func:`sample_crops`.
        dtype: floating dtype of the images it will be applied to.
        backend: ``"auto"`` (sparse on CPU, ``grid_sample`` elsewhere), ``"sparse"``
            or ``"grid"``.

    Shape:
        images ``(B, C, H, W)`` -> crops ``(B * K, C, h, w)`` in image-major order
        (``channels_last`` memory format from the sparse backend).

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> c = sample_crops((40, 60), (16, 16), k=3, generator=g)
        >>> img = torch.rand(2, 3, 40, 60)
        >>> op = CropOperator(c)
        >>> bool(torch.allclose(op(img), apply_crops(img, c), atol=1e-4))
        True
    """

    def __init__(self, crops: Crops, dtype: torch.dtype = torch.float32, backend: str = "auto") -> None:
        if backend not in ("auto", "sparse", "grid"):
            raise ValueError(f"backend must be 'auto', 'sparse' or 'grid'; got {backend!r}")
        self.crops = crops
        self.dtype = dtype
        dev = crops.boxes.device
        self.backend = ("sparse" if dev.type == "cpu" else "grid") if backend == "auto" else backend
        self._t: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.backend == "sparse":
            self._build()

    # -- the sparse factors ------------------------------------------------------------
    def _build(self) -> None:
        c = self.crops
        (h, w), (oh, ow), ss, k = c.canvas, c.out, c.supersample, c.k
        iy, wy = _axis_taps(c.boxes[:, 0], c.boxes[:, 2], oh, ss, h)
        ix, wx = _axis_taps(c.boxes[:, 1], c.boxes[:, 2], ow, ss, w)
        self._taps = (iy, wy.to(self.dtype), ix, wx.to(self.dtype))
        t = 2 * ss
        # Pass 1: output rows of all crops from canvas rows, (K*oh, H).
        self._rows = _fixed_rows(iy.reshape(k * oh, t), self._taps[1], h)
        # Pass 2: for each (crop, output row) block, output columns from canvas columns.
        # Written straight into int32 / float buffers: these hold K * oh * ow * T entries.
        q = torch.arange(k * oh, device=iy.device, dtype=torch.int32).view(k, oh, 1, 1) * w
        col = torch.empty((k, oh, ow, t), dtype=torch.int32, device=iy.device)
        torch.add(ix.to(torch.int32).view(k, 1, ow, t), q, out=col)
        val = self._taps[3].view(k, 1, ow, t).expand(k, oh, ow, t).reshape(-1)
        crow = torch.arange(k * oh * ow + 1, device=iy.device, dtype=torch.int32) * t
        self._cols = _csr(crow, col.view(-1), val, (k * oh * ow, k * oh * w))

    def _transposes(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Transposes of the two passes (built on first use)."""
        if self._t is None:
            c = self.crops
            (h, w), (oh, ow), k = c.canvas, c.out, c.k
            iy, wy, ix, wx = self._taps
            t = iy.shape[-1]
            crow, col, val = _transposed_rows(iy.reshape(1, k * oh, t), wy.reshape(1, k * oh, t), h)
            rows_t = _csr(crow[0].to(torch.int32), col[0].to(torch.int32), val[0], (h, k * oh))
            # Per crop the (W, ow) transpose of its column weights; repeated for its oh rows.
            crow, col, val = _transposed_rows(ix, wx, w)  # (K, W+1), (K, ow*T), (K, ow*T)
            nb = ow * t
            dev = iy.device
            q = torch.arange(k * oh, device=dev, dtype=torch.int32).view(k, oh, 1)
            crow_all = torch.empty(k * oh * w + 1, dtype=torch.int32, device=dev)
            torch.add(crow[:, None, :w].to(torch.int32), q * nb, out=crow_all[:-1].view(k, oh, w))
            crow_all[-1:].fill_(k * oh * nb)
            col_all = torch.empty((k, oh, nb), dtype=torch.int32, device=dev)
            torch.add(col[:, None, :].to(torch.int32), q * ow, out=col_all)
            val_all = val[:, None, :].expand(k, oh, nb).reshape(-1)
            cols_t = _csr(crow_all, col_all.view(-1), val_all, (k * oh * w, k * oh * ow))
            self._t = (rows_t, cols_t)
        return self._t

    # -- forward -----------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, add_noise: bool = True) -> torch.Tensor:
        """Crops of ``images`` ``(B, C, H, W)``: ``(B * K, C, h, w)`` (no autograd).

        Each image is resampled on its own, so its crops are bit-identical whatever
        else is in the batch (a batched run equals its single runs).
        """
        c = self.crops
        b, ch, h, w = images.shape
        if (h, w) != tuple(c.canvas):
            raise ValueError(f"crops were drawn for a {c.canvas} canvas; images are {(h, w)}")
        if self.backend == "grid":
            with torch.no_grad():
                return apply_crops(images.detach(), c, add_noise=add_noise)
        k, (oh, ow) = c.k, c.out
        x = images.detach().to(self.dtype).permute(0, 2, 3, 1)  # (B, H, W, C)
        out = torch.empty((b, k * oh * ow, ch), dtype=self.dtype, device=images.device)
        noise = c.noise.to(self.dtype).permute(0, 2, 3, 1) if add_noise and c.noise is not None else None
        for i in range(b):
            t1 = _spmm(self._rows, x[i].reshape(h, w * ch))  # (K*oh, W*C): rows (crop, output row)
            out[i].addmm_(self._cols, t1.view(k * oh * w, ch), beta=0)  # (K*oh*ow, C)
        out = out.view(b, k, oh, ow, ch)
        if noise is not None:
            out.add_(noise)
        return out.view(b * k, oh, ow, ch).permute(0, 3, 1, 2)  # NCHW view, channels_last memory

    # -- adjoint -----------------------------------------------------------------------
    def adjoint(self, grads: torch.Tensor, images: torch.Tensor | None = None) -> torch.Tensor:
        """Map gradients at the crops back to the canvases.

        Args:
            grads: ``(B * K, C, h, w)``, any memory format; ``B`` may be any number of
                canvases (stack several gradients of the same images along it).
            images: the canvases, needed by the ``grid`` backend only.

        Returns:
            ``(B, C, H, W)`` contiguous.
        """
        c = self.crops
        k, (oh, ow), (h, w) = c.k, c.out, c.canvas
        bk, ch = grads.shape[:2]
        if bk % k:
            raise ValueError(f"expected a multiple of {k} crops; got {bk}")
        b = bk // k
        if self.backend == "grid":
            if images is None:
                raise ValueError("the grid backend needs the images to compute the adjoint")
            reps = b // images.shape[0]
            with torch.enable_grad():
                canvas = images.detach().repeat(reps, 1, 1, 1).requires_grad_(True)
                out = apply_crops(canvas, c, add_noise=False)
                return torch.autograd.grad(out, canvas, grads.to(out.dtype))[0]
        rows_t, cols_t = self._transposes()
        g = grads.to(self.dtype).permute(0, 2, 3, 1).contiguous().view(b, k * oh * ow, ch)
        res = torch.empty((b, h, w * ch), dtype=self.dtype, device=grads.device)
        for i in range(b):
            g1 = _spmm(cols_t, g[i])  # (K*oh*W, C)
            res[i].addmm_(rows_t, g1.view(k * oh, w * ch), beta=0)  # (H, W*C)
        return res.view(b, h, w, ch).permute(0, 3, 1, 2).contiguous()
