"""torch off the GUI thread: imported once in a background thread (its big libraries dlopen'ed
with the GIL released), triton kept out of a running Qt GUI. Workers call ``wait_for_torch()``."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def keep_triton_out() -> None:
    """Make ``import triton`` fail cleanly in this process (see ``block_triton_in_gui``), whether
    or not a Qt application exists yet; ``GRAVITY_ALLOW_TRITON=1`` turns this off."""
    if "triton" not in sys.modules and os.environ.get("GRAVITY_ALLOW_TRITON") != "1":
        sys.modules["triton"] = None


def block_triton_in_gui() -> None:
    """Keep torch from importing triton inside a running Qt GUI.

    ``import torchvision`` pulls in ``torch._dynamo``, which imports triton when it is
    installed; triton's bundled LLVM segfaults when it is loaded after Mesa's llvmpipe
    (software OpenGL, e.g. under Xvfb) is already in the process. Inference never needs
    triton (it only serves ``torch.compile``), so inside a GUI that has not imported it
    yet we make ``import triton`` fail cleanly. ``GRAVITY_ALLOW_TRITON=1`` turns this off.
    """
    if "triton" in sys.modules or os.environ.get("GRAVITY_ALLOW_TRITON") == "1":
        return
    try:
        from qtpy.QtWidgets import QApplication
    except Exception:  # no Qt: nothing to protect
        return
    if QApplication.instance() is not None:
        keep_triton_out()  # torch treats a None module as "triton not installed"


def _dlopen_torch_libraries() -> None:
    """Load torch's big shared libraries with the GIL released.

    ``import torch`` loads libtorch_cpu & co. (hundreds of MB, long static initialisers) while
    holding the GIL, which froze the GUI thread for 0.8 s even when the import ran in a worker.
    Calling libc's ``dlopen`` through ctypes releases the GIL; the import then finds them loaded.
    """
    import ctypes
    import glob
    import importlib.util

    if sys.platform != "linux" or "torch" in sys.modules:
        return
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return
    root = Path(spec.origin).parent
    names = ("libtorch_global_deps", "libc10", "libtorch_cpu", "libc10_cuda", "libtorch_cuda")
    libs = [root / "lib" / f"{n}.so" for n in names]
    libs += [root / "lib" / "libtorch.so", root / "lib" / "libtorch_python.so"]
    libs += [Path(p) for p in glob.glob(str(root / "_C.*.so"))]
    vision = importlib.util.find_spec("torchvision")
    if vision is not None and vision.origin:
        libs += [Path(p) for p in glob.glob(str(Path(vision.origin).parent / "*.so"))]
    try:
        libc = ctypes.CDLL(None)
        libc.dlopen.restype = ctypes.c_void_p
        libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
    except (OSError, AttributeError):
        return
    for lib in libs:
        if lib.is_file():
            libc.dlopen(str(lib).encode(), 0x002 | 0x100)  # RTLD_NOW | RTLD_GLOBAL


_TORCH_THREAD = None
_TORCH_ERROR: list[BaseException] = []


def start_torch_import() -> None:
    """Import torch, torchvision and the predictor in a background thread (once).

    Call it from the GUI thread (it first keeps triton out, see ``block_triton_in_gui``);
    ``wait_for_torch()`` in a worker then blocks until it is done. The GUI thread itself must
    never import torch while this runs (it would wait on the import lock).
    """
    global _TORCH_THREAD
    if _TORCH_THREAD is not None:
        return
    import threading

    block_triton_in_gui()

    def work():
        try:
            from .runner import lower_priority

            lower_priority()
            _dlopen_torch_libraries()
            import torchvision  # noqa: F401  (imports torchvision.ops -> torch._dynamo)

            import napari_gravity.core.model_io
            import napari_gravity.core.predictor  # noqa: F401

            settle_heap(collect=False)  # a collection here would hold the GIL ~0.3 s
        except BaseException as exc:  # reported by wait_for_torch
            _TORCH_ERROR.append(exc)

    _TORCH_THREAD = threading.Thread(target=work, name="gravity-torch-import", daemon=True)
    _TORCH_THREAD.start()


def torch_ready() -> bool:
    return _TORCH_THREAD is not None and not _TORCH_THREAD.is_alive() and not _TORCH_ERROR


def wait_for_torch() -> None:
    """Block (in a worker thread) until the background import is done."""
    if _TORCH_THREAD is None:
        start_torch_import()
    _TORCH_THREAD.join()
    if _TORCH_ERROR:
        raise RuntimeError(f"cannot import torch: {_TORCH_ERROR[0]}") from _TORCH_ERROR[0]


def preload_torch() -> None:
    """Import torch / torchvision now, in the calling thread (scripts and tests)."""
    start_torch_import()
    wait_for_torch()


def settle_heap(collect: bool = True) -> None:
    """Move everything alive now (napari, Qt, torch: millions of objects) out of reach of the
    cyclic garbage collector (``gc.freeze``). A full collection of that heap holds the GIL for
    120-300 ms, which froze the GUI at random moments (during Detect's model load, say); later
    collections only walk objects made afterwards. ``collect`` first frees what is garbage now
    (itself a 0.3 s pause: only while no window shows)."""
    import gc

    if collect:
        gc.collect()
    gc.freeze()


def finish_import_before_showing() -> None:
    """For a launcher: wait for the background import before the window appears.

    Importing torch costs ~2 s of CPU and, even in a background thread, holds the GIL in
    stretches of 50-300 ms (extension modules initialising, full garbage collections of the
    growing heap), which stall a visible GUI's event loop; done while the window is still hidden,
    no stall is seen. Then the heap is settled (``settle_heap``). An import error is
    left for ``wait_for_torch`` to report where a model is loaded."""
    try:
        wait_for_torch()
    except RuntimeError:
        pass
    settle_heap(collect=True)


def device_name(detector=None) -> str:
    """ "CPU" or "GPU (name)"; "not known yet" while torch is not imported (never imports it
    from the GUI thread)."""
    dev = getattr(getattr(detector, "detector", None), "device", None)
    if "torch" not in sys.modules or (_TORCH_THREAD is not None and _TORCH_THREAD.is_alive()):
        return "not known yet (checked when a model loads)"
    block_triton_in_gui()
    try:
        import torch

        dev = str(dev if dev is not None else "cuda" if torch.cuda.is_available() else "cpu")
        if dev.startswith("cuda") and torch.cuda.is_available():
            return f"GPU ({torch.cuda.get_device_name(0)})"
    except Exception:  # pragma: no cover - torch missing or broken
        pass
    return "CPU"
