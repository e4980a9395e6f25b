"""Review state, sidecar and trainer-runner logic (no display needed)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from napari_gravity.plugin import review as rv
from napari_gravity.plugin.runner import TrainingRun, child_env, train_command
from napari_gravity.plugin.sidecar import (
    Review,
    SidecarError,
    read_review,
    read_status,
    sidecar_path,
    write_review,
)


def test_merge_keeps_reviewed_points_and_replaces_pending():
    pts = np.array([[10.0, 10.0], [50.0, 50.0], [90.0, 90.0], [120.0, 30.0]])
    feats = rv.make_features(
        [0.9, 0.8, 0.7, 1.0],
        ["model", "model", "model", "user"],
        ["accepted", "pending", "rejected", "added"],
    )
    new_pts = np.array([[10.5, 10.0], [60.0, 60.0], [90.0, 89.0], [200.0, 5.0]])
    out_pts, out_f = rv.merge_detections(pts, feats, new_pts, [0.95, 0.6, 0.75, 0.55], 3.0)
    # reviewed/user points kept as they were, pending (50,50) gone, duplicates of kept dropped
    assert out_f["status"].tolist() == ["accepted", "rejected", "added", "pending", "pending"]
    np.testing.assert_allclose(out_pts[:3], pts[[0, 2, 3]])
    np.testing.assert_allclose(out_pts[3:], [[60.0, 60.0], [200.0, 5.0]])
    assert out_f["score"].tolist()[3:] == [0.6, 0.55]


def test_next_pending_cycles_by_score():
    f = rv.make_features([0.2, 0.9, 0.5, 0.7], status=["pending", "pending", "accepted", "pending"])
    order = [rv.next_pending(f, None)]
    for _ in range(3):
        order.append(rv.next_pending(f, order[-1]))
    assert order == [1, 3, 0, 1]
    assert rv.next_pending(rv.make_features([0.3], status="rejected"), None) is None


def test_status_and_uncertainty():
    f = rv.make_features([0.5, 0.99, 0.1], status=["pending", "accepted", "pending"])
    assert rv.image_review_status(f, touched=False) == "unreviewed"
    assert rv.image_review_status(f, touched=True) == "in_progress"
    assert rv.uncertainty(f) == pytest.approx(1.0 + 0.2)
    f.loc[[0, 2], "status"] = "rejected"
    assert rv.image_review_status(f, touched=True) == "done"
    assert rv.lesion_mask(f).tolist() == [False, True, False]


def test_clean_features_coerces_unknown_values():
    import pandas as pd

    f = rv.clean_features(pd.DataFrame({"score": ["0.4", "x"], "status": ["accepted", "??"]}), 2)
    assert f["score"].tolist() == [0.4, 1.0]
    assert f["source"].tolist() == ["model", "model"]
    assert f["status"].tolist() == ["accepted", "pending"]


def test_undo_stack_is_bounded_and_copies():
    st = rv.UndoStack(limit=2)
    data = np.zeros((1, 2))
    f = rv.make_features([0.5])
    st.push(data, f, "a")
    data[0, 0] = 5  # later in-place edits must not change the snapshot
    st.push(data, f, "b")
    st.push(data, f, "c")
    assert len(st) == 2 and st.last_label == "c"
    assert st.pop().label == "c"
    snap = st.pop()
    assert snap.label == "b" and snap.data[0, 0] == 5
    assert st.pop() is None


def test_sidecar_round_trip_and_atomicity(tmp_path):
    img = tmp_path / "case.png"
    pts = np.array([[1.5, 2.25], [30.0, 40.0]])
    f = rv.make_features([0.75, 1.0], ["model", "user"], ["accepted", "added"])
    path = write_review(
        sidecar_path(img), Review("case.png", pts, f, "done", (64, 64), {"threshold": 0.3})
    )
    assert path.name == "case.review.json"
    back = read_review(path)
    np.testing.assert_allclose(back.points, pts)
    assert back.features.to_dict("list") == f.to_dict("list")
    assert (
        back.status == "done" and back.image_shape == (64, 64) and back.params == {"threshold": 0.3}
    )
    assert read_status(img) == "done"
    assert [p.name for p in tmp_path.iterdir()] == ["case.review.json"]  # no temp file left
    path.write_text("{ torn")
    with pytest.raises(SidecarError, match=r"case\.review\.json"):
        read_review(path)
    assert read_status(img) == "unreviewed"


FAKE_TRAINER = textwrap.dedent(
    """
    import json, sys, time, pathlib
    run = pathlib.Path(sys.argv[1]); run.mkdir(parents=True, exist_ok=True)
    fh = open(run / "events.jsonl", "a")
    def emit(**ev):
        fh.write(json.dumps(dict(ev, time=time.time())) + "\\n"); fh.flush()
    if sys.argv[2] == "slow":  # stops cleanly on SIGTERM, as the trainer does
        import signal
        signal.signal(signal.SIGTERM, lambda *a: (emit(event="done", model_path=None, stopped=True), sys.exit(0)))
    emit(event="start", epochs=2, steps_per_epoch=2)
    emit(event="step", epoch=1, step=1, steps_per_epoch=2, loss=1.0)
    fh.write('{"event": "step", "epo'); fh.flush()   # a torn line the reader must wait for
    time.sleep(0.3)
    fh.write('ch": 2, "step": 1, "steps_per_epoch": 2, "loss": 0.5}\\n'); fh.flush()
    if sys.argv[2] == "slow":  # the GUI's Cancel: RUN_DIR/ABORT, then exit registering nothing
        end = time.time() + 60
        while not (run / "ABORT").exists() and time.time() < end:
            time.sleep(0.05)
        emit(event="aborted", message="aborted on request"); sys.exit(1)
    if sys.argv[2] == "fail":
        emit(event="error", message="data.root: /nope does not exist"); sys.exit(1)
    (run / "model.safetensors").write_bytes(b"x")
    emit(event="done", model_path=str(run / "model.safetensors"), registered="m:v1")
    """
)


@pytest.mark.parametrize("mode", ["ok", "fail", "slow"])
def test_runner_follows_event_stream(tmp_path, mode):
    import time

    script = tmp_path / "fake.py"
    script.write_text(FAKE_TRAINER)
    run = TrainingRun([sys.executable, str(script), str(tmp_path / "run"), mode], tmp_path / "run")
    run.start()
    progress = []
    t0 = time.monotonic()
    while run.state in ("running", "cancelling"):
        if time.monotonic() - t0 > 120:  # a hang guard, not a speed check
            run.cancel(grace_s=1)
            pytest.fail(f"the runner never left state {run.state!r}")
        run.poll()
        progress.append(run.progress)
        if mode == "slow" and len(run.events) >= 3 and run.state == "running":
            run.cancel(grace_s=20)
        time.sleep(0.01)
    kinds = [e["event"] for e in run.events]
    assert kinds[:3] == ["start", "step", "step"]
    assert progress == sorted(progress)  # monotone
    if mode == "ok":
        assert run.state == "done" and run.progress == 1.0
        assert run.model_path.endswith("model.safetensors")
    elif mode == "fail":
        assert run.state == "failed" and "does not exist" in run.error
        assert run.progress == pytest.approx(0.75)
    else:
        assert run.state == "cancelled" and run.cancel_outcome == "aborted"
        assert run.events[-1]["event"] == "aborted" and run.model_path is None


def test_train_command_shape(tmp_path):
    from training.cli import build_parser
    from training.config import parse_override

    over = {"data.root": "/my data/a=b", "train.lr": 1e-5}
    cmd = train_command("tiny", tmp_path / "r", init="m.safetensors", overrides=over)
    assert cmd[:5] == [sys.executable, "-m", "training", "train", "tiny"]
    # the trainer's own parser reads back exactly what the GUI asked for
    args = build_parser(only="train").parse_args(cmd[3:])
    assert args.command == "train" and args.config == "tiny"
    assert args.out == str(tmp_path / "r") and args.init == "m.safetensors"
    assert not args.resume
    assert [parse_override(o) for o in args.overrides] == [
        (["data", "root"], "/my data/a=b"),  # spaces and '=' in a value stay one argument
        (["train", "lr"], 1e-5),
    ]
    bare = build_parser(only="train").parse_args(train_command("c.yaml", "run")[3:])
    assert bare.init is None and bare.overrides == []


ROOT = Path(__file__).resolve().parents[2]


def test_child_finds_training_without_site_packages(tmp_path, monkeypatch):
    """An installed plugin's trainer: ``training`` is found where the GUI found it, even when
    the child cannot see it through site-packages (``-S``) nor its working directory."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if Path(p or ".").resolve() != ROOT])
    env = child_env({"PATH": os.environ.get("PATH", "")})
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    probe = "import importlib.util as u; print(u.find_spec('training').origin)"
    out = subprocess.run([sys.executable, "-S", "-c", probe], env=env, capture_output=True)
    assert Path(out.stdout.decode().strip()) == ROOT / "training" / "__init__.py", out
    bare = subprocess.run(
        [sys.executable, "-S", "-c", probe], env={"PATH": env["PATH"]}, capture_output=True
    )
    assert bare.returncode != 0  # without it, the child would not find the trainer


@pytest.mark.skipif(not (ROOT / "training" / "configs" / "tiny.yaml").exists(), reason="no tiny")
def test_trainer_starts_from_any_working_directory(tmp_path, monkeypatch):
    """The trainer runs in the caller's folder: a relative run folder is the caller's (the
    trainer's events reach the runner), never the source checkout's."""
    import time

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GRAVITY_MODELS", str(tmp_path / "models"))
    run = TrainingRun([*train_command("tiny", "run"), "--epochs", "50"], "run")
    run.start()
    end = time.monotonic() + 150
    while run.state == "running" and time.monotonic() < end:
        run.poll()
        if any(e["event"] == "start" for e in run.events):
            break
        time.sleep(0.1)
    started = [e["event"] for e in run.events]
    run.cancel(grace_s=30)
    run.wait(60)
    assert "start" in started, run.log_tail()
    assert (tmp_path / "run" / "events.jsonl").exists()
    assert run.state == "cancelled" and not (tmp_path / "models").exists()


def test_queue_orders_by_uncertainty(tmp_path):
    from napari_gravity.plugin.datasets import folder_images, order_queue

    names = ["a.png", "b.png", "c.png", "d.png", "a.mask.png"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    pts = np.zeros((2, 2))
    # b: two pending near 0.5 (most uncertain); c: one pending at 0.9; d: done
    write_review(sidecar_path(tmp_path / "b.png"), Review("b", pts, rv.make_features([0.5, 0.45])))
    write_review(
        sidecar_path(tmp_path / "c.png"),
        Review("c", pts, rv.make_features([0.9, 0.99], status=["pending", "accepted"])),
    )
    write_review(
        sidecar_path(tmp_path / "d.png"),
        Review("d", pts, rv.make_features([0.5, 0.5], status="accepted"), "done"),
    )
    paths = folder_images(tmp_path)
    assert [p.name for p in paths] == ["a.png", "b.png", "c.png", "d.png"]
    assert [p.name for p in order_queue(paths, False)] == ["a.png", "b.png", "c.png", "d.png"]
    assert [p.name for p in order_queue(paths, True)] == ["b.png", "c.png", "a.png", "d.png"]


def test_model_detections_stay_inside_the_breast():
    """The plugin attaches the tissue mask of the model's task (MC → breast) to the cached raw
    output, so no threshold shows detections in the air around a whole breast."""
    from napari_gravity.core.registry import default_model_path
    from napari_gravity.data.masks import breast_mask
    from napari_gravity.data.synthetic import synth_mammogram
    from napari_gravity.plugin import _api

    path = default_model_path()
    if path is None:
        pytest.skip("no bundled default model in this build")
    s = synth_mammogram((384, 320), seed=5, breast=True)
    handle = _api.load_detector(path, device="cpu")
    raw = handle.raw(s.image)
    mask = breast_mask(s.image)
    np.testing.assert_array_equal(raw.mask, mask)
    assert (~mask).any()  # the image has air around the breast
    dets = _api.detections(raw, 0.0, 7.0, 0.5)
    iy, ix = np.rint(dets.points).astype(int).T
    assert len(dets) > 0 and mask[iy, ix].all()
    # without the mask the network does put low-score candidates in the air
    unmasked = handle.detector.from_raw(raw, mask=np.ones_like(mask), threshold=0.0)
    uy, ux = np.rint(unmasked.points).astype(int).T
    assert (~mask[uy, ux]).any()


def test_a_saved_raw_output_keeps_its_field_of_view_zoom(tmp_path):
    """A model's output on an image resampled to its FOV scale (zoom 0.5) has its NMS box in
    the model's pixels: reloaded from the sidecar it must select exactly what it did live."""
    from napari_gravity.core.predictor import RawOutput
    from napari_gravity.plugin.sidecar import load_raw, save_raw

    pts = np.array([[40.0, 40.0], [40.0, 47.0], [80.0, 20.0]], np.float32)
    sc = np.array([0.9, 0.8, 0.7], np.float32)

    def raw(zoom):
        return RawOutput(pts, sc, pts.copy(), (120, 100), 1.0, floor=0.01, zoom=zoom)

    # box 5 model px = 10 image px at zoom 0.5: the two points 7 px apart overlap (IoU 3/17)
    assert len(raw(0.5).select(0.5, 5.0, 0.1)) == 2
    assert len(raw(1.0).select(0.5, 5.0, 0.1)) == 3
    model = tmp_path / "m.safetensors"
    model.write_bytes(b"x")
    save_raw(tmp_path / "img.raw.npz", raw(0.5), {"path": str(model)})
    back = load_raw(tmp_path / "img.raw.npz", (120, 100))
    assert back is not None and back.zoom == 0.5
    np.testing.assert_array_equal(
        back.select(0.5, 5.0, 0.1).points, raw(0.5).select(0.5, 5.0, 0.1).points
    )
