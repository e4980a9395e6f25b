"""Intensity normalisation of input images."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

METHODS = ("minmax", "percentile", "local", "none")

#: Scales (px) of the ``"local"`` normalisation: background removal, local contrast, clip (in
#: local standard deviations).
LOCAL_BACKGROUND_SIGMA = 10.0
LOCAL_CONTRAST_SIGMA = 24.0
LOCAL_CLIP = 8.0


def as_float_image(image: np.ndarray) -> np.ndarray:
    """A float32 copy of a real, non-empty, finite image; ``ValueError`` otherwise."""
    img = np.asarray(image)
    if img.dtype == bool:
        img = img.astype(np.float32)
    if not np.issubdtype(img.dtype, np.number) or np.iscomplexobj(img):
        raise ValueError(f"normalize_image: expected a real numeric image, got dtype {img.dtype}")
    out = img.astype(np.float32, copy=True)
    if out.size == 0:
        raise ValueError("normalize_image: empty image")
    if not np.isfinite(out).all():
        n_bad = int((~np.isfinite(out)).sum())
        raise ValueError(
            f"normalize_image: the image holds {n_bad} NaN/infinite pixel(s); "
            "fill or mask them before normalising"
        )
    return out


def normalize_image(
    image: np.ndarray,
    method: str = "minmax",
    mask: np.ndarray | None = None,
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Normalise an image to float32, roughly in [0, 1].

    - ``"minmax"`` (the paper's): ``(x − min) / (max − min)``.
    - ``"percentile"``: robust min-max between the given percentiles, clipped to [0, 1]
      (insensitive to a few hot pixels or burnt-in labels).
    - ``"local"``: local contrast normalisation for small bright or dark lesions: subtract the
      background (Gaussian, σ 10 px), divide by the local RMS of what is left (σ 24 px) and map
      ±8 local standard deviations to [0, 1] (0.5 = background). Nearly invariant to gain,
      offset, bit depth, windowing/gamma and slow trends, and the same on a tile as on the whole
      image (it never sees global statistics), which the paper's min-max is not.
    - ``"none"``: only a cast to float32.

    Statistics come from the pixels inside ``mask`` when a mask is given (e.g. the breast or the
    fundus field of view). A constant image (or mask region) gives all zeros. NaN or infinite
    values raise ``ValueError``.
    """
    if method not in METHODS:
        raise ValueError(f"normalize_image: unknown method {method!r}; choose one of {METHODS}")
    out = as_float_image(image)
    if method == "none":
        return out
    if method == "local":
        return _local_contrast(out)
    vals = out
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != out.shape[-m.ndim :]:
            raise ValueError(
                f"normalize_image: mask shape {m.shape} does not match image shape {out.shape}"
            )
        vals = out[..., m]
        if vals.size == 0:
            vals = out  # empty mask: fall back to the whole image
    vals = vals.astype(np.float64)
    if method == "minmax":
        lo, hi = float(vals.min()), float(vals.max())
    else:
        lo, hi = (float(v) for v in np.percentile(vals, percentiles))
    if not hi > lo:
        return np.zeros_like(out)
    out -= np.float32(lo)
    out *= np.float32(1.0 / (hi - lo))
    if method == "percentile" or mask is not None:
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _symmetric_index(n: int, r: int, device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by ``r`` on each side with scipy's 'reflect'
    (half-sample symmetric: d c b a | a b c d | d c b a), repeated for any ``r``."""
    import torch

    i = torch.arange(-r, n + r, device=device) % (2 * n)
    return torch.where(i >= n, 2 * n - 1 - i, i)


def _gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """scipy.ndimage.gaussian_filter(x, sigma, mode="reflect") (truncate 4) of a 2-D tensor: scipy
    itself on the host (its 1-D passes beat a one-channel convolution there), two 1-D
    convolutions on a GPU (:func:`_gaussian_conv`, tested equal)."""
    if x.device.type == "cpu":
        from scipy import ndimage as ndi

        return torch_from(ndi.gaussian_filter(x.numpy(), sigma, mode="reflect"))
    return _gaussian_conv(x, sigma)


def _gaussian_conv(x: torch.Tensor, sigma: float) -> torch.Tensor:
    import torch
    import torch.nn.functional as F

    r = int(4.0 * sigma + 0.5)
    t = torch.arange(-r, r + 1, device=x.device, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    h, w = x.shape
    y = x.index_select(0, _symmetric_index(h, r, x.device))
    y = F.conv2d(y[None, None], k.view(1, 1, -1, 1))[0, 0]
    y = y.index_select(1, _symmetric_index(w, r, x.device))
    return F.conv2d(y[None, None], k.view(1, 1, 1, -1))[0, 0]


def torch_from(a: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _smooth(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing for large σ, done on a block-averaged copy (factor k ≈ σ/4) and
    upsampled back bilinearly: the result is smooth on that scale, so little is lost. Block
    centres sit at (i + 0.5) k − 0.5 in full-resolution pixels; edges clamp."""
    import torch.nn.functional as F

    k = max(1, int(sigma // 4))
    h, w = x.shape[-2:]
    if k == 1 or min(h, w) < 4 * k:
        return _gaussian(x, sigma)
    hp, wp = -(-h // k) * k, -(-w // k) * k
    xp = x[None, None]
    if (hp, wp) != (h, w):  # numpy's 'reflect' (mirror without repeating the edge)
        xp = F.pad(xp, (0, wp - w, 0, hp - h), mode="reflect")
    small = _gaussian(F.avg_pool2d(xp, k)[0, 0], sigma / k)
    up = F.interpolate(
        small[None, None],
        scale_factor=k,
        mode="bilinear",
        align_corners=False,
        recompute_scale_factor=False,
    )
    return up[0, 0, :h, :w]


def _median(x: torch.Tensor) -> float:
    """np.percentile(x, 50) (linear interpolation) of any size: numpy's partition on the host,
    two ``kthvalue`` on a GPU."""
    if x.device.type == "cpu":
        return float(np.percentile(x.numpy(), 50))
    v = x.flatten()
    n = v.numel()
    lo = float(v.kthvalue((n - 1) // 2 + 1).values)
    hi = float(v.kthvalue(n // 2 + 1).values) if n % 2 == 0 else lo
    return 0.5 * (lo + hi)


def local_contrast(x: torch.Tensor) -> torch.Tensor:
    """The ``"local"`` normalisation of a 2-D float32 tensor on its own device (see
    :func:`normalize_image`): the one implementation, used on the host and on a GPU."""
    import torch

    if x.ndim != 2:
        raise ValueError(f"normalize_image: 'local' needs a 2-D image, got shape {tuple(x.shape)}")
    with torch.inference_mode():
        x = x.float()
        span = float(x.max() - x.min())
        if not span > 0:
            return torch.full_like(x, 0.5)
        x = x / span  # scale-free from here on
        hp = x - _smooth(x, LOCAL_BACKGROUND_SIGMA)
        rms = _smooth(hp * hp, LOCAL_CONTRAST_SIGMA).clamp_min(0.0).sqrt()
        # floor: flat regions (air, burnt-in borders) must not blow noise up to unit contrast
        floor = max(_median(rms) * 0.1, 1e-6)
        out = hp / (rms.clamp_min(floor) * (2 * LOCAL_CLIP)) + 0.5
        return out.clamp_(0.0, 1.0)


def _local_contrast(img: np.ndarray) -> np.ndarray:
    import torch

    return local_contrast(torch.from_numpy(np.ascontiguousarray(img, np.float32))).numpy()
