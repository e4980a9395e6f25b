"""From a config's ``data`` section to training tiles and validation images.

- The images come from :func:`napari_gravity.data.datasets.open_dataset` (any supported format,
  including a generic folder holding the GUI's corrected ``IMG.csv`` files) or from a synthetic
  benchmark written first by :func:`napari_gravity.data.synthetic.make_benchmark`.
- Splits: a splits JSON (``data.splits``; a synthetic benchmark brings its own), explicit id lists,
  or a seeded patient-level split made here with :mod:`napari_gravity.data.splits`.
- Every image is normalised ONCE as a whole (exactly as the Predictor does at inference), then
  random tiles are cut from it (``random_tiles``) and flipped (``flip_sample``).
- An epoch is a deterministic list of ``(image index, seed)`` items made from ``(seed, epoch)``,
  so every DDP rank agrees on it and a resumed run sees the same tiles.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from napari_gravity.types import Sample

if TYPE_CHECKING:
    from training.config import DataConfig

log = logging.getLogger(__name__)


class DataConfigError(ValueError):
    """The data section points at something unusable (message names the file / key)."""


@dataclass
class Prepared:
    """An image normalised for the network, with its lesions (y, x), radii and optional mask."""

    image: np.ndarray  # float32, normalised
    points: np.ndarray
    radii: np.ndarray
    mask: np.ndarray | None
    image_id: str
    patient_id: str
    raw: np.ndarray | None = None  # un-normalised image (kept for validation only)

    def as_sample(self) -> Sample:
        return Sample(
            image=self.image,
            points=self.points,
            radii=self.radii,
            mask=self.mask,
            image_id=self.image_id,
            patient_id=self.patient_id,
        )


@dataclass
class DataSplit:
    train: list[Any]  # SampleRef
    val: list[Any]
    test: list[Any]
    root: Path
    description: dict[str, Any]


# --------------------------------------------------------------------------- dataset & splits


def _benchmark_root(data: DataConfig, run_dir: Path) -> Path:
    recipe = data.synthetic
    name = recipe if isinstance(recipe, str) else str(recipe.get("recipe", "custom"))
    if data.cache_dir:
        return Path(data.cache_dir) / name
    return run_dir / "data" / name


def ensure_synthetic(data: DataConfig, run_dir: Path) -> Path:
    """Write the synthetic benchmark once (``make_benchmark``); reused when already complete
    (its ``recipe.json`` is written last)."""
    from napari_gravity.data.synthetic import make_benchmark

    root = _benchmark_root(data, run_dir)
    if (root / "recipe.json").is_file():
        return root
    recipe = data.synthetic
    opts: dict[str, Any] = {}
    if isinstance(recipe, dict):
        opts = {k: v for k, v in recipe.items() if k != "recipe"}
        recipe = recipe.get("recipe", "mc-bench")
    workers = int(opts.pop("workers", data.workers or 1))
    log.info("writing synthetic benchmark %r to %s", recipe, root)
    try:
        make_benchmark(root, recipe, format="folder", workers=workers, overwrite=True, **opts)
    except TypeError as exc:  # an unknown recipe option reaches Recipe(**options)
        raise DataConfigError(
            f"data.synthetic: {str(exc)[:200]} (options of recipe {str(recipe)[:40]!r}: "
            f"{', '.join(sorted(map(str, opts))) or 'none'})"
        ) from None
    return root


def is_benchmark(root: Path) -> bool:
    """A folder written by make_benchmark: train/ val/ test/ data sets + recipe.json."""
    return (root / "recipe.json").is_file() and (root / "train").is_dir()


def _find_splits_file(root: Path) -> Path | None:
    for name in ("splits.json", "split.json"):
        if (root / name).is_file():
            return root / name
    return None


def _split_ids(splits: Any, fold: int) -> tuple[list[str], list[str], list[str]]:
    """Normalise whatever ``load_splits`` returned into (train, val, test) image-id lists."""
    obj = splits
    if hasattr(obj, "folds"):
        obj = obj.folds
    if isinstance(obj, dict) and "folds" in obj:
        obj = obj["folds"]
    if isinstance(obj, (list, tuple)):
        if not obj:
            raise DataConfigError("splits: no folds")
        if fold >= len(obj):
            raise DataConfigError(f"data.fold: {fold} but the splits file has {len(obj)} fold(s)")
        obj = obj[fold]

    def get(key: str) -> list[str]:
        if isinstance(obj, dict):
            v = obj.get(key)
        else:
            v = getattr(obj, key, None)
        return [str(x) for x in (v or [])]

    return get("train"), get("val") or get("validation"), get("test")


def open_split(data: DataConfig, run_dir: Path, seed: int = 0) -> DataSplit:
    """Open the dataset and split it into train / val / test references."""
    from napari_gravity.data.datasets import open_dataset

    if data.synthetic is not None:
        root = ensure_synthetic(data, run_dir)
    else:
        root = Path(data.root)
        if not root.exists():
            raise DataConfigError(f"data.root: {root} does not exist")
    from napari_gravity.data.datasets import detect_format

    fmt = detect_format(root) if data.format == "auto" else data.format
    preprocess: dict[str, Any] = {}
    if fmt == "inbreast" and data.max_radius is not None:
        preprocess["max_radius"] = data.max_radius
    if fmt in ("folder", "eophtha") and data.channel:
        preprocess["channel"] = data.channel
    if is_benchmark(root) and data.train_ids is None and data.splits is None:
        from napari_gravity.data.synthetic import load_benchmark

        parts = load_benchmark(root)
        train, val, test = (list(parts.get(k, [])) for k in ("train", "val", "test"))
        desc = {"root": str(root), "split": "benchmark train/val/test folders"}
        try:
            desc["recipe"] = json.loads((root / "recipe.json").read_text()).get("recipe")
        except (OSError, ValueError):
            pass
        desc["annotations"] = report_annotations(train + val + test, root)
        return _finish(data, root, train, val, test, desc)
    refs = list(open_dataset(root, format=data.format, **preprocess))
    if not refs:
        raise DataConfigError(f"data.root: no images found in {root}")
    by_id = {r.image_id: r for r in refs}

    def pick(ids: list[str], what: str) -> list[Any]:
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataConfigError(
                f"{what}: {len(missing)} image id(s) not in {root}, e.g. {missing[0]!r}"
            )
        return [by_id[i] for i in ids]

    desc: dict[str, Any] = {"root": str(root), "n_images": len(refs)}
    desc["annotations"] = report_annotations(refs, root)
    if data.train_ids is not None:
        train = pick(data.train_ids, "data.train_ids")
        val = pick(data.val_ids or [], "data.val_ids")
        test: list[Any] = []
        desc["split"] = "explicit ids"
    else:
        split_file = Path(data.splits) if data.splits else _find_splits_file(root)
        if split_file is not None:
            if not split_file.is_file():
                raise DataConfigError(f"data.splits: {split_file} does not exist")
            from napari_gravity.data.splits import load_splits

            tr, va, te = _split_ids(load_splits(split_file), data.fold)
            train, val, test = (
                pick(tr, str(split_file)),
                pick(va, str(split_file)),
                pick(te, str(split_file)),
            )
            desc["split"] = f"{split_file} fold {data.fold}"
        else:
            train, val = _patient_split(refs, data.val_fraction, seed)
            test = []
            desc["split"] = (
                f"patient-level random split, val_fraction {data.val_fraction}, seed {seed}"
            )
    return _finish(data, root, train, val, test, desc)


def report_annotations(refs: list[Any], root: Path) -> dict[str, Any]:
    """Count images, lesions and unmatched annotation files (``dataset_report``) and say it
    before training: "n images, m lesions, k annotation files unused" (a warning, with the
    files named, when something is unmatched). Returns the report as a dict."""
    from napari_gravity.data.datasets import dataset_report

    rep = dataset_report([r for r in refs if hasattr(r, "annotation")])
    main = int(os.environ.get("RANK", "0")) == 0
    if main:
        if rep.warnings:
            log.warning("data %s: %s", root, rep.summary())
            for w in rep.warnings[:10]:
                log.warning("  %s", w)
            if len(rep.warnings) > 10:
                log.warning(
                    "  ... and %d more (see the run's data description)", len(rep.warnings) - 10
                )
        else:
            log.info("data %s: %s", root, rep.summary())
    out = rep.to_dict()
    out["summary"] = rep.summary()
    out["warnings"] = out["warnings"][:50]
    out["unused_annotation_files"] = out["unused_annotation_files"][:50]
    return out


def _finish(
    data: DataConfig, root: Path, train: list, val: list, test: list, desc: dict[str, Any]
) -> DataSplit:
    if data.max_images is not None:
        train = train[: data.max_images]
        val = val[: data.max_images]
    if not train:
        raise DataConfigError(f"data: the training split of {root} is empty")
    if not val:
        log.warning("no validation images: validating on the training images")
        val = list(train)
        desc["val_is_train"] = True
    desc.update(n_train=len(train), n_val=len(val), n_test=len(test))
    return DataSplit(train, val, test, root, desc)


def _patient_split(refs: list[Any], val_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """Patient-level train/val split (no patient in both)."""
    patients = sorted({r.patient_id or r.image_id for r in refs})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(patients))
    n_val = max(1, round(val_fraction * len(patients))) if len(patients) > 1 else 0
    val_p = {patients[i] for i in order[:n_val]}
    train = [r for r in refs if (r.patient_id or r.image_id) not in val_p]
    val = [r for r in refs if (r.patient_id or r.image_id) in val_p]
    return train, val


# --------------------------------------------------------------------------- preparation


def prepare(
    ref: Any, normalization: str, use_masks: bool = True, keep_raw: bool = False
) -> Prepared:
    """Load a sample and normalise the whole image as the Predictor does."""
    from napari_gravity.core.normalize import normalize_image

    s: Sample = ref.load() if hasattr(ref, "load") else ref
    mask = s.mask if use_masks else None
    # the whole image, without the mask: exactly what the core Predictor does at inference
    img = normalize_image(s.image, normalization)
    return Prepared(
        image=img,
        points=np.asarray(s.points, dtype=np.float64).reshape(-1, 2),
        radii=np.asarray(s.radii, dtype=np.float64).reshape(-1),
        mask=None if mask is None else np.asarray(mask, dtype=bool),
        image_id=s.image_id or getattr(ref, "image_id", ""),
        patient_id=s.patient_id or getattr(ref, "patient_id", ""),
        raw=np.asarray(s.image) if keep_raw else None,
    )


# --------------------------------------------------------------------------- training tiles


def epoch_items(
    n_images: int, tiles_per_image: int, seed: int, epoch: int
) -> list[tuple[int, int]]:
    """The (image index, tile seed) items of one epoch, shuffled, the same on every rank."""
    rng = np.random.default_rng([seed, epoch, 7919])
    items = [
        (i, int(rng.integers(0, 2**31 - 1)))
        for i in range(n_images)
        for _ in range(tiles_per_image)
    ]
    order = rng.permutation(len(items))
    return [items[k] for k in order]


class TileDataset(torch.utils.data.Dataset):
    """Random tiles (with flips) of prepared images, indexed by ``(image index, tile seed)``
    items: the tile of an item is always the same (see :class:`EpochBatches`)."""

    def __init__(
        self,
        images: list[Prepared],
        tile_size: int,
        pos_fraction: float,
        flips: bool = True,
    ) -> None:
        self.images = images
        self.tile_size = int(tile_size)
        self.pos_fraction = float(pos_fraction)
        self.flips = flips

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        from napari_gravity.data.augment import flip_sample, random_tiles

        idx, seed = item
        rng = np.random.default_rng(seed)
        sample = self.images[idx].as_sample()
        # decide here whether this tile is lesion-centred (random_tiles rounds n * pos_fraction)
        pos = rng.random() < self.pos_fraction
        tile = random_tiles(sample, self.tile_size, 1, 1.0 if pos else 0.0, rng)[0]
        if self.flips:
            choice = int(rng.integers(0, 4))  # none, vertical, horizontal, both (paper's flips)
            axes = [(), (0,), (1,), (0, 1)][choice]
            if axes:
                tile = flip_sample(tile, axes)
        img = np.ascontiguousarray(tile.image, dtype=np.float32)
        h, w = img.shape
        if (h, w) != (self.tile_size, self.tile_size):  # image smaller than a tile: pad
            pad = np.zeros((self.tile_size, self.tile_size), np.float32)
            pad[:h, :w] = img
            img = pad
        pts = np.asarray(tile.points, dtype=np.float32).reshape(-1, 2)
        return torch.from_numpy(img)[None], torch.from_numpy(pts)


class EpochBatches(torch.utils.data.Sampler):
    """The batch sampler of a DataLoader built once per run: :meth:`set_items` gives it the
    items of the next epoch (or of its unseen rest, on resume).

    Global batch ``k`` is ``items[k*G:(k+1)*G]``; process ``rank`` of ``world`` takes every
    ``world``-th item of it from ``rank`` (what ``DistributedSampler(shuffle=False)`` + a
    batch of ``G / world`` did), so all processes together see each global batch once."""

    def __init__(self, global_batch: int, rank: int = 0, world: int = 1) -> None:
        if global_batch % world:
            raise ValueError(f"global batch {global_batch} not divisible by {world} processes")
        self.global_batch, self.rank, self.world = int(global_batch), int(rank), int(world)
        self.items: list[tuple[int, int]] = []

    def set_items(self, items: list[tuple[int, int]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items) // self.global_batch  # an incomplete last batch is dropped

    def __iter__(self):
        g = self.global_batch
        for k in range(len(self)):
            yield self.items[k * g : (k + 1) * g][self.rank :: self.world]


def collate(
    batch: list[tuple[torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    images = torch.stack([b[0] for b in batch])
    return images, [b[1] for b in batch]
