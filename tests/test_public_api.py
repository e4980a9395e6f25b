"""The notebook API re-exported from ``napari_gravity``: load_predictor, Predictor, GravityConfig,
froc_curve and the lazy train / fit wrappers."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

import napari_gravity as ng


@pytest.fixture(autouse=True)
def _one_thread():
    torch = pytest.importorskip("torch")
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _mammogram(seed: int = 3) -> np.ndarray:
    from napari_gravity.data.synthetic.diverse import diverse_mammogram

    return np.asarray(diverse_mammogram((128, 128), seed, has_lesions=True).image, np.float32)


def _fundus_crop() -> np.ndarray:
    from skimage import data

    return data.microaneurysms().astype(np.float32)


@pytest.mark.parametrize(
    ("name", "task", "image"),
    [
        ("default", "mc", _mammogram),
        ("default_mc", "mc", _mammogram),
        ("default_ma", "ma", _fundus_crop),
    ],
)
def test_load_predictor_equals_predictor_from_the_registry_file(name, task, image):
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.core.registry import default_model_path

    img = image()
    pred = ng.load_predictor(name, device="cpu")
    ref = Predictor.from_file(default_model_path(task), device="cpu", tta="auto")
    assert isinstance(pred, ng.Predictor)
    assert pred.config == ref.config and pred.tta == "auto"
    # 8 views where the bundled model is calibrated for them (MC); MA keeps one pass
    assert pred.tta_mode(img.shape) == ("d8" if task == "mc" else "off")
    # at the model's own operating threshold, and with everything above the cache floor (many
    # points, so the comparison is not between two empty sets)
    for thr in (None, ref.floor):
        got, want = pred.detect(img, threshold=thr), ref.detect(img, threshold=thr)
        np.testing.assert_array_equal(got.points, want.points)
        np.testing.assert_array_equal(got.scores, want.scores)
    assert len(ref.detect(img, threshold=ref.floor)) > 5


def test_load_predictor_accepts_a_path(tmp_path):
    from napari_gravity.core.registry import default_model_path

    path = default_model_path("ma")
    pred = ng.load_predictor(path, device="cpu")
    assert pred.config == ng.load_predictor("default_ma", device="cpu").config


@pytest.mark.parametrize("name", ["no_such_model", "default_xx", "missing/file.safetensors"])
def test_unknown_model_is_a_clear_error(name, tmp_path, monkeypatch):
    monkeypatch.setenv("GRAVITY_MODELS", str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown model .*'default', 'default_mc', 'default_ma'"):
        ng.load_predictor(name)


def test_reexports_are_the_real_objects():
    from napari_gravity.core.config import GravityConfig
    from napari_gravity.core.predictor import Predictor
    from napari_gravity.evaluation import froc_curve

    assert ng.Predictor is Predictor
    assert ng.GravityConfig is GravityConfig
    assert ng.froc_curve is froc_curve
    assert {"load_predictor", "Predictor", "GravityConfig", "froc_curve", "train", "fit"} <= set(
        ng.__all__
    )
    with pytest.raises(AttributeError):
        ng.no_such_name  # noqa: B018


def test_froc_curve_from_the_package_on_a_hand_example():
    # one image, two lesions (radius 2 -> match distance 4); a TP at 0.9, an FP at 0.8
    from napari_gravity.types import Detections, Sample

    sample = Sample(
        image=np.zeros((20, 20), np.float32),
        points=np.array([[5.0, 5.0], [15.0, 15.0]]),
        radii=np.array([2.0, 2.0]),
        image_id="a",
    )
    det = Detections(points=np.array([[5.0, 6.0], [10.0, 1.0]]), scores=np.array([0.9, 0.8]))
    res = ng.froc_curve({"a": det}, {"a": sample})
    # hand: origin, after 0.9 -> (FPpI 0, TPR 1/2), after 0.8 -> (1, 1/2)
    np.testing.assert_allclose(res.fppi, [0.0, 0.0, 1.0])
    np.testing.assert_allclose(res.tpr, [0.0, 0.5, 0.5])
    # AUFROC_10: flat at 1/2 from FPpI 0 to 10 -> 5 / 10
    assert res.aufroc(10.0) == pytest.approx(0.5)


def test_import_is_light():
    code = (
        "import sys, napari_gravity as ng; "
        "heavy = [m for m in ('torch', 'numpy', 'napari', 'qtpy', 'training') if m in sys.modules]; "
        "ng.GravityConfig; ng.froc_curve; "
        "after = [m for m in ('torch', 'napari', 'qtpy', 'training') if m in sys.modules]; "
        "print(heavy, after)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []"


def test_train_and_fit_forward_lazily(monkeypatch):
    calls = []
    fake = types.ModuleType("training.api")
    fake.train = lambda *a, **k: calls.append(("train", a, k)) or "trained"
    fake.fit = lambda *a, **k: calls.append(("fit", a, k)) or "fitted"
    monkeypatch.setitem(sys.modules, "training.api", fake)
    assert ng.train({"net": {}}, overrides=["train.lr=1e-3"], progress=False) == "trained"
    assert ng.fit("imgs", "pts", task="ma", epochs=2) == "fitted"
    assert calls == [
        ("train", ({"net": {}},), {"overrides": ["train.lr=1e-3"], "progress": False}),
        ("fit", ("imgs", "pts"), {"task": "ma", "epochs": 2}),
    ]


@pytest.mark.parametrize("fn", ["train", "fit"])
def test_train_and_fit_without_the_trainer_say_so(fn, monkeypatch):
    monkeypatch.setitem(sys.modules, "training.api", None)  # makes the import fail
    with pytest.raises(ImportError, match=rf"napari_gravity\.{fn} needs the trainer"):
        getattr(ng, fn)()


# --------------------------------------------------------------------------- one metadata reader


def test_metadata_reader_does_not_import_torch():
    from napari_gravity.core.registry import default_model_path

    code = (
        "import sys; from napari_gravity.core.model_io import read_model_metadata; "
        f"md = read_model_metadata({str(default_model_path('ma'))!r}); "
        "print(md['task'], 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["ma", "False"]


def test_strict_and_lenient_metadata_and_the_registry_alias(tmp_path):
    from safetensors.numpy import save_file

    from napari_gravity.core.model_io import ModelFileError, read_model_metadata
    from napari_gravity.core.registry import default_model_path, read_metadata

    # a safetensors file written by something else: JSON values decoded, plain strings kept
    foreign = tmp_path / "retina.safetensors"
    save_file(
        {"w": np.zeros(2, np.float32)}, str(foreign), metadata={"model": '"retinanet"', "x": "a b"}
    )
    with pytest.raises(ModelFileError, match="without napari-gravity metadata"):
        read_model_metadata(foreign)
    assert read_model_metadata(foreign, strict=False) == {"model": "retinanet", "x": "a b"}
    assert read_metadata(foreign) == {"model": "retinanet", "x": "a b"}
    # missing / not safetensors: strict names the file, lenient gives {}
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    for p in (tmp_path / "missing.safetensors", junk):
        with pytest.raises(ModelFileError, match=p.name):
            read_model_metadata(p)
        assert read_model_metadata(p, strict=False) == {} == read_metadata(p)
    # a real model: all three agree
    path = default_model_path("mc")
    assert (
        read_metadata(path) == read_model_metadata(path) == read_model_metadata(path, strict=False)
    )


# --------------------------------------------------------------------------- γ / NMS defaults


def test_postprocess_defaults():
    from napari_gravity.core.config import GravityConfig, postprocess_defaults

    # without a config: the paper's NMS (L = 7 for MCs, IoU 0.5) and GravityConfig's γ
    assert postprocess_defaults() == {
        "threshold": GravityConfig().threshold,
        "nms_box": 7.0,
        "nms_iou": 0.5,
    }
    cfg = GravityConfig(nms_box=3, nms_iou=0.3, threshold=0.2)
    assert postprocess_defaults(cfg) == {"threshold": 0.2, "nms_box": 3.0, "nms_iou": 0.3}
    # the model file's calibrated threshold wins when it is a usable number
    assert postprocess_defaults(cfg, {"threshold": 0.7})["threshold"] == 0.7
    for bad in (float("nan"), 1.5, -0.1, True, "0.4", None):
        assert postprocess_defaults(cfg, {"threshold": bad})["threshold"] == 0.2


@pytest.mark.parametrize("name", ["default_mc", "default_ma"])
def test_predictor_threshold_follows_the_one_rule(name):
    from napari_gravity.core.config import postprocess_defaults
    from napari_gravity.core.model_io import read_model_metadata
    from napari_gravity.core.registry import resolve_model

    pred = ng.load_predictor(name, device="cpu")
    md = read_model_metadata(resolve_model(name))
    want = postprocess_defaults(ng.GravityConfig.from_dict(md["config"]), md)
    got = {
        "threshold": pred.config.threshold,
        "nms_box": pred.config.nms_box,
        "nms_iou": pred.config.nms_iou,
    }
    assert got == want


def test_fit_reaches_the_real_trainer_api():
    pytest.importorskip("training.api")
    # the real training.api.fit validates its task before doing anything
    with pytest.raises(ValueError, match="fit: task must be one of"):
        ng.fit([np.zeros((8, 8), np.float32)], [np.zeros((0, 2))], task="xx")
