"""The analysis registry: one entry per analysis callback, plain data importable without torch."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCK_TORCH = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "lightning", "numpy"):
            raise ImportError(f"{name} imported by the registry")
sys.meta_path.insert(0, Blocked())
from alternet_pl import registry
assert not any(m.split(".")[0] in ("torch", "lightning") for m in sys.modules), "torch imported"
print(",".join(registry.ANALYSES))
"""


def test_registry_imports_without_torch():
    out = subprocess.run(
        [sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().split(",")[0] == "hessian"


def _callback_classes() -> dict[str, type]:
    """Every concrete analysis callback of the package: subclasses of AnalysisCallback with a name."""
    import alternet_pl.callbacks  # noqa: F401  (imports every callback module)
    from alternet_pl.callbacks.base import AnalysisCallback

    found, todo = {}, [AnalysisCallback]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.name and cls.__module__.startswith("alternet_pl."):
            found[cls.name] = cls
    return found


def test_one_entry_per_callback_and_every_path_imports():
    from alternet_pl.analysis.records import AnalysisRecord
    from alternet_pl.registry import ANALYSES, import_object

    callbacks = _callback_classes()
    assert set(ANALYSES) == set(callbacks)
    for name, entry in ANALYSES.items():
        assert import_object(entry.callback) is callbacks[name], name
        assert issubclass(import_object(entry.record), AnalysisRecord), name
        if entry.options is not None:
            import_object(entry.options)
        if entry.figure is not None:
            assert callable(import_object(entry.figure)), name


def test_class_paths_map_to_names():
    from alternet_pl.registry import closest, name_of_class_path

    assert name_of_class_path("alternet_pl.callbacks.hessian.HessianCallback") == "hessian"
    assert name_of_class_path("alternet_pl.callbacks.TrajectoryCallback") == "trajectory"
    assert name_of_class_path("FreqNoiseCallback") == "freq_noise"
    assert name_of_class_path("my.own.Callback") is None
    assert closest("landscap") == "landscape" and closest("zzz") is None
