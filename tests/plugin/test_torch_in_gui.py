"""Loading a model from inside a running GUI must not crash the process.

torchvision imports torch._dynamo, which imports triton when installed; triton's bundled
LLVM segfaults next to Mesa's llvmpipe (software OpenGL, as under Xvfb). The plugin keeps
triton out of the GUI process; this runs the Detect dock in a fresh process where torch
is first imported after the viewer exists (as with ``napari`` + the plugin).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.gui

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from napari_gravity.plugin.__main__ import open_viewer
    assert "torch" not in sys.modules
    viewer, docks = open_viewer(None, [sys.argv[2]], show=True)
    det = docks["Detect lesions"][1]
    det.use_model_file(sys.argv[1])
    det.run_detection()
    from qtpy.QtWidgets import QApplication
    app = QApplication.instance()
    end = time.monotonic() + 120
    while det.busy and time.monotonic() < end:
        app.processEvents(); time.sleep(0.02)
    print("RESULT", det.run_label.text(), flush=True)
    viewer.close()
    """
)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_model_loads_inside_gui_without_crash(tmp_path, tiny_model, image_folder):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, GRAVITY_SAMPLES=str(tmp_path), GRAVITY_MODELS=str(tmp_path))
    out = subprocess.run(
        [sys.executable, str(script), str(tiny_model), str(image_folder[0])],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "RESULT tiny: " in out.stdout and "detections in" in out.stdout
