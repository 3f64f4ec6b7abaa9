"""The core floor must import in a plain interpreter without napari or Qt."""

import json
import pkgutil
import subprocess
import sys

import napari_denodet.core

FORBIDDEN = ("napari", "qtpy", "magicgui", "vispy", "superqt", "PyQt5", "PyQt6", "PySide2",
             "PySide6")


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_every_core_module_imports_without_napari_or_qt():
    names = [m.name for m in pkgutil.iter_modules(napari_denodet.core.__path__)]
    assert {"simulate", "metrics", "io", "points"} <= set(names)
    code = "\n".join(f"import napari_denodet.core.{n}" for n in names)
    modules = _imported_after(code)
    leaked = sorted(m for m in modules if m.split(".")[0] in FORBIDDEN)
    assert not leaked, f"core imported {leaked}"
    assert "napari_denodet.core.simulate" in modules  # the probe really imported the core


def test_package_import_is_cheap():
    # npe2 imports the package to discover the plugin: no torch, Qt or napari there.
    modules = _imported_after("import napari_denodet, napari_denodet.core")
    heavy = sorted(m for m in modules if m.split(".")[0] in (*FORBIDDEN, "torch"))
    assert not heavy, f"import napari_denodet pulled in {heavy}"
