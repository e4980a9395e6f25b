"""Deterministic patient-level k-fold splits with a validation subset (JSON on disk).

File format (``version`` 1)::

    {"version": 1, "seed": 0, "k": 2, "val_fraction": 0.2,
     "patients": {"<image_id>": "<patient_id>", ...},
     "folds": [{"train": [...image ids], "val": [...], "test": [...]}, ...]}

A benchmark written by :func:`napari_gravity.data.synthetic.make_benchmark` holds one fold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_gravity.fileio import atomic_write_text


class SplitError(ValueError):
    """An invalid split request or split file (names the file when there is one)."""


@dataclass
class Fold:
    train: list[str]
    val: list[str]
    test: list[str]


@dataclass
class Splits:
    folds: list[Fold]
    patients: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    k: int = 0
    val_fraction: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "version": 1,
            "seed": self.seed,
            "k": self.k or len(self.folds),
            "val_fraction": self.val_fraction,
            "patients": dict(self.patients),
            "folds": [{"train": f.train, "val": f.val, "test": f.test} for f in self.folds],
            **self.extra,
        }


def _patients_of(items) -> dict[str, str]:
    """image id → patient id from a mapping, (image, patient) pairs or SampleRef-like objects."""
    if isinstance(items, Mapping):
        return {str(k): str(v) for k, v in items.items()}
    out = {}
    for it in items:
        if isinstance(it, tuple):
            iid, pid = it
        else:
            iid, pid = it.image_id, it.patient_id
        iid, pid = str(iid), str(pid or iid)
        if iid in out:
            raise SplitError(f"image id {iid!r} appears twice")
        out[iid] = pid
    return out


def kfold_patients(
    items: Mapping[str, str] | Iterable,
    k: int = 2,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> Splits:
    """Patient-level k-fold: every patient's images land in one test fold; within each fold's
    training part, a ``val_fraction`` of the patients (at least one when there are two or more)
    forms the validation subset. Deterministic for a given seed and set of images.

    Patients are shuffled then dealt to folds greedily by image count (largest first) so the
    folds hold similar numbers of images.
    """
    patients = _patients_of(items)
    if k < 2:
        raise SplitError(f"k must be at least 2, got {k}")
    if not 0 <= val_fraction < 1:
        raise SplitError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_patient: dict[str, list[str]] = {}
    for iid in sorted(patients):
        by_patient.setdefault(patients[iid], []).append(iid)
    pids = sorted(by_patient)
    if len(pids) < k:
        raise SplitError(f"{len(pids)} patients cannot fill {k} folds")
    rng = np.random.default_rng(seed)
    order = [pids[i] for i in rng.permutation(len(pids))]
    order.sort(key=lambda p: -len(by_patient[p]))  # stable: ties keep the shuffled order
    fold_pids: list[list[str]] = [[] for _ in range(k)]
    load = np.zeros(k, dtype=int)
    for pid in order:
        j = int(np.argmin(load))
        fold_pids[j].append(pid)
        load[j] += len(by_patient[pid])
    folds = []
    for j in range(k):
        test_p = sorted(fold_pids[j])
        rest = sorted(p for i, fp in enumerate(fold_pids) if i != j for p in fp)
        n_val = round(val_fraction * len(rest))
        if val_fraction > 0 and n_val == 0 and len(rest) >= 2:
            n_val = 1
        perm = np.random.default_rng([seed, j]).permutation(len(rest))
        val_p = sorted(rest[i] for i in perm[:n_val])
        train_p = sorted(set(rest) - set(val_p))

        def imgs(ps: list[str]) -> list[str]:
            return sorted(i for p in ps for i in by_patient[p])

        folds.append(Fold(imgs(train_p), imgs(val_p), imgs(test_p)))
    return Splits(folds, patients, seed, k, val_fraction)


def check_splits(splits: Splits) -> None:
    """Raise :class:`SplitError` if a patient or an image appears in two parts of a fold."""
    for j, f in enumerate(splits.folds):
        parts = {"train": f.train, "val": f.val, "test": f.test}
        seen_img: dict[str, str] = {}
        seen_pat: dict[str, str] = {}
        for name, ids in parts.items():
            for iid in ids:
                if iid in seen_img:
                    raise SplitError(f"fold {j}: image {iid!r} in both {seen_img[iid]} and {name}")
                seen_img[iid] = name
                pid = splits.patients.get(iid, iid)
                if pid in seen_pat and seen_pat[pid] != name:
                    raise SplitError(
                        f"fold {j}: patient {pid!r} in both {seen_pat[pid]} and {name}"
                    )
                seen_pat[pid] = name


def save_splits(path: str | os.PathLike, splits: Splits) -> Path:
    """Write the splits JSON atomically."""
    return atomic_write_text(path, json.dumps(splits.to_dict(), indent=1) + "\n")


def load_splits(path: str | os.PathLike) -> Splits:
    """Read a splits JSON written by :func:`save_splits` (validated: no patient in two parts)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SplitError(f"{p}: no such splits file") from None
    except json.JSONDecodeError as exc:
        raise SplitError(f"{p}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(d, dict) or "folds" not in d:
        raise SplitError(f"{p}: missing the 'folds' key")
    if d.get("version", 1) != 1:
        raise SplitError(f"{p}: unsupported splits version {d.get('version')}")
    try:
        folds = [
            Fold(list(f["train"]), list(f.get("val", [])), list(f["test"])) for f in d["folds"]
        ]
    except (KeyError, TypeError) as exc:
        raise SplitError(f"{p}: each fold needs 'train' and 'test' lists ({exc})") from None
    known = {"version", "seed", "k", "val_fraction", "patients", "folds"}
    s = Splits(
        folds,
        {str(a): str(b) for a, b in (d.get("patients") or {}).items()},
        d.get("seed"),
        int(d.get("k") or len(folds)),
        float(d.get("val_fraction") or 0.0),
        {k: v for k, v in d.items() if k not in known},
    )
    try:
        check_splits(s)
    except SplitError as exc:
        raise SplitError(f"{p}: {exc}") from None
    return s
