"""Fuzz suite (issue 13): hostile and broken inputs give a clear error or a correct result —
never a traceback, never more than 1 GB, never a silently lost label.

Everything is generated at test time (``corpus.py``, hypothesis). Decompression bombs run in a
subprocess under ``RLIMIT_AS`` = 1 GiB, so a reader that trusted a header would die there, not
the test machine. Budget: well under a minute on 2 cores.
"""

from __future__ import annotations

import io
import json
import math
import os
import plistlib
import subprocess
import sys
import textwrap
from pathlib import Path

import corpus
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_gravity.data.annotations import (
    AnnotationError,
    inbreast_calcifications,
    read_inbreast_xml,
    read_points_csv,
)
from napari_gravity.data.readers import ImageReadError, read_image
from napari_gravity.evaluation.io import (
    CSVFormatError,
    read_ground_truth_csv,
    read_predictions_csv,
)
from training.config import ConfigError, load_config, validate_config

GB = 1 << 30
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

# --------------------------------------------------------------------------- bombs (subprocess)
_READ_ALL = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from napari_gravity.data.readers import ImageReadError, read_image
for path in sys.argv[1:]:
    try:
        rec = read_image(path)
        print("READ", path, rec.image.shape, flush=True)
    except ImageReadError as exc:
        print("REFUSED", str(exc).replace("\\n", " "), flush=True)
# VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child forked from a large
# pytest process would report the parent's peak
peak = next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM")) / 1024
print("PEAK_MB", peak, flush=True)
"""


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bombs")
    return {
        "tiled_tiff": corpus.tiled_tiff_bomb(d / "tiled_100000.tif"),
        "tiff_header": corpus.tiff_header_only(d / "header_100000.tif"),
        "deflated_dicom": corpus.deflated_dicom_bomb(d / "deflated_24000.dcm"),
        "rle_dicom": corpus.rle_dicom_bomb(d / "rle_30000.dcm"),
        "png": corpus.png_bomb(d / "png_60000.png"),
        "jpeg": corpus.jpeg_header_bomb(d / "jpeg_65000.jpg"),
    }


def test_decompression_bombs_are_refused_under_1_gib(bombs, tmp_path):
    good = tmp_path / "good.png"
    import imageio.v3 as iio

    iio.imwrite(good, (np.arange(64 * 64) % 255).astype(np.uint8).reshape(64, 64))
    sizes = {k: p.stat().st_size for k, p in bombs.items()}
    assert max(sizes.values()) < 2_000_000  # small files ...
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRAVITY_MAX_PIXELS": ""}
    proc = subprocess.run(
        [sys.executable, "-c", _READ_ALL.format(limit=GB), *map(str, bombs.values()), str(good)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    refused = [ln for ln in lines if ln.startswith("REFUSED")]
    assert len(refused) == len(bombs)  # ... each refused, naming itself
    for path, line in zip(bombs.values(), refused, strict=True):
        assert str(path) in line and ("pixels" in line or "bytes" in line), line
    assert any(ln.startswith("READ") and "good.png" in ln for ln in lines)
    peak = float(next(ln for ln in lines if ln.startswith("PEAK_MB")).split()[1])
    assert peak < 1024, peak


def test_bombs_through_gravity_predict_stay_small(bombs, tmp_path):
    """The whole CLI over a folder of bombs + one good image: good one written, bombs reported,
    exit 1, and the peak memory no higher than for the good image alone (+ 250 MB)."""
    import tifffile
    import torch

    from napari_gravity.core import GravityConfig, GravityNet, save_model

    cfg = GravityConfig(backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=5)
    torch.manual_seed(0)
    model = save_model(tmp_path / "m.safetensors", GravityNet(cfg).eval(), cfg, {})
    folder = tmp_path / "in"
    folder.mkdir()
    for p in bombs.values():
        os.link(p, folder / p.name)
    tifffile.imwrite(folder / "good.tif", np.full((64, 64), 100, np.uint16))
    code = (
        "import resource, sys\n"
        "from training.cli import main\n"
        "rc = main(sys.argv[1:])\n"
        "hwm = next(ln for ln in open('/proc/self/status') if ln.startswith('VmHWM'))\n"
        "print('PEAK_MB', int(hwm.split()[1]) / 1024)\n"
        "sys.exit(rc)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRAVITY_NO_PROGRESS": "1"}

    def run(inputs, out):
        args = [
            "predict",
            model,
            *map(str, inputs),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--mask",
            "none",
        ]
        proc = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=240,
            env=env,
        )
        peak = float(proc.stdout.split("PEAK_MB")[1].split()[0])
        return proc, peak

    base, base_peak = run([folder / "good.tif"], tmp_path / "o1")
    assert base.returncode == 0, base.stderr[-2000:]
    proc, peak = run([folder], tmp_path / "o2")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["n_images"] == 1 and summary["n_failed"] == len(bombs)
    assert peak - base_peak < 250, (peak, base_peak)


# --------------------------------------------------------------------------- images (in-process)
def _valid_files(tmp: Path) -> dict[str, bytes]:
    import imageio.v3 as iio
    import tifffile

    from napari_gravity.data.synthetic.writers import write_dicom

    img = (np.arange(40 * 32) % 200).astype(np.uint16).reshape(40, 32)
    out = {}
    for name, write in (
        ("a.png", lambda p: iio.imwrite(p, img.astype(np.uint8))),
        ("a.jpg", lambda p: iio.imwrite(p, img.astype(np.uint8))),
        ("a.tif", lambda p: tifffile.imwrite(p, img, compression="zlib", tile=(16, 16))),
        ("a.dcm", lambda p: write_dicom(p, img)),
    ):
        write(tmp / name)
        out[name] = (tmp / name).read_bytes()
    return out


_last_ok = [False]
_DICOM_OUTCOMES: set[str] = set()


def _read_ok(path: Path) -> None:
    """read_image either refuses with ImageReadError naming the file or returns a valid image."""
    _last_ok[0] = False
    try:
        rec = read_image(path, max_pixels=2_000_000)
    except ImageReadError as exc:
        assert str(path) in str(exc) and len(str(exc)) < 2000
        return
    _last_ok[0] = True
    assert rec.image.dtype == np.float32 and rec.image.ndim == 2
    assert min(rec.image.shape) >= 4 and np.isfinite(rec.image).all()


@pytest.fixture(scope="module")
def valid_files(tmp_path_factory):
    return _valid_files(tmp_path_factory.mktemp("valid"))


@FUZZ
@given(data=st.data())
def test_truncated_and_bit_flipped_images(tmp_path, valid_files, data):
    name = data.draw(st.sampled_from(sorted(valid_files)))
    raw = bytearray(valid_files[name])
    mode = data.draw(st.sampled_from(["truncate", "flip", "overwrite"]))
    if mode == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        for _ in range(data.draw(st.integers(1, 8))):
            i = data.draw(st.integers(0, len(raw) - 1))
            raw[i] = data.draw(st.integers(0, 255)) if mode == "overwrite" else raw[i] ^ 0xFF
    p = tmp_path / f"fuzz_{name}"
    p.write_bytes(bytes(raw))
    _read_ok(p)


# --------------------------------------------------------------------------- CSVs
_csv_text = st.one_of(
    st.text(max_size=300),
    st.lists(
        st.lists(
            st.one_of(
                st.sampled_from(
                    [
                        "y",
                        "x",
                        "radius",
                        "image",
                        "score",
                        "status",
                        "nan",
                        "inf",
                        "-1",
                        "1e308",
                        "",
                        "3",
                        "rejected",
                        '"',
                        "\x00",
                    ]
                ),
                st.floats(allow_nan=True).map(str),
                st.text(max_size=5),
            ),
            max_size=6,
        ).map(",".join),
        max_size=8,
    ).map("\n".join),
)


@FUZZ
@given(text=_csv_text)
def test_csv_readers_never_traceback(tmp_path, text):
    p = tmp_path / "f.csv"
    p.write_text(text, encoding="utf-8", errors="surrogatepass") if False else p.write_bytes(
        text.encode("utf-8", "replace")
    )
    try:
        t = read_points_csv(p, (100, 100))
        assert np.isfinite(t.points).all() and (t.radii > 0).all()
    except AnnotationError as exc:
        assert str(p) in str(exc) and len(str(exc)) < 2000
    for reader in (read_ground_truth_csv, read_predictions_csv):
        try:
            out = reader(p)
            for v in out.values():
                pts = v[0] if isinstance(v, tuple) else v.points
                assert np.isfinite(pts).all()
        except CSVFormatError as exc:
            assert str(p) in str(exc) and len(str(exc)) < 2000


@FUZZ
@given(
    pts=st.lists(st.tuples(st.floats(0, 99), st.floats(0, 99)), min_size=1, max_size=20),
    data=st.data(),
)
def test_points_csv_never_loses_a_label(tmp_path, pts, data):
    """Every row written in any accepted variant (column order, case, extra columns, CRLF, BOM)
    comes back."""
    cols = data.draw(st.permutations(["y", "x", "radius", "note"]))
    cols = [c.upper() if data.draw(st.booleans()) else c for c in cols]
    nl = data.draw(st.sampled_from(["\n", "\r\n"]))
    bom = data.draw(st.sampled_from(["", "\ufeff"]))
    rows = []
    for y, x in pts:
        vals = {"y": f"{y:.4f}", "x": f"{x:.4f}", "radius": "2", "note": "a b"}
        rows.append(",".join(vals[c.lower()] for c in cols))
    p = tmp_path / "g.csv"
    p.write_bytes((bom + nl.join([",".join(cols), *rows]) + nl).encode("utf-8"))
    t = read_points_csv(p, (100, 100))
    np.testing.assert_allclose(t.points, np.round(np.asarray(pts), 4), atol=1e-4)


# --------------------------------------------------------------------------- INbreast XML
_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["(1, 2)", "(1.5, 2.5, 0)", "(x, y)", "Calcification"]),
)
_plist_value = st.recursive(
    _leaf.filter(lambda v: v is not None),
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "Images",
                    "ROIs",
                    "Name",
                    "Point_px",
                    "ImageIndex",
                    "NumberOfROIs",
                    "NumberOfPoints",
                    "x",
                ]
            ),
            kids,
            max_size=5,
        ),
    ),
    max_leaves=20,
)


@FUZZ
@given(value=_plist_value)
def test_hostile_inbreast_xml_never_tracebacks(tmp_path, value):
    p = tmp_path / "h.xml"
    try:
        p.write_bytes(plistlib.dumps({"Images": value} if not isinstance(value, dict) else value))
    except (TypeError, OverflowError, ValueError):
        return  # not representable as a plist
    try:
        rois = read_inbreast_xml(p)
    except AnnotationError as exc:
        assert str(p) in str(exc) and len(str(exc)) < 2000
        return
    for r in rois:
        assert np.isfinite(r.centre).all() and r.radius > 0


@FUZZ
@given(
    images=st.lists(
        st.lists(st.tuples(st.floats(0, 4000), st.floats(0, 4000), st.booleans()), max_size=6),
        min_size=1,
        max_size=3,
    ),
    style=st.sampled_from(["array", "string", "xyz"]),
)
def test_inbreast_xml_never_loses_a_calcification(tmp_path, images, style):
    """Hand-made plists in the real format's variants: every calcification comes back."""
    entries = []
    n_calc = 0
    for idx, rois in enumerate(images):
        roi_dicts = []
        for x, y, calc in rois:
            pt = f"({x:.6f}, {y:.6f}, 0.000000)" if style == "xyz" else f"({x:.6f}, {y:.6f})"
            roi_dicts.append(
                {
                    "Name": "Calcification" if calc else "Mass",
                    "NumberOfPoints": 1,
                    "Point_px": pt if style == "string" else [pt],
                }
            )
            n_calc += calc
        entries.append({"ImageIndex": idx, "NumberOfROIs": len(roi_dicts), "ROIs": roi_dicts})
    p = tmp_path / "v.xml"
    p.write_bytes(plistlib.dumps({"Images": entries}))
    pts, _, _ = inbreast_calcifications(read_inbreast_xml(p))
    assert len(pts) == n_calc


# --------------------------------------------------------------------------- YAML configs
_yaml_value = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=10)
    ),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=10,
)
_sections = {
    "data": ["root", "tile_size", "train_ids", "val_fraction", "format"],
    "train": ["lr", "epochs", "batch_size", "grad_clip", "amp"],
    "eval": ["max_fppi", "min_score"],
    "net": ["backbone", "step", "stride", "head_channels", "threshold", "nms_box"],
}


@FUZZ
@given(data=st.data())
def test_hostile_configs_give_config_errors(tmp_path, data):
    raw = data.draw(
        st.one_of(
            _yaml_value,
            st.fixed_dictionaries(
                {
                    s: st.dictionaries(st.sampled_from(keys), _yaml_value, max_size=3)
                    for s, keys in _sections.items()
                }
            ),
        )
    )
    p = tmp_path / "c.yaml"
    try:
        p.write_text(yaml.safe_dump(raw))
    except (yaml.YAMLError, UnicodeEncodeError):
        return
    sets = data.draw(
        st.lists(
            st.sampled_from(
                [
                    "train.lr=nan",
                    "data.train_ids=[1, 2]",
                    "net.step=1e9",
                    "x=1",
                    "data.root=/nope",
                    "train=3",
                    "train.lr.x=1",
                ]
            ),
            max_size=2,
        )
    )
    try:
        cfg = load_config(p, sets)
    except ConfigError as exc:
        assert str(p) in str(exc) or "--set" in str(exc)
        assert len(str(exc)) < 1000
        return
    for section in (cfg.train, cfg.eval):
        for v in section.model_dump().values():
            assert not (isinstance(v, float) and not math.isfinite(v))


@FUZZ
@given(text=st.text(alphabet="ab:-[]{}&*!|>'\"#\n \t1.", max_size=200))
def test_random_yaml_text(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    try:
        load_config(p)
    except ConfigError as exc:
        assert str(p) in str(exc) and len(str(exc)) < 1000


def test_yaml_alias_bomb_in_a_subprocess_stays_small(tmp_path):
    levels = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    levels += [f"&a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    p = tmp_path / "bomb.yaml"
    p.write_text(f"data: {{root: {tmp_path}}}\ndescription: [{', '.join(levels)}]\n")
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({GB}, {GB}))
        from training.config import ConfigError, load_config
        try:
            load_config({str(p)!r})
        except ConfigError as exc:
            print("REFUSED", exc)
    """)
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0 and proc.stdout.startswith("REFUSED"), proc.stderr[-2000:]
    assert "aliases" in proc.stdout and len(proc.stdout) < 1000


def test_validate_config_handles_every_top_level_type():
    for raw in ([1, 2], "text", 3, 2.5, True, {"data": [1]}, {"train": "fast"}, {1: 2}):
        with pytest.raises(ConfigError):
            validate_config(raw, source="x.yaml")
    assert isinstance(io.StringIO, type)


def test_the_bomb_builders_make_real_files(tmp_path):
    """Small versions of the bombs decode to what they claim: the big ones are genuine
    decompression bombs, not merely corrupt files."""
    rec = read_image(corpus.tiled_tiff_bomb(tmp_path / "t.tif", side=600))
    assert rec.image.shape == (600, 600) and not rec.image.any()
    rec = read_image(corpus.deflated_dicom_bomb(tmp_path / "d.dcm", side=300))
    assert rec.image.shape == (300, 300) and not rec.image.any()
    rec = read_image(corpus.png_bomb(tmp_path / "p.png", side=500))
    assert rec.image.shape == (500, 500) and not rec.image.any()


@pytest.mark.parametrize(
    "content",
    [
        b'y,x\n"' + b"9" * 200_000 + b'",1\n',  # over the csv module's field limit
        b"y,x\n1,\x002\n",
        b"\xef\xbb\xbf",
        b"y,x,y\n1,2,3\n",
        b"image,y,x,radius\n" + b"a,1,1,1\n" * 3 + b"a," + b"1" * 5000 + b",1,1\n",
    ],
)
def test_hostile_csvs(tmp_path, content):
    p = tmp_path / "h.csv"
    p.write_bytes(content)
    for reader, err in (
        (read_points_csv, AnnotationError),
        (read_ground_truth_csv, CSVFormatError),
        (read_predictions_csv, CSVFormatError),
    ):
        try:
            reader(p)
        except err as exc:
            assert str(p) in str(exc) and len(str(exc)) < 1000, str(exc)[:300]


def test_images_just_under_the_cap_read_under_1_gib(tmp_path):
    """Genuine images at the default cap (7745² ≈ 60 M px, DICOM 16-bit Deflated, tiled TIFF, PNG)
    decode within RLIMIT_AS = 1 GiB: the cap and the readers' copies fit together."""
    from napari_gravity.data.readers import DEFAULT_MAX_PIXELS

    side = int(DEFAULT_MAX_PIXELS**0.5)
    files = [
        corpus.deflated_dicom_bomb(tmp_path / "cap.dcm", side=side),
        corpus.tiled_tiff_bomb(tmp_path / "cap.tif", side=side),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRAVITY_MAX_PIXELS": ""}
    for f in files:  # one process each: the peak is per file
        proc = subprocess.run(
            [sys.executable, "-c", _READ_ALL.format(limit=GB), str(f)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"READ {f} ({side}, {side})" in proc.stdout, proc.stdout


# --------------------------------------------------------------------------- DICOM headers
@settings(FUZZ, max_examples=150)
@given(
    rows=st.sampled_from([0, 1, 3, 8, 16, 40, 65535, 24000]),
    cols=st.sampled_from([0, 1, 8, 16, 32, 65535]),
    extra=st.fixed_dictionaries(
        {},
        optional={
            "BitsAllocated": st.sampled_from([0, 1, 8, 12, 16, 32, 64]),
            "BitsStored": st.sampled_from([0, 1, 8, 12, 16, 40]),
            "SamplesPerPixel": st.sampled_from([0, 1, 2, 3, 4, 5]),
            "PixelRepresentation": st.sampled_from([0, 1, 2]),
            "PhotometricInterpretation": st.sampled_from(
                ["MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "XYZ", ""]
            ),
            "NumberOfFrames": st.sampled_from(["1", "2", "0", "-1", "999999999"]),
            "RescaleSlope": st.sampled_from(["0", "1", "2.5", "-1", "1e308", "NaN"]),
            "RescaleIntercept": st.sampled_from(["0", "-1024", "1e308", "inf"]),
            "PixelSpacing": st.sampled_from([["0.1", "0.1"], ["0", "-1"], ["1"]]),
            "PlanarConfiguration": st.sampled_from([0, 1, 7]),
        },
    ),
    n_bytes=st.sampled_from([None, None, None, 0, 1, 7, 64, 2048]),  # None: the right size
    ts=st.sampled_from(["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99"]),
)
def test_hostile_dicom_headers(tmp_path, rows, cols, extra, n_bytes, ts):
    import struct
    import warnings
    import zlib

    try:
        head, body = corpus._dicom_prefix(rows, cols, ts, **extra)
    except Exception:
        return  # pydicom refuses to write such a value at all
    if n_bytes is None:  # what a 16-bit image of that size needs (when small enough)
        n_bytes = rows * cols * 2 if rows * cols * 2 <= 1 << 20 else 64
    pixels = (np.arange(n_bytes + n_bytes % 2) * 37 % 256).astype(np.uint8).tobytes()
    data = body + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, len(pixels)) + pixels
    if ts.endswith(".99"):  # Deflated: the whole dataset is deflated
        comp = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = comp.compress(data) + comp.flush()
    p = tmp_path / "h.dcm"
    p.write_bytes(head + data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _read_ok(p)
    _DICOM_OUTCOMES.add("read" if _last_ok[0] else "refused")


# --------------------------------------------------------------------------- end to end labels
@settings(FUZZ, max_examples=25)
@given(
    pts=st.lists(st.tuples(st.floats(0, 47), st.floats(0, 39), st.floats(0.5, 6)), max_size=12),
    status=st.lists(st.sampled_from(["", "accepted", "rejected", "pending", "new"]), max_size=12),
)
def test_folder_dataset_keeps_every_lesion(tmp_path, pts, status):
    """Every CSV row that is a lesion reaches the training Sample, and the report counts it."""
    import tifffile

    from napari_gravity.data.datasets import dataset_report, open_dataset

    root = tmp_path / "ds"
    root.mkdir(exist_ok=True)
    for old in root.iterdir():
        old.unlink()
    tifffile.imwrite(root / "im.tif", np.full((48, 40), 5, np.uint16))
    st_col = (status + [""] * len(pts))[: len(pts)]
    lines = ["y,x,radius,status"] + [
        f"{y},{x},{r},{s}" for (y, x, r), s in zip(pts, st_col, strict=True)
    ]
    (root / "im.csv").write_text("\n".join(lines) + "\n")
    refs = open_dataset(root)
    n = sum(s not in ("rejected", "pending") for s in st_col)
    assert len(refs[0].load().points) == n
    assert dataset_report(refs).n_lesions == n


@settings(FUZZ, max_examples=20)
@given(
    calcs=st.lists(st.tuples(st.floats(1, 38), st.floats(1, 46)), max_size=8),  # (x, y)
    style=st.sampled_from(["(x, y)", "(x, y, z)", "single"]),
)
def test_inbreast_dataset_keeps_every_calcification(tmp_path, calcs, style):
    from napari_gravity.data.datasets import dataset_report, open_dataset
    from napari_gravity.data.synthetic.writers import write_dicom

    root = tmp_path / "inb"
    (root / "AllDICOMs").mkdir(parents=True, exist_ok=True)
    (root / "AllXML").mkdir(exist_ok=True)
    img = np.full((48, 40), 100, np.uint16)
    img[:, :20] = 3000
    write_dicom(root / "AllDICOMs" / "20586908_6c613a14b80a8591_MG_L_CC_ANON.dcm", img)
    rois = []
    for x, y in calcs:
        pt = f"({x:.6f}, {y:.6f}, 0.000000)" if style == "(x, y, z)" else f"({x:.6f}, {y:.6f})"
        px = (
            f"<string>{pt}</string>"
            if style == "single"
            else f"<array><string>{pt}</string></array>"
        )
        rois.append(
            "<dict><key>Name</key><string>Calcification</string><key>NumberOfPoints</key>"
            f"<integer>1</integer><key>Point_px</key>{px}</dict>"
        )
    xml = (
        '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict><key>Images</key>'
        "<array><dict><key>ImageIndex</key><integer>0</integer><key>NumberOfROIs</key>"
        f"<integer>{len(rois)}</integer><key>ROIs</key><array>{''.join(rois)}</array></dict>"
        "</array></dict></plist>"
    )
    (root / "AllXML" / "20586908.xml").write_text(xml)
    refs = open_dataset(root, crop=None, max_radius=None, mask=False, orient=None)
    assert len(refs[0].load().points) == len(calcs)
    rep = dataset_report(refs)
    assert rep.n_lesions == len(calcs) and not rep.unused
