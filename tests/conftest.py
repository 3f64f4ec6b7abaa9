"""Shared test setup.

GUI tests run under Xvfb (pytest-xvfb starts it after this file is imported). Only when
there is neither a display nor an Xvfb binary do we fall back to Qt's offscreen
platform, which cannot render napari's canvas but lets widget logic run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

if not os.environ.get("DISPLAY") and shutil.which("Xvfb") is None:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """The project's real images (``../shared/data``); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny-tensor tests on one torch thread.

    A second thread only adds synchronisation on such small tensors, which stalls badly
    when other processes keep the cores busy.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def no_worker_left_behind():
    """Wait for napari's thread workers after a GUI test: one still running at exit aborts
    pytest."""
    yield
    from qtpy.QtCore import QThreadPool

    QThreadPool.globalInstance().waitForDone(30000)


@pytest.fixture(autouse=True)
def fresh_session_models():
    """Forget the models a test fine-tuned in "this napari session": the Detect widget
    offers the newest first, and the next test must start from the bundled ones."""
    yield
    from napari_denodet._widgets import session

    session._MODELS.clear()
