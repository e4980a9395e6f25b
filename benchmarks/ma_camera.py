"""Microaneurysm detection through the whole user path on fundus photographs written the ways
cameras and exports write them: clipped fields of view, red-free (grey) files, portrait frames,
a lifted surround, burned-in labels, a transparent surround, 16-bit TIFF, heavy JPEG,
under-exposure.

Each variant is written to a file and taken through what ``gravity predict default`` does with
it: the task guessed from the file (``core.task.guess_task_file``: MA or MC model), the file
read (green channel), the mask ``gravity predict`` computes for that task, the Predictor
(field-of-view resampling included), its detections at the model's floor and at the γ it
uses. The detections are mapped back into the original photograph's pixels and scored against
its lesions, inside the part of the field of view the variant still shows; the reference is the
same model on the lossless colour PNG, scored on the same lesions (paired bootstrap Δ).

Images: whole synthetic fundus photographs (``synth_fundus(view="full", rgb=True)``, 1300²,
FOV ≈ 1,220 px). The lesions are this project's generator's: what changes between rows is
only how the photograph was written.

Usage: ``python benchmarks/ma_camera.py [--images 12] [--out benchmarks/results/ma_camera.json]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from file_variants import Variant, _all, _ident, add_arguments, run_and_save  # noqa: E402

SIDE = 1300


CLIP = 0.12  # rows cut at the top and the bottom (fraction of the height)
PAD = 0.2  # black columns added at each side (fraction of the width)


def _scaled(rgb, scale):
    """The photograph as a camera of ``scale`` times the resolution would write it."""
    if scale == 1:
        return rgb
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None]
    t = F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False)
    return t[0].permute(1, 2, 0).round().clamp(0, 255).numpy().astype(np.uint8)


def _scale_back(scale):
    def back(p, shape):
        return (p + 0.5) / scale - 0.5

    return back


def _clip_pad(rgb, scale=1):
    rgb = _scaled(rgb, scale)
    h, w = rgb.shape[:2]
    c, pad = int(CLIP * h), int(PAD * w)
    return np.pad(rgb[c : h - c], ((0, 0), (pad, pad), (0, 0)))


def _clip_back(scale=1):
    def back(p, shape):
        h, w = shape
        c, pad = int(CLIP * h * scale), int(PAD * w * scale)
        q = (p + [c, -pad] + 0.5) / scale - 0.5
        return q

    return back


def _clip_visible(shape):
    h, _ = shape
    v = np.zeros(shape, bool)
    c = int(CLIP * h)
    v[c : h - c] = True
    return v


def _lift_surround(rgb, rng):
    from napari_gravity.data.masks import fundus_mask

    fov = fundus_mask(rgb[..., 1].astype(np.float32))
    out = rgb.astype(np.float32)
    noise = rng.normal(0, 4, rgb.shape[:2])
    for k, base in enumerate((42, 30, 26)):
        ch = out[..., k]
        ch[~fov] = np.maximum(ch[~fov], base + noise[~fov])
    return out.clip(0, 255).astype(np.uint8)


def _labels(rgb, rng):
    """Burned-in text: bright blocks of 'characters' in two corners of the black surround."""
    out = rgb.copy()
    h, w = out.shape[:2]
    for y0, x0 in ((int(0.02 * h), int(0.02 * w)), (int(0.93 * h), int(0.78 * w))):
        for k in range(12):
            cy, cx = y0 + rng.integers(0, 3) * 14, x0 + k * 16
            glyph = rng.random((12, 9)) < 0.45
            out[cy : cy + 12, cx : cx + 9][glyph] = 255
    return out


def _transparent(rgb, rng):
    """An export with an alpha channel: the surround transparent, its colour white."""
    from napari_gravity.data.masks import fundus_mask

    fov = fundus_mask(rgb[..., 1].astype(np.float32), erode=0)
    out = np.dstack([rgb, np.where(fov, 255, 0).astype(np.uint8)])
    out[~fov, :3] = 255
    return out


def _underexposed(rgb, rng):
    v = (rgb.astype(np.float32) / 255.0) ** 1.6 * 0.6
    return (v * 255).round().astype(np.uint8)


def variants() -> list[Variant]:
    """The ways a photograph is written, each one change against the lossless colour PNG."""

    def rot_back(p, shape):  # np.rot90(a)[i, j] == a[j, W - 1 - i]
        w = shape[1]
        return np.column_stack([p[:, 1], w - 1 - p[:, 0]])

    return [
        Variant("colour PNG (reference)", ".png", lambda a, r: a, _ident, _all),
        Variant("colour JPEG q95", ".jpg", lambda a, r: a, _ident, _all, {"quality": 95}),
        Variant("colour JPEG q90", ".jpg", lambda a, r: a, _ident, _all, {"quality": 90}),
        Variant(
            "colour JPEG q90, no chroma subsampling",
            ".jpg",
            lambda a, r: a,
            _ident,
            _all,
            {"quality": 90, "subsampling": 0},
        ),
        Variant("colour JPEG q40", ".jpg", lambda a, r: a, _ident, _all, {"quality": 40}),
        Variant(
            "red-free (grey) JPEG q90",
            ".jpg",
            lambda a, r: a[..., 1],
            _ident,
            _all,
            {"quality": 90},
        ),
        Variant("red-free grey PNG", ".png", lambda a, r: a[..., 1], _ident, _all),
        Variant(
            "FOV clipped top/bottom, wide frame",
            ".png",
            lambda a, r: _clip_pad(a),
            _clip_back(),
            _clip_visible,
        ),
        Variant(
            "red-free, FOV clipped, wide frame",
            ".png",
            lambda a, r: _clip_pad(a)[..., 1],
            _clip_back(),
            _clip_visible,
        ),
        Variant(
            "FOV clipped, wide frame, 2x resolution",
            ".png",
            lambda a, r: _clip_pad(a, 2),
            _clip_back(2),
            _clip_visible,
        ),
        Variant(
            "portrait (turned 90 deg)", ".png", lambda a, r: np.rot90(a).copy(), rot_back, _all
        ),
        Variant("lifted grey surround", ".png", _lift_surround, _ident, _all),
        Variant(
            "lifted grey surround, 2x resolution",
            ".png",
            lambda a, r: _lift_surround(_scaled(a, 2), r),
            _scale_back(2),
            _all,
        ),
        Variant("burned-in labels", ".png", _labels, _ident, _all),
        Variant("RGBA PNG, transparent white surround", ".png", _transparent, _ident, _all),
        Variant("16-bit colour TIFF", ".tif", lambda a, r: a.astype(np.uint16) * 257, _ident, _all),
        Variant("under-exposed (gamma 1.6, x0.6)", ".png", _underexposed, _ident, _all),
    ]


def build(n: int, seed: int):
    from napari_gravity.data.masks import fundus_mask
    from napari_gravity.data.synthetic.fundus import synth_fundus

    out = []
    for i in range(n):
        s, rgb = synth_fundus(
            (SIDE, SIDE),
            np.random.default_rng([seed, i]),
            view="full",
            rgb=True,
            has_lesions=True,
            jpeg=0.0,
        )
        s.mask = fundus_mask(s.image)
        s.image_id = f"fundus-{i}"
        out.append((s, rgb))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=12)
    add_arguments(ap, 6161, ROOT / "benchmarks/results/ma_camera.json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    about = {
        "benchmark": "MA through the user path on fundus photographs written in different ways",
        "what": __doc__.split("\n\n")[0],
        "images": args.images,
        "side_px": SIDE,
    }
    return run_and_save(args, build(args.images, args.seed), variants(), about)


if __name__ == "__main__":
    raise SystemExit(main())
