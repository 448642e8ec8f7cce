"""flexseg.predict.export: each format written, loaded by its own runtime and compared with
Keras; bad requests refused with nothing left behind."""

from __future__ import annotations

import json
import shutil

import keras
import numpy as np
import pytest

import flexseg.predict.export as export_module
from flexseg.errors import ConfigError, DataError, ExportError
from flexseg.predict.export import RUNTIMES, export, sample_batch
from flexseg.predict.postprocess import NONE, save_rule
from flexseg.runs import load_run
from tests.helpers import run_cli

BACKEND = keras.backend.backend()
# Each backend exports onnx and tf_saved_model (Keras' own writer, or a process of the backend
# that has one); litert where Keras writes it without extra packages, torch on torch.
ROUND_TRIPS = ["onnx", "tf_saved_model"] + {"tensorflow": ["litert"], "torch": ["torch"]}.get(
    BACKEND, []
)


@pytest.mark.parametrize("fmt", ROUND_TRIPS)
def test_round_trip(trained, tmp_path, fmt):
    _, run_dir, _ = trained
    out = tmp_path / fmt
    result = export({"run_dir": str(run_dir), "format": fmt, "output": str(out)})
    assert result["folder"] == str(out) and result["max_difference"] <= 1e-4
    assert result["checked_on"] == "4 test images of ms_lesjak"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [export_module.MODEL_FILES[fmt], "model_card.md", "preprocessing.json"]
    )
    # Loaded again here, on other images than the check used: the Keras model's numbers.
    run = load_run(run_dir)
    batch = np.random.default_rng(1).normal(size=(3, *run.model.input_shape[1:]))
    batch = batch.astype(np.float32)
    expected = keras.ops.convert_to_numpy(run.model(batch, training=False))
    found = RUNTIMES[fmt](out / export_module.MODEL_FILES[fmt], batch)
    np.testing.assert_allclose(found, expected, atol=1e-4)
    prep = json.loads((out / "preprocessing.json").read_text())
    assert prep["input"] == {
        "name": "image", "layout": "NHWC", "dtype": "float32", "shape": [None, 32, 32, 1]
    }  # fmt: skip
    assert prep["intensity"]["normalize"] == "zscore" and prep["size"]["policy"] == "pad"
    assert [c["name"] for c in prep["classes"]] == ["background", "lesion"]
    card = (out / "model_card.md").read_text()
    assert "## Export check" in card and f"`{fmt}`" in card


@pytest.mark.once
def test_the_runs_post_processing_is_written_for_other_programs(trained, tmp_path):
    _, run_dir, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("evaluation"))
    assert export_module.preprocessing(load_run(copy), "onnx")["postprocessing"]["rule"] == NONE
    rule = {"name": "min_size", "min_size": 25, "threshold": 0.3}
    save_rule(copy, rule, {})
    written = export_module.preprocessing(load_run(copy), "onnx")["postprocessing"]
    assert written["rule"] == rule and "threshold" in written["steps"]


def test_the_check_uses_the_runs_own_images(trained):
    """The batch the export is checked on is what the model sees in evaluation."""
    _, run_dir, _ = trained
    batch, checked_on = sample_batch(load_run(run_dir))
    assert batch.shape == (4, 32, 32, 1) and checked_on == "4 test images of ms_lesjak"
    assert abs(float(batch.mean())) < 0.5 < float(batch.std())  # z-scored images, not noise


def test_a_model_that_does_not_match_is_not_exported(trained, tmp_path, monkeypatch):
    _, run_dir, _ = trained
    fmt = export_module.NATIVE[BACKEND][0]
    monkeypatch.setattr(export_module, "write_model", lambda m, f, p: p.write_bytes(b"model"))
    monkeypatch.setitem(RUNTIMES, fmt, lambda path, batch: np.full((4, 32, 32, 2), 0.5))
    out = tmp_path / "exports" / fmt
    with pytest.raises(ExportError, match=f"exported {fmt} model's probabilities differ"):
        export({"run_dir": str(run_dir), "format": fmt, "output": str(out)})
    assert not (tmp_path / "exports").exists()  # nothing half-written, not even its folder
    monkeypatch.setitem(RUNTIMES, fmt, lambda path, batch: np.load(path))  # cannot load it
    with pytest.raises(ExportError, match=r"could not run the exported .* nothing was exported"):
        export({"run_dir": str(run_dir), "format": fmt, "output": str(out)})
    assert not (tmp_path / "exports").exists()


def test_bad_requests_are_refused_before_anything_is_written(trained, tmp_path, monkeypatch):
    _, run_dir, _ = trained
    with pytest.raises(ConfigError, match="format must be one of"):
        export({"run_dir": str(run_dir), "format": "coreml"})
    with pytest.raises(DataError, match="checkpoint .*last.keras does not exist"):
        (tmp_path / "run").mkdir()
        (tmp_path / "run" / "config.yaml").write_text((run_dir / "config.yaml").read_text())
        export({"run_dir": str(tmp_path / "run"), "checkpoint": "last"})
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(DataError, match="exists already; choose another output"):
        export({"run_dir": str(run_dir), "output": str(taken)})
    monkeypatch.setattr(export_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs .*, not installed: pip install 'flexseg\["):
        export({"run_dir": str(run_dir), "format": "torch", "output": str(tmp_path / "t")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "taken"]
    assert not any((tmp_path / "run").glob("export*"))


def test_overwrite_replaces_an_earlier_export_and_never_a_users_files(trained, tmp_path):
    _, run_dir, _ = trained
    fmt = export_module.NATIVE[BACKEND][0]
    users = tmp_path / "mine"
    users.mkdir()
    (users / "README.md").write_text("my notes")
    (users / "other.onnx").write_bytes(b"another model")
    before = {p.name: p.read_bytes() for p in users.iterdir()}
    with pytest.raises(DataError, match=r"not an export .*README.md, other.onnx"):
        export({"run_dir": str(run_dir), "format": fmt, "output": str(users), "overwrite": True})
    assert {p.name: p.read_bytes() for p in users.iterdir()} == before  # all there, unchanged
    out = tmp_path / "export"
    export({"run_dir": str(run_dir), "format": fmt, "output": str(out)})
    first = (out / "preprocessing.json").stat().st_mtime_ns
    export({"run_dir": str(run_dir), "format": fmt, "output": str(out), "overwrite": True})
    assert (out / "preprocessing.json").stat().st_mtime_ns >= first  # an export replaces one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "mine"]


def test_the_command_names_a_bad_format_in_one_line(trained, tmp_path):
    _, run_dir, _ = trained
    result = run_cli("export", f"run_dir={run_dir}", "format=coreml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: format must be one of ('onnx', 'tf_saved_model', 'litert', 'torch'). "
        "Received: 'coreml'"
    ]
    assert not (run_dir / "export").exists()
