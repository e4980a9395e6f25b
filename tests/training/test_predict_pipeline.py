"""`gravity predict` as a pipeline (issue 10): reader workers, streamed CSV + journal with
--resume, and torchrun sharding merged by rank 0.

The expected predictions come from a second method: the core API (`Predictor.detect` on
`read_image`, written with `write_predictions_csv`), image by image in this process."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_gravity.core import GravityConfig, GravityNet, save_model
from napari_gravity.core.predictor import Predictor
from napari_gravity.data.readers import read_image
from napari_gravity.evaluation.io import read_predictions_csv, write_predictions_csv
from training import predict_cli
from training.cli import main

ROOT = Path(__file__).resolve().parents[2]
CFG = GravityConfig(backbone="resnet18", step=4, stride=8, head_channels=32, nms_box=5)
SHAPES = {"a": (40, 48), "b": (40, 48), "c": (36, 44), "d": (40, 48), "e": (40, 48)}


class _Crash(BaseException):
    """Stands for a hard kill: nothing in the command catches it."""


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    save_model(path, GravityNet(CFG).eval(), CFG, {"threshold": 0.5})
    return path


def _images(folder: Path, names=tuple(SHAPES), broken: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        rng = np.random.default_rng(k)
        tifffile.imwrite(
            folder / f"{name}.tif", rng.integers(0, 4000, SHAPES[name]).astype(np.uint16)
        )
    if broken:
        (folder / "broken.tif").write_bytes(b"II*\x00" + bytes(20))  # truncated TIFF
    return folder


def _reference(model_file, folder: Path, threshold: float, tmp: Path) -> str:
    """predictions.csv as the core API gives it, image by image (sorted file names)."""
    pred = Predictor.from_file(model_file, device="cpu")
    preds = {}
    for p in sorted(folder.glob("*.tif")):
        if p.name != "broken.tif":
            preds[p.stem] = pred.detect(read_image(p).image, threshold=threshold)
    return write_predictions_csv(tmp / "reference.csv", preds).read_text()


def _count_detections(monkeypatch) -> list:
    """The shapes of the images ``Predictor.detect`` runs on from now on."""
    detected = []
    real_detect = Predictor.detect

    def counting(self, image, *a, **k):
        detected.append(image.shape)
        return real_detect(self, image, *a, **k)

    monkeypatch.setattr(Predictor, "detect", counting)
    return detected


def _args(model, folder, out, *extra, threshold="0.0"):
    return [
        "predict",
        str(model),
        str(folder),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--no-progress",
        "--mask",
        "none",
        "--threshold",
        threshold,
        *extra,
    ]


def _rows(out: Path) -> list[dict]:
    s = json.loads((out / "summary.json").read_text())
    return [{k: v for k, v in r.items() if k != "seconds"} for r in s["images"]]


def _no_state_left(out: Path) -> bool:
    names = {p.name for p in out.iterdir()}
    return not any(n.startswith(("predict_state", "predictions.rank")) for n in names)


def test_workers_give_the_api_predictions_and_keep_failures(tmp_path, model_file, capsys):
    folder = _images(tmp_path / "in", broken=True)
    ref = _reference(model_file, folder, 0.0, tmp_path)
    assert ref.count("\n") > 2 * len(SHAPES)  # threshold 0: several detections per image
    out0, out2 = tmp_path / "w0", tmp_path / "w2"
    assert main(_args(model_file, folder, out0, "--workers", "0")) == 1  # broken.tif fails
    assert main(_args(model_file, folder, out2, "--workers", "2")) == 1
    err = capsys.readouterr().err
    assert err.count(f"skipped {folder / 'broken.tif'}") == 2 and "Traceback" not in err
    for out in (out0, out2):
        assert (out / "predictions.csv").read_text() == ref
        s = json.loads((out / "summary.json").read_text())
        assert [f["image"] for f in s["failed"]] == ["broken"] and s["n_images"] == len(SHAPES)
        assert _no_state_left(out)
    assert _rows(out0) == _rows(out2)
    assert [r["image"] for r in _rows(out2)] == sorted(SHAPES)
    assert json.loads((out2 / "summary.json").read_text())["pipeline"]["workers"] == 2


def test_batches_with_workers_match_single_images(tmp_path, model_file):
    """Consecutive same-size images share a forward pass (a, b | c | d, e): the detections are
    those of one image at a time, to float tolerance."""
    folder = _images(tmp_path / "in")
    out = tmp_path / "out"
    assert main(_args(model_file, folder, out, "--workers", "2", "--batch-size", "4")) == 0
    got = read_predictions_csv(out / "predictions.csv")
    pred = Predictor.from_file(model_file, device="cpu")
    assert list(got) == sorted(SHAPES)
    for name in SHAPES:
        det = pred.detect(read_image(folder / f"{name}.tif").image, threshold=0.0)
        assert len(got[name]) == len(det) > 0
        np.testing.assert_allclose(got[name].points, det.points, atol=2e-3)
        np.testing.assert_allclose(got[name].scores, det.scores, rtol=1e-4, atol=1e-6)


def test_a_crash_leaves_a_valid_csv_and_resume_finishes(tmp_path, model_file, monkeypatch, capsys):
    folder = _images(tmp_path / "in")
    ref = _reference(model_file, folder, 0.0, tmp_path)
    out = tmp_path / "out"
    real_image = predict_cli._Stream.image
    calls = []

    def crashing(self, iid, det, row):
        calls.append(iid)
        if len(calls) < 3:
            return real_image(self, iid, det, row)
        # image 3: the journal line is written, the process dies before its CSV rows
        lines = predict_cli._csv_lines(iid, det)
        line = predict_cli._jline({"kind": "image", **row, "lines": lines})
        predict_cli._write_all(self._journal, line)
        raise _Crash

    monkeypatch.setattr(predict_cli._Stream, "image", crashing)
    with pytest.raises(_Crash):
        main(_args(model_file, folder, out, "--workers", "1"))
    monkeypatch.setattr(predict_cli._Stream, "image", real_image)
    # what a crash leaves: a readable CSV of the first two images, no summary yet
    assert list(read_predictions_csv(out / "predictions.csv")) == ["a", "b"]
    assert not (out / "summary.json").exists()
    # a power loss tore the next journal line: that image is not taken as done
    with open(out / "predict_state.jsonl", "a") as fh:
        fh.write('{"kind":"image","image":"d","detections":3,"lin')
    # other settings are refused
    capsys.readouterr()
    assert main(_args(model_file, folder, out, "--resume", threshold="0.5")) == 1
    err = capsys.readouterr().err
    assert "--resume" in err and "other settings" in err and "threshold" in err
    detected = _count_detections(monkeypatch)
    assert main(_args(model_file, folder, out, "--resume", "--workers", "1")) == 0
    assert len(detected) == 2  # d and e; a, b and c (journalled) are kept
    assert (out / "predictions.csv").read_text() == ref
    s = json.loads((out / "summary.json").read_text())
    assert [r["image"] for r in s["images"]] == sorted(SHAPES) and s["n_failed"] == 0
    assert s["pipeline"]["resumed_images"] == 3 and _no_state_left(out)


def test_resume_of_a_finished_run_predicts_only_new_images(tmp_path, model_file, monkeypatch):
    folder = _images(tmp_path / "in", names=("a", "b", "c"))
    out = tmp_path / "out"
    # threshold 1: no detection at all, each image is one 'image,,,' row
    assert main(_args(model_file, folder, out, threshold="1.0")) == 0
    assert (out / "predictions.csv").read_text() == "image,y,x,score\na,,,\nb,,,\nc,,,\n"
    _images(folder, names=("d",))
    detected = _count_detections(monkeypatch)
    assert main(_args(model_file, folder, out, "--resume", threshold="1.0")) == 0
    assert detected == [SHAPES["d"]]
    assert (out / "predictions.csv").read_text() == "image,y,x,score\na,,,\nb,,,\nc,,,\nd,,,\n"
    s = json.loads((out / "summary.json").read_text())
    assert [r["image"] for r in s["images"]] == ["a", "b", "c", "d"]
    assert s["pipeline"]["resumed_images"] == 3


def test_a_dying_reader_process_is_survived(tmp_path, model_file, monkeypatch, capsys):
    """A reader worker killed mid-run (a decoder crash): the run goes on in this process."""
    from torch.utils.data import get_worker_info

    import napari_gravity.data.readers as readers

    folder = _images(tmp_path / "in")
    ref = _reference(model_file, folder, 0.0, tmp_path)
    real_read = readers.read_image

    def dying(path, *a, **k):
        if get_worker_info() is not None and Path(path).name == "c.tif":
            os._exit(7)
        return real_read(path, *a, **k)

    monkeypatch.setattr(readers, "read_image", dying)
    out = tmp_path / "out"
    assert main(_args(model_file, folder, out, "--workers", "1")) == 0
    assert "a reader process died" in capsys.readouterr().err
    assert (out / "predictions.csv").read_text() == ref
    assert _no_state_left(out)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRAVITY_NO_PROGRESS": "1"}
    for k in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        env.pop(k, None)
    return env


def _torchrun(argv: list[str], n: int = 2) -> list[tuple[int, str]]:
    """``gravity ARGV`` in N processes as torchrun starts them (RANK / WORLD_SIZE / MASTER_*,
    gloo on the CPU): [(exit status, stderr)] per rank."""
    port = str(_free_port())
    procs = []
    for rank in range(n):
        env = {
            **_env(),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(n),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "training", *argv],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outs = [p.communicate(timeout=240) for p in procs]
    return [(p.returncode, err) for p, (_, err) in zip(procs, outs, strict=True)]


def _close_to_api(csv_path: Path, model_file, folder: Path, threshold: float) -> None:
    got = read_predictions_csv(csv_path)
    pred = Predictor.from_file(model_file, device="cpu")
    names = sorted(p.stem for p in folder.glob("*.tif") if p.name != "broken.tif")
    assert list(got) == names
    for name in names:
        det = pred.detect(read_image(folder / f"{name}.tif").image, threshold=threshold)
        assert len(got[name]) == len(det) > 0
        np.testing.assert_allclose(got[name].points, det.points, atol=2e-3)
        np.testing.assert_allclose(got[name].scores, det.scores, rtol=1e-4, atol=1e-6)


def test_torchrun_shards_merge_into_the_single_process_csv(tmp_path, model_file):
    """Two ranks, each a shard, merged by rank 0 = one process over the same folder (both in
    subprocesses with one thread, so the float work is the same)."""
    folder = _images(tmp_path / "in", broken=True)
    merged, one = tmp_path / "ddp", tmp_path / "single"
    single = subprocess.run(
        [sys.executable, "-m", "training", *_args(model_file, folder, one, "--workers", "0")],
        env=_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert single.returncode == 1, single.stderr[-2000:]  # broken.tif
    ranks = _torchrun(_args(model_file, folder, merged, "--workers", "0"))
    for rc, err in ranks:
        assert rc == 1, err[-2000:]  # every rank reports the run's status
    text = (merged / "predictions.csv").read_text()
    assert text == (one / "predictions.csv").read_text()
    _close_to_api(merged / "predictions.csv", model_file, folder, 0.0)
    assert _rows(merged) == _rows(one)
    s = json.loads((merged / "summary.json").read_text())
    assert s["pipeline"]["world_size"] == 2 and [f["image"] for f in s["failed"]] == ["broken"]
    assert _no_state_left(merged)
    # each rank predicted its own shard: broken.tif (index 2 of a, b, broken, c, d, e) was rank 0's
    assert "skipped" in ranks[0][1] and "skipped" not in ranks[1][1]
    with (merged / "predictions.csv").open() as fh:
        assert {r["image"] for r in csv.DictReader(fh)} == set(SHAPES)


def test_torchrun_resumes_a_crashed_single_process_run(tmp_path, model_file, monkeypatch):
    """A single process crashes after three images; two ranks --resume: rank 0 consolidates,
    the ranks share the two images left, the merge holds all five."""
    folder = _images(tmp_path / "in")
    out = tmp_path / "out"
    real_image = predict_cli._Stream.image
    calls = []

    def crashing(self, iid, det, row):
        calls.append(iid)
        real_image(self, iid, det, row)
        if len(calls) == 3:
            raise _Crash

    monkeypatch.setattr(predict_cli._Stream, "image", crashing)
    with pytest.raises(_Crash):
        main(_args(model_file, folder, out, "--workers", "0"))
    assert list(read_predictions_csv(out / "predictions.csv")) == ["a", "b", "c"]
    ranks = _torchrun(_args(model_file, folder, out, "--workers", "0", "--resume"))
    for rc, err in ranks:
        assert rc == 0 and "3 image(s) already done" in err, err[-2000:]
    _close_to_api(out / "predictions.csv", model_file, folder, 0.0)
    s = json.loads((out / "summary.json").read_text())
    assert [r["image"] for r in s["images"]] == sorted(SHAPES) and s["n_failed"] == 0
    assert s["pipeline"] == {"workers": 0, "world_size": 2, "resumed_images": 3}
    assert _no_state_left(out)


def test_unpicklable_inputs_are_read_here_when_workers_are_spawned(tmp_path, monkeypatch, capsys):
    """Spawned workers (macOS, Windows) get the data set pickled; a data set's SampleRef (a
    closure) cannot be, so those inputs are read in this process instead of failing."""
    from napari_gravity.types import Sample

    img = np.arange(12, dtype=np.float32).reshape(3, 4)

    class Ref:  # a local class with a closure: not picklable, like SampleRef
        path = tmp_path / "x.tif"

        def __init__(self):
            self.load = lambda: Sample(image=img)

    monkeypatch.setattr(predict_cli, "_start_method", lambda: "spawn")
    files = predict_cli.ImageInputs([tmp_path / "a.tif"], ["a"])
    assert predict_cli._can_share(files)  # plain paths pickle
    refs = predict_cli.ImageInputs([Ref(), Ref()], ["x", "y"], mask_mode="none")
    assert not predict_cli._can_share(refs)
    got = list(predict_cli.iter_inputs(refs, [1, 0], workers=2))
    assert [(r.index, r.image_id, r.error) for r in got] == [(1, "y", None), (0, "x", None)]
    assert np.array_equal(got[0].image, img) and got[0].mask is None
    assert "reading them in this process" in capsys.readouterr().err


def test_resume_over_damaged_state_predicts_again_without_a_traceback(tmp_path, model_file, capsys):
    folder = _images(tmp_path / "in", names=("a", "b", "c"))
    out = tmp_path / "out"
    assert main(_args(model_file, folder, out, threshold="1.0")) == 0
    first = (out / "predictions.csv").read_text()
    s = json.loads((out / "summary.json").read_text())
    s["images"][0]["detections"] = "many"  # a hand-edited row: not trusted
    s["images"][1] = "b"
    s["models"] = {"x": 5}
    (out / "summary.json").write_text(json.dumps(s))
    with open(out / "predictions.csv", "a") as fh:
        fh.write('"unterminated,1,2\nc,9,9,0.5\n')  # rows of c no longer match its count
    capsys.readouterr()
    assert main(_args(model_file, folder, out, "--resume", threshold="1.0")) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "already done" not in err
    assert (out / "predictions.csv").read_text() == first
    s = json.loads((out / "summary.json").read_text())
    assert s["pipeline"]["resumed_images"] == 0 and s["n_images"] == 3


@pytest.mark.parametrize(
    ("cpus", "local_ranks", "expected"),
    [(16, None, 4), (16, "8", 1), (16, "2", 4), (2, None, 1), (1, None, 0), (4, "bad", 3)],
)
def test_default_workers_leave_a_core_per_rank(monkeypatch, cpus, local_ranks, expected):
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    if local_ranks is None:
        monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("LOCAL_WORLD_SIZE", local_ranks)
    assert predict_cli.default_workers() == expected


def test_resume_with_another_model_file_under_the_same_name_is_refused(
    tmp_path, model_file, capsys
):
    """A registry NAME (or a path) that now names other weights would mix two models."""
    import shutil

    folder = _images(tmp_path / "in", names=("a", "b"))
    model = tmp_path / "m.safetensors"
    shutil.copy(model_file, model)
    out = tmp_path / "out"
    assert main(_args(model, folder, out, threshold="1.0")) == 0
    assert main(_args(model, folder, out, "--resume", threshold="1.0")) == 0  # same file: fine
    torch.manual_seed(1)
    save_model(model, GravityNet(CFG).eval(), CFG, {"threshold": 0.5})  # retrained in place
    capsys.readouterr()
    assert main(_args(model, folder, out, "--resume", threshold="1.0")) == 1
    err = capsys.readouterr().err
    assert "--resume" in err and "not the model" in err and str(model) in err
