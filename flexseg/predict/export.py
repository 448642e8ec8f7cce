"""A trained run made deployable: the model in a runtime's format, with how to prepare its
inputs (`preprocessing.json`) and what it is (`model_card.md`).

`export(cfg)` writes `<run_dir>/export/<format>/` (or `cfg.output`). Every model file is
checked after writing: its own runtime (onnxruntime, TensorFlow, the LiteRT interpreter,
torch) loads it and must give the Keras model's probabilities within `TOLERANCE` on a batch
of the run's own images. The folder is written under a temporary name and appears only when
that check passed, so a failed export leaves nothing behind.

Keras writes some formats only on some backends (`NATIVE`); the checkpoint is the same file on
every backend, so any other format is written by a short process of the backend that can
(`WRITERS`), and checked here as any other.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path

import keras
import numpy as np

from flexseg import backend
from flexseg.config.parse import as_dict, parse
from flexseg.config.schema import EXPORT_FORMATS, ExportConfig
from flexseg.data.dataset import SegmentationDataset, compute_group_stats
from flexseg.data.masks import ColorMap
from flexseg.data.reading import VOLUME_ONLY, ReadSpec
from flexseg.errors import ConfigError, DataError, ExportError
from flexseg.from_config import colormap_of, find_samples, read_spec
from flexseg.models.windows import SIGMA_SCALE
from flexseg.predict.postprocess import read_rule
from flexseg.runs import CHECKPOINTS, Run, load_run

MODEL_FILES = {
    "onnx": "model.onnx",
    "tf_saved_model": "saved_model",
    "litert": "model.tflite",
    "torch": "model.pt2",
}
# What Keras 3.15 writes on each backend with the packages flexseg installs (JAX's ONNX export
# needs jax2onnx, the torch backend's SavedModel torch_xla, its LiteRT litert-torch).
NATIVE = {
    "tensorflow": ("onnx", "tf_saved_model", "litert"),
    "jax": ("tf_saved_model",),
    "torch": ("onnx", "torch"),
}
WRITERS = {
    "onnx": "tensorflow",
    "tf_saved_model": "tensorflow",
    "litert": "tensorflow",
    "torch": "torch",
}
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
# The runtime that loads each format for the check, and the extra that installs it.
RUNTIME_PACKAGES = {
    "onnx": ("onnxruntime", "flexseg[export]"),
    "tf_saved_model": ("tensorflow", "flexseg[tensorflow]"),
    "litert": ("ai_edge_litert", "flexseg[export]"),
    "torch": ("torch", "flexseg[torch]"),
}
SAMPLE_IMAGES = 4
INPUT_NAME = "image"
HISTOGRAM_BINS = 4096  # intensity statistics: see flexseg.data.reading.intensity_stats
TILE_OVERLAP = 0.5  # flexseg.predict.predictor.Predictor's default


def export(cfg: ExportConfig | Mapping) -> dict:
    """Exports a run's checkpoint (`cfg.checkpoint`, default the run's choice) as `cfg.format`.

    Returns:
        What was written and checked: `folder`, `model`, `max_difference`, `checked_on`.

    Raises:
        ConfigError: the format's writer or runtime is not installed.
        DataError: the run has no such checkpoint, or the output folder exists.
        ExportError: writing failed, or the exported model does not match the Keras model.
    """
    cfg = parse(ExportConfig, cfg)
    run = load_run(cfg.run_dir, cfg.checkpoint)
    writer = backend.name()
    if cfg.format not in NATIVE[writer]:
        writer = WRITERS[cfg.format]
    _require(BACKEND_PACKAGES[writer], f"flexseg[{writer}]", f"writing format={cfg.format}")
    _require(*RUNTIME_PACKAGES[cfg.format], f"checking format={cfg.format}")
    final = Path(cfg.output) if cfg.output else run.run_dir / "export" / cfg.format
    if final.exists() or final.is_symlink():
        if not cfg.overwrite:
            raise DataError(
                f"{final} exists already; choose another output=... or set overwrite=true."
            )
        foreign = _not_an_export(final)
        if foreign:
            raise DataError(
                f"{final} is not an export flexseg-export wrote ({foreign}); overwrite=true "
                "replaces only an earlier export, so nothing was exported: choose another "
                "output=..."
            )
    made_parent = not final.parent.exists()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # as a folder made by mkdir, not mkdtemp's private one
    try:
        model_path = staging / MODEL_FILES[cfg.format]
        if writer == backend.name():
            try:
                write_model(run.model, cfg.format, model_path)
            except Exception as error:  # the converter's own failure, named
                raise ExportError(
                    f"writing format={cfg.format} with Keras on {writer} failed: "
                    f"{type(error).__name__}: {error}; nothing was exported."
                ) from error
        else:
            _write_in_process(writer, run, cfg.format, model_path)
        batch, checked_on = sample_batch(run)
        expected = _probabilities(_keras_outputs(run.model, batch), run.cfg.model.from_logits)
        try:
            outputs = RUNTIMES[cfg.format](model_path, batch)
        except Exception as error:
            raise ExportError(
                f"{RUNTIME_PACKAGES[cfg.format][0]} could not run the exported {cfg.format} "
                f"model: {type(error).__name__}: {error}; nothing was exported."
            ) from error
        found = _probabilities(outputs, run.cfg.model.from_logits)
        difference = float(np.abs(found - expected).max()) if found.shape == expected.shape else 1
        if not difference <= cfg.tolerance:
            raise ExportError(
                f"the exported {cfg.format} model's probabilities differ from the Keras model's "
                f"by up to {difference:.3g} (allowed: tolerance={cfg.tolerance}) on {checked_on}; "
                "nothing was exported."
            )
        result = {
            "format": cfg.format,
            "model": MODEL_FILES[cfg.format],
            "checkpoint": run.checkpoint,
            "written_by": writer,
            "max_difference": difference,
            "argmax_agreement": float((found.argmax(-1) == expected.argmax(-1)).mean()),
            "tolerance": cfg.tolerance,
            "checked_on": checked_on,
        }
        write_json(staging / "preprocessing.json", preprocessing(run, cfg.format))
        (staging / "model_card.md").write_text(model_card(run, result))
        _replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if made_parent and not any(final.parent.iterdir()):
            final.parent.rmdir()
        raise
    return {**result, "folder": str(final)}


def write_model(model: keras.Model, fmt: str, path: Path) -> None:
    """Writes `model` as `fmt` through Keras' `Model.export`, with any batch size."""
    spec = keras.InputSpec(shape=(None, *model.input_shape[1:]), dtype="float32", name=INPUT_NAME)
    kwargs = backend.export_options(fmt)
    # The converters print and log progress of their own; a failure raises.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # converters' deprecation notices, not the user's
        model.export(str(path), format=fmt, verbose=False, input_signature=[spec], **kwargs)


def write_checkpoint(checkpoint: str, fmt: str, path: str) -> None:
    """`write_model` for a checkpoint file: what a process of another backend runs."""
    from flexseg.runtime import prepare_process

    prepare_process()
    from flexseg.models import register_models

    register_models()

    write_model(keras.saving.load_model(checkpoint, compile=False), fmt, Path(path))


def _write_in_process(backend: str, run: Run, fmt: str, path: Path) -> None:
    checkpoint = run.run_dir / CHECKPOINTS / f"{run.checkpoint}.keras"
    code = (
        "import sys; from flexseg.predict.export import write_checkpoint; "
        "write_checkpoint(*sys.argv[1:])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint), fmt, str(path)],
        env={**os.environ, "KERAS_BACKEND": backend},
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise ExportError(
            f"writing format={fmt} with Keras on {backend} (the backend that writes it) failed: "
            f"{lines[-1] if lines else f'exit {result.returncode}'}; nothing was exported."
        )


def _require(module: str, extra: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{purpose} needs {module}, not installed: pip install '{extra}'")


def _keras_outputs(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(batch, training=False))


def _probabilities(outputs, from_logits: bool) -> np.ndarray:
    outputs = np.asarray(outputs, np.float64)
    if not from_logits:
        return outputs
    outputs = np.exp(outputs - outputs.max(-1, keepdims=True))
    return outputs / outputs.sum(-1, keepdims=True)


def _run_onnx(path: Path, batch: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: batch})[0]


def _run_litert(path: Path, batch: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    given, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(given["index"], batch.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(given["index"], batch)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


RUNTIMES = {
    "onnx": _run_onnx,
    "tf_saved_model": backend.run_saved_model,
    "litert": _run_litert,
    "torch": backend.run_exported_program,
}


def sample_batch(run: Run) -> tuple[np.ndarray, str]:
    """Model inputs of up to `SAMPLE_IMAGES` of the run's own images (test split first), read
    as in training; random inputs when the run's data are not where its config says."""
    dataset = run.cfg.dataset
    try:
        splits = find_samples(dataset, run.cfg.seed)
    except DataError:
        splits = {}
    split = next((s for s in ("test", "valid", "train") if splits.get(s)), None)
    if split is None:
        shape = [s or 64 for s in run.model.input_shape[1:]]
        batch = np.random.default_rng(0).normal(size=(SAMPLE_IMAGES, *shape))
        return batch.astype(np.float32), f"random inputs (no images found in {dataset.root})"
    samples = splits[split]
    count = min(SAMPLE_IMAGES, len(samples))
    picks = [samples[int(i)] for i in np.linspace(0, len(samples) - 1, count)]
    spec = read_spec(dataset, run.model.size_multiple)
    stats = None
    if spec.normalize == "group_zscore":
        groups = {s.group for s in picks}
        stats = compute_group_stats([s for s in samples if s.group in groups], spec)
    data = SegmentationDataset(
        picks,
        dataset.num_classes,
        count,
        spec,
        colormap_of(dataset),
        group_stats=stats,
        patch_size=dataset.patch_size,  # 3D: the patch at the centre of each volume
    )
    what = "images" if dataset.patch_size is None else "cases (centre patches)"
    return data[0][0].astype(np.float32), f"{count} {split} {what} of {dataset.name}"


def preprocessing(run: Run, fmt: str) -> dict:
    """How an image becomes the exported model's input and its output a mask: everything a
    program without flexseg needs (see examples/predict_onnx.py)."""
    dataset = run.cfg.dataset
    spec = read_spec(dataset, run.model.size_multiple)
    colormap = colormap_of(dataset) or ColorMap.default(dataset.num_classes)
    *size, channels = run.model.input_shape[1:]
    patches = dataset.patch_size is not None
    layout = "NXYZC" if patches else "NHWC"
    if patches:
        shape_rule, volume_rule = _window_rule(size), _whole_volume_rule()
    else:
        shape_rule = _size_rule(spec, tuple(size))
        volume_rule = (
            _volume_rule(spec, dataset.slice_axis) if dataset.slice_axis.isdigit() else None
        )
    return {
        "format": fmt,
        "model": MODEL_FILES[fmt],
        "input": {
            "name": INPUT_NAME,
            "layout": layout,
            "dtype": "float32",
            "shape": [None, *size, channels],
        },
        "output": {
            "layout": layout,
            "values": "logits" if run.cfg.model.from_logits else "probabilities",
            "classes": dataset.num_classes,
        },
        "channels": {
            "count": channels,
            "rule": "a colour image is averaged to gray for 1 channel; a gray image is "
            "repeated for 3",
        },
        "size": shape_rule,
        "intensity": _intensity_rule(spec, dataset.group_regex),
        **({"volume": volume_rule} if volume_rule else {}),
        "classes": [
            {"id": c.id, "name": name, "color": list(c.color)}
            for c, name in zip(colormap.classes, dataset.names, strict=True)
        ],
        "tta": _evaluation(run).get("tta", "none"),
        "postprocessing": {
            "rule": read_rule(run.run_dir),
            "steps": "class ids: the most probable class; with a threshold, the most probable "
            "foreground class wherever the foreground classes' probabilities sum to at least "
            "the threshold, else background. Then on each foreground class apart, with "
            "min_size: its connected components (4-neighbour) of fewer pixels become "
            "background; with largest: all but its largest component do",
        },
    }


def _size_rule(spec: ReadSpec, size: tuple[int, int]) -> dict:
    if spec.size_policy == "resize":
        rule = (
            "resize the unit-scaled image to input_size (bilinear) before normalising; resize "
            "the class probabilities back to the image's size (bilinear), then make class ids "
            "(postprocessing)"
        )
        return {"policy": "resize", "input_size": list(size), "rule": rule}
    rule = (
        "zero-pad the unit-scaled image, centred (the extra pixel bottom/right), to input_size "
        "and cut the padding off the output; an image larger than input_size is covered by "
        "tiles of input_size overlapping by tile_overlap, whose probabilities are averaged "
        "with gaussian weights (sigma 1/8 of the tile)"
    )
    return {"policy": "pad", "input_size": list(size), "tile_overlap": TILE_OVERLAP, "rule": rule}


def _window_rule(window: list[int]) -> dict:
    """How a 3D model of patch input `window` covers a whole volume."""
    rule = (
        "zero-pad the normalised volume, centred (the extra voxel after), to at least window "
        "along each axis; run the model on windows of that size whose starts step by "
        "(1 - overlap) of the window (the last one flush with the end); each voxel's "
        "probabilities are the mean of its windows' weighted by a gaussian centred on each "
        "window (sigma sigma_scale of its size per axis, scaled to a maximum of 1, weights "
        "below 1e-3 raised to it); cut the padding off"
    )
    return {
        "policy": "sliding_window",
        "window": list(window),
        "overlap": TILE_OVERLAP,
        "weighting": "gaussian",
        "sigma_scale": SIGMA_SCALE,
        "rule": rule,
    }


def _whole_volume_rule() -> dict:
    """How a 3D run reads a volume and writes its labels."""
    return {
        "axis_order": _RAS,
        "rule": "the whole volume (all channels, X, Y, Z) is the model's input by sliding "
        "windows (size); its class ids are turned back to the file's axis order, on its affine",
    }


def _intensity_rule(spec: ReadSpec, group_regex: str | None) -> dict:
    rules = {
        "scale01": "the unit-scaled image as it is",
        "none": "the raw intensities (unit-scaled image times the type's maximum)",
        "zscore": "the image standardised with its own statistics",
        "group_zscore": "the image standardised with the statistics of all images of its group "
        "(group_regex's first group on the file name; a file it does not match is its own group)",
        "volume_zscore": "each channel of the volume standardised with its own mean and standard "
        "deviation (over its non-zero voxels with ignore_zero, zero voxels staying 0; after "
        "clipping at clip_percentiles of those voxels), before it is cut into slices",
        "dataset_zscore": "each channel of the volume clipped at intensity_stats' low and high, "
        "then (x - mean) / std with intensity_stats' mean and std",
    }
    if spec.normalize in VOLUME_ONLY:
        return {
            "normalize": spec.normalize,
            "rule": rules[spec.normalize],
            "clip_percentiles": list(spec.clip_percentiles) if spec.clip_percentiles else None,
            "ignore_zero": spec.ignore_zero,
            "intensity_stats": [list(r) for r in spec.intensity_stats or []] or None,
        }
    return {
        "unit_scale": "integer images divided by their type's maximum (255, 65535), floats as is",
        "normalize": spec.normalize,
        "rule": rules[spec.normalize],
        "statistics": (
            f"per channel, from a {HISTOGRAM_BINS}-bin histogram of unit-scaled values in "
            f"[0, 1]{' over non-zero pixels' if spec.ignore_zero else ''}: clip bounds at "
            "clip_percentiles (bin centres), then the mean and standard deviation of the "
            "clipped values; input = (clip(x, low, high) - mean) / max(std, 1e-6)"
        ),
        "clip_percentiles": list(spec.clip_percentiles) if spec.clip_percentiles else None,
        "ignore_zero": spec.ignore_zero,
        "histogram_bins": HISTOGRAM_BINS,
        "group_regex": group_regex,
    }


_RAS = (
    "RAS: the volume's axes reordered and flipped so that axis 0 runs left to right, 1 "
    "posterior to anterior, 2 inferior to superior (nibabel's as_closest_canonical)"
)


def _volume_rule(spec: ReadSpec, axis: str) -> dict:
    """How a run on volume slices (its recorded slice axis) cuts a volume and stacks back."""
    return {
        "axis_order": _RAS,
        "slice_axis": int(axis),
        "context_slices": spec.context_slices,
        "rule": "each slice along slice_axis (its context_slices neighbours on each side, the "
        "edge slice repeated, as further channels: each channel's neighbours in order) is one "
        "model input; the slices' class ids are stacked along slice_axis and the volume turned "
        "back to the file's axis order, on its affine",
    }


def _evaluation(run: Run) -> dict:
    """The run's evaluation of its test split by this checkpoint, if there is one."""
    name = "test" if run.selected else f"test_{run.checkpoint}"
    path = run.run_dir / "evaluation" / name / "evaluation.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def model_card(run: Run, result: dict) -> str:
    """A short description of the exported model: data, split, recipe, scores, versions."""
    cfg, dataset = run.cfg, run.cfg.dataset
    scores = _evaluation(run)
    summary_path = run.run_dir / "train_summary.json"
    trained = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    lines = [
        f"# {dataset.name}: {type(run.model).__name__}, {cfg.model.num_classes} classes",
        "",
        f"Exported by flexseg {_version('flexseg')} as `{result['format']}` "
        f"(`{result['model']}`) from the run `{run.run_dir}`, checkpoint `{run.checkpoint}`.",
        "Prepare inputs as `preprocessing.json` says.",
        "",
        "## Data",
        f"- dataset `{dataset.name}` at `{dataset.root}`, classes {', '.join(dataset.names)}",
        f"- split by group (`group_regex`: `{dataset.group_regex}`): "
        f"{json.dumps(as_dict(dataset.split))}",
        f"- input {list(run.model.input_shape[1:])}, size policy `{dataset.size_policy}`, "
        f"normalisation `{dataset.normalize}`",
        "",
        "## Recipe",
        f"- model: {json.dumps(as_dict(cfg.model))}",
        f"- loss: {json.dumps(as_dict(cfg.loss))}",
        f"- augment: `{cfg.augment.name}`; seed {cfg.seed}",
        f"- trainer: {trained.get('epochs_run', '?')} of {cfg.trainer.epochs} epochs, "
        f"batch {cfg.trainer.batch_size}, "
        f"learning rate {cfg.trainer.learning_rate}, checkpoint chosen by "
        f"`{cfg.trainer.monitor}`",
        "",
        "## Evaluation",
    ]
    if scores:
        lines.append(
            f"Split `{scores['split']}` ({scores['images']} images, "
            f"{scores['volumes']} volumes), TTA `{scores['tta']}`:"
        )
        lines += [f"- {k}: {v:.4f}" for k, v in scores.items() if isinstance(v, float)][:12]
    else:
        lines.append("Not evaluated yet: `flexseg-evaluate run_dir=...`, then export again.")
    lines += [
        "",
        "## Export check",
        f"Loaded by its own runtime and run on {result['checked_on']}: class probabilities "
        f"within {result['max_difference']:.3g} of the Keras model's (allowed "
        f"{result['tolerance']}), argmax equal on {result['argmax_agreement']:.2%} of pixels.",
        "",
        "## Versions",
        f"- trained with Keras on `{trained.get('backend', 'unknown')}` in "
        f"{trained.get('precision', 'unknown')} precision; exported with Keras "
        f"{keras.__version__} on `{backend.name()}` (written by `{result['written_by']}`)",
        f"- python {platform.python_version()}, "
        + ", ".join(f"{p} {_version(p)}" for p in ("numpy", "tensorflow", "jax", "torch")),
    ]
    return "\n".join(lines) + "\n"


def _version(package: str) -> str:
    for name in (package, f"{package}-cpu"):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return "not installed"


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


# What an export folder holds: one of the model files, preprocessing.json and model_card.md.
EXPORT_FILES = {*MODEL_FILES.values(), "preprocessing.json", "model_card.md"}


def _not_an_export(folder: Path) -> str:
    """Why `folder` is not an earlier export that overwrite=true may replace (a file, a link,
    a folder with files flexseg-export does not write), or '' when it is one."""
    if folder.is_symlink() or not folder.is_dir():
        return "it is a file or a link, not a folder"
    names = sorted(entry.name for entry in folder.iterdir())
    others = [name for name in names if name not in EXPORT_FILES]
    if others:
        return f"it holds {', '.join(others[:5])}" + (" ..." if len(others) > 5 else "")
    if "preprocessing.json" not in names:
        return "it has no preprocessing.json"
    return ""


def _replace(staging: Path, final: Path) -> None:
    """Moves the checked export into place; an export it replaces goes only after that."""
    if not final.exists():
        staging.rename(final)
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    final.rename(old)
    staging.rename(final)
    shutil.rmtree(old)


__all__ = ["EXPORT_FORMATS", "export", "preprocessing", "model_card", "write_model"]
