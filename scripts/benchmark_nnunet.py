"""flexseg's planned recipe beside nnU-Net v2 on the same data, split, machine and time budget.

    python scripts/benchmark_nnunet.py hippocampus --root /data/msd-hippocampus-160
    python scripts/benchmark_nnunet.py lgg --root /data/lgg-flair-80
    python scripts/benchmark_nnunet.py hippocampus --root ... --flexseg-run runs/hippo/run

Each side gets `--minutes` (30) of planning, preprocessing and training on this machine's CPU:
flexseg `flexseg-plan` + `flexseg-train` (or a finished planned run, `--flexseg-run`); nnU-Net
its own fingerprint, plan and preprocessing (`nnUNetv2_plan_and_preprocess`) and training of
its `3d_fullres` (hippocampus) or `2d` (lgg) configuration with `nnUNetTrainerBudget`: nnU-Net's
trainer with 50 iterations an epoch and its poly schedule fitted, after the second epoch, to
the epochs that fit the budget (`benchmarks/nnunet_budget_trainer.py`). nnU-Net predicts the
test split (its default mirroring) and `flexseg-evaluate predictions=<folder>` scores both
sides against the same masks. nnU-Net lives in a virtual environment of its own
(`benchmarks/.venv-nnunet`: `pip install torch==2.13.0 nnunetv2`), never in flexseg's.
Results: benchmarks/nnunet.json (merged per data set) and benchmarks/nnunet.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
VENV = BENCH / ".venv-nnunet"
TRAINER = "nnUNetTrainerBudget"
SETS = {
    # name: (flexseg dataset option, nnU-Net id, configuration, flexseg tta, extra plan overrides)
    "hippocampus": ("hippocampus", 4, "3d_fullres", "mirror", []),
    "lgg": ("lgg", 5, "2d", "flip", ["dataset.split.fractions={train:0.65,valid:0.1,test:0.25}"]),
}
FLEXSEG = [sys.executable, "-m", "flexseg"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", choices=sorted(SETS), nargs="?")
    parser.add_argument("--root", help="the data set's folder")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--work", default=str(BENCH / "work"), help="nnU-Net's folders, runs")
    parser.add_argument("--flexseg-run", help="a finished planned flexseg run to score")
    parser.add_argument("--skip-nnunet", action="store_true", help="only the flexseg side")
    parser.add_argument(
        "--markdown-only", action="store_true", help="nnunet.md again from nnunet.json"
    )
    args = parser.parse_args()
    if args.markdown_only:
        merged = json.loads((BENCH / "nnunet.json").read_text())
        (BENCH / "nnunet.md").write_text(markdown(merged))
        return
    if not args.dataset or not args.root:
        parser.error("give the data set and --root")
    option, number, configuration, tta, extra = SETS[args.dataset]
    work = Path(args.work).resolve() / args.dataset
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    overrides = [f"dataset={option}", f"dataset.root={Path(args.root).resolve()}", *extra]

    flexseg = flexseg_side(args, overrides, work, tta, env)
    result = {"dataset": args.dataset, "machine": machine(), "minutes": args.minutes}
    result["flexseg"] = flexseg
    if not args.skip_nnunet:
        result["nnunet"] = nnunet_side(args, flexseg["run_dir"], number, configuration, work)
    write(result)


def flexseg_side(args, overrides: list[str], work: Path, tta: str, env: dict) -> dict:
    if args.flexseg_run:
        run = Path(args.flexseg_run).resolve()
        times = {}
    else:
        start = time.monotonic()
        plan_dir = work / "flexseg_plan"
        shutil.rmtree(plan_dir, ignore_errors=True)
        out = run_checked(
            [*FLEXSEG, "plan", *overrides, f"plan.minutes={args.minutes}", "plan.refresh=true",
             f"hydra.run.dir={plan_dir}"], env,
        )  # fmt: skip
        planned = time.monotonic()
        experiment = next(line for line in out.splitlines() if line.startswith("train it:"))
        run = work / f"flexseg_run_{time.strftime('%Y%m%d_%H%M%S')}"
        run_checked(
            [*FLEXSEG, "train", experiment.split()[-1], f"hydra.run.dir={run}"], env
        )  # fmt: skip
        times = {"plan_s": planned - start, "train_s": time.monotonic() - planned}
    start = time.monotonic()
    run_checked([*FLEXSEG, "evaluate", f"run_dir={run}", f"tta={tta}"], env)
    times["inference_s"] = time.monotonic() - start
    scores = json.loads((run / "evaluation" / "test" / "evaluation.json").read_text())
    found = sorted(run.parent.glob("*/plan.json"))  # the plan beside the run
    plan = json.loads(found[-1].read_text()) if found else None
    summary = json.loads((run / "train_summary.json").read_text())
    return {
        "run_dir": str(run),
        "tta": tta,
        "times_s": {k: round(v, 1) for k, v in times.items()},
        "epochs": summary["epochs_run"],
        "train_seconds": summary["train_seconds"],
        "scores": case_scores(scores),
        "plan": plan["settings"] if plan else config_of(run),
    }


def config_of(run: Path) -> dict:
    import yaml

    cfg = yaml.safe_load((run / "config.yaml").read_text())
    keep = ("patch_size", "image_size", "normalize", "clip_percentiles")
    model = ("spatial_dims", "num_layers", "base_filters", "normalization")
    return {
        "dataset": {k: cfg["dataset"].get(k) for k in keep},
        "model": {k: cfg["model"].get(k) for k in model},
        "trainer": {k: cfg["trainer"].get(k) for k in ("batch_size", "epochs", "max_minutes")},
    }


def case_scores(evaluation: dict) -> dict:
    """Dice per case and label, and the means over cases."""
    names = [n for n in evaluation["per_class"] if n != "background"]
    cases = {}
    for case, row in evaluation["per_volume"].items():
        cases[case] = {n: row.get(f"dice_{n}", row["fg_dice"]) for n in names} or {
            "foreground": row["fg_dice"]
        }
        cases[case]["foreground"] = row["fg_dice"]
    means = {n: float(np.nanmean([c[n] for c in cases.values()])) for n in names}
    labels = float(np.mean(list(means.values()))) if means else float("nan")
    return {
        "per_case": cases,
        "mean_per_label": means,
        "mean_of_labels": labels,
        "foreground_mean": float(evaluation["fg_dice_volume_mean"]),
    }


def nnunet_side(args, flexseg_run: str, number: int, configuration: str, work: Path) -> dict:
    python = ensure_venv()
    raw, pre, results = work / "nnUNet_raw", work / "nnUNet_preprocessed", work / "nnUNet_results"
    for folder in (raw, pre, results):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    env = {
        **os.environ, "nnUNet_raw": str(raw), "nnUNet_preprocessed": str(pre),
        "nnUNet_results": str(results), "nnUNet_n_proc_DA": "1", "OMP_NUM_THREADS": "2",
    }  # fmt: skip
    name = f"Dataset{number:03d}_{args.dataset}"
    splits, test = convert(args.dataset, Path(args.root).resolve(), raw / name, flexseg_run)
    start = time.monotonic()
    run_checked(
        [str(python.parent / "nnUNetv2_plan_and_preprocess"), "-d", str(number), "-c",
         configuration, "-np", "2", "--verify_dataset_integrity"], env,
    )  # fmt: skip
    preprocessed = time.monotonic()
    (pre / name / "splits_final.json").write_text(json.dumps([splits]))
    budget = 60.0 * args.minutes - (preprocessed - start) - 60.0  # its own final validation
    env["FLEXSEG_BUDGET_S"] = str(max(60.0, budget))
    run_checked(
        [str(python.parent / "nnUNetv2_train"), str(number), configuration, "0", "-tr", TRAINER,
         "-device", "cpu"], env,
    )  # fmt: skip
    trained = time.monotonic()
    predictions = work / "nnunet_predictions"
    shutil.rmtree(predictions, ignore_errors=True)
    run_checked(
        [str(python.parent / "nnUNetv2_predict"), "-i", str(test), "-o", str(predictions), "-d",
         str(number), "-c", configuration, "-f", "0", "-tr", TRAINER, "-device", "cpu"], env,
    )  # fmt: skip
    predicted = time.monotonic()
    fenv = {**os.environ, "KERAS_BACKEND": os.environ.get("KERAS_BACKEND", "tensorflow")}
    run_checked(
        [*FLEXSEG, "evaluate", f"run_dir={flexseg_run}", f"predictions={predictions}"], fenv
    )
    folder = Path(flexseg_run) / "evaluation" / f"test_given_{predictions.name}"
    scores = json.loads((folder / "evaluation.json").read_text())
    model = results / name / f"{TRAINER}__nnUNetPlans__{configuration}"
    plans = json.loads((model / "plans.json").read_text())
    log = "\n".join(p.read_text() for p in sorted((model / "fold_0").glob("training_log_*.txt")))
    return {
        "configuration": configuration,
        "trainer": f"{TRAINER}: nnUNetTrainer, 50 iterations an epoch, the poly schedule fitted "
        "to the epochs that fit the budget",
        "times_s": {
            "plan_and_preprocess_s": round(preprocessed - start, 1),
            "train_s": round(trained - preprocessed, 1),
            "inference_s": round(predicted - trained, 1),
        },
        "epochs": len(re.findall(r": Epoch \d+ ?$", log, re.M)) if log else None,
        "scores": case_scores(scores),
        "plan": plans["configurations"][configuration],
        "version": subprocess.run(
            [str(python), "-c", "import importlib.metadata as m; print(m.version('nnunetv2'))"],
            capture_output=True,
            text=True,
        ).stdout.strip(),  # fmt: skip
    }


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, "torch==2.13.0"], check=True)  # the CPU build, first
        subprocess.run([*pip, "nnunetv2"], check=True)
        # timm (through dynamic-network-architectures) asks for a torchvision that pulls a
        # CUDA build of torch; nnU-Net's own trainers import neither: the CPU build back.
        listed = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"],
                                capture_output=True, text=True, check=True).stdout  # fmt: skip
        cuda = [line.split("==")[0] for line in listed.splitlines()
                if line.startswith(("nvidia-", "cuda-", "triton", "torchvision"))]  # fmt: skip
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "-q", "torch", *cuda],
                       check=True)  # fmt: skip
        subprocess.run([*pip, "--no-deps", "torch==2.13.0"], check=True)
    site = subprocess.run(
        [str(python), "-c", "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # nnU-Net finds a trainer by importing every trainer module; the Primus ones import timm,
    # and timm a torchvision, which this CPU torch has not: they leave this copy.
    shutil.rmtree(Path(site) / "training" / "nnUNetTrainer" / "primus", ignore_errors=True)
    target = Path(site) / "training" / "nnUNetTrainer" / "variants" / "flexseg_benchmark"
    target.mkdir(parents=True, exist_ok=True)
    (target / "__init__.py").write_text("")
    shutil.copy(BENCH / "nnunet_budget_trainer.py", target / "nnunet_budget_trainer.py")
    return python


def split_of(flexseg_run: str) -> dict[str, list[str]]:
    """The flexseg run's samples per split, by name (cases, or 2D images)."""
    from flexseg.from_config import find_samples
    from flexseg.runs import read_run_config

    cfg = read_run_config(flexseg_run)
    found = find_samples(cfg.dataset, cfg.seed)
    return {split: [s.case or s.name for s in samples] for split, samples in found.items()}


def convert(dataset: str, root: Path, target: Path, flexseg_run: str) -> tuple[dict, Path]:
    """nnU-Net's raw folder of the train and valid samples (imagesTr, labelsTr), the test
    samples in imagesTs, and the split as nnU-Net's fold 0 (train / val)."""
    split = split_of(flexseg_run)
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    if dataset == "hippocampus":

        def place(name: str, folder: str) -> None:
            (target / folder / f"{name}_0000.nii.gz").symlink_to(
                root / "imagesTr" / f"{name}.nii.gz"
            )
            if folder == "imagesTr":
                (target / "labelsTr" / f"{name}.nii.gz").symlink_to(
                    root / "labelsTr" / f"{name}.nii.gz"
                )

        labels = {"background": 0, "Anterior": 1, "Posterior": 2}
        channels, ending = {"0": "MRI"}, ".nii.gz"
    else:  # lgg: RGB PNG slices, 0/255 masks
        import cv2

        def place(name: str, folder: str) -> None:
            (target / folder / f"{name}_0000.png").symlink_to(root / "images" / f"{name}.png")
            if folder == "imagesTr":
                mask = cv2.imread(str(root / "masks" / f"{name}.png"), cv2.IMREAD_GRAYSCALE)
                cv2.imwrite(str(target / "labelsTr" / f"{name}.png"), (mask > 127).astype(np.uint8))

        labels = {"background": 0, "abnormality": 1}
        channels, ending = {"0": "R", "1": "G", "2": "B"}, ".png"
    for folder, names in (
        ("imagesTr", split["train"] + split["valid"]),
        ("imagesTs", split["test"]),
    ):
        for name in names:
            place(name, folder)
    count = len(split["train"]) + len(split["valid"])
    manifest = {"channel_names": channels, "labels": labels, "numTraining": count,
                "file_ending": ending}  # fmt: skip
    (target / "dataset.json").write_text(json.dumps(manifest, indent=2))
    return {"train": split["train"], "val": split["valid"]}, target / "imagesTs"


def run_checked(command: list[str], env: dict) -> str:
    print("$", " ".join(command), flush=True)
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"failed ({result.returncode}): {' '.join(command)}\n{result.stderr[-3000:]}")
    return result.stdout


def machine() -> str:
    from flexseg.data.workers import usable_cores
    from flexseg.planner.measure import cpu_name

    return f"{usable_cores()} cores, {cpu_name()}"


def write(result: dict) -> None:
    path = BENCH / "nnunet.json"
    merged = json.loads(path.read_text()) if path.is_file() else {}
    merged[result["dataset"]] = result
    path.write_text(json.dumps(merged, indent=2))
    (BENCH / "nnunet.md").write_text(markdown(merged))
    print(f"wrote {path} and {BENCH / 'nnunet.md'}")


def markdown(merged: dict) -> str:
    lines = [
        "# flexseg's planned recipe beside nnU-Net v2", "",
        "Written by `scripts/benchmark_nnunet.py`: the same data, split, machine and time budget "
        "for both, each side planning and preprocessing inside its budget; both scored by "
        "`flexseg-evaluate` on the same test cases (Dice per case, then the mean over cases). "
        "The whole plans and every case's scores are in `benchmarks/nnunet.json`.", "",
    ]  # fmt: skip
    for name, r in merged.items():
        sides = [r["flexseg"], r.get("nnunet")]
        rows = [("mean Dice of the labels", [fmt(s["scores"]["mean_of_labels"]) if s else "-"
                                             for s in sides])]  # fmt: skip
        for label in sides[0]["scores"]["mean_per_label"]:
            rows.append((f"Dice {label}", [fmt(s["scores"]["mean_per_label"][label]) if s else "-"
                                            for s in sides]))  # fmt: skip
        rows.append(("epochs", [s["epochs"] if s else "-" for s in sides]))
        for key in ("plan_s", "plan_and_preprocess_s", "train_s", "inference_s"):
            values = [s["times_s"].get(key) if s else None for s in sides]
            if any(v is not None for v in values):
                rows.append((key.removesuffix("_s").replace("_", " ") + " (s)",
                             ["-" if v is None else f"{v:.0f}" for v in values]))  # fmt: skip
        rows += plan_rows(sides[0]["plan"], sides[1]["plan"] if sides[1] else None)
        lines += [f"## {name}", "", f"{r['machine']}, {r['minutes']:g} minutes each.", ""]
        if sides[1]:
            lines += [f"nnU-Net {sides[1]['version']} `{sides[1]['configuration']}`, "
                      f"{sides[1]['trainer']}; flexseg with TTA `{sides[0]['tta']}`, nnU-Net "
                      "with its default mirroring.", ""]  # fmt: skip
        lines += ["| | flexseg (planned) | nnU-Net |", "|---|---|---|"]
        lines += [f"| {label} | {a} | {b} |" for label, (a, b) in rows]
        lines += ["", r["note"]] if r.get("note") else []  # what the numbers mean, by hand
        lines.append("")
    return "\n".join(lines) + "\n"


def plan_rows(flexseg: dict, nnunet: dict | None) -> list[tuple[str, list[str]]]:
    """The two plans' main settings side by side."""
    dataset, model, trainer = flexseg["dataset"], flexseg["model"], flexseg["trainer"]
    size = dataset.get("patch_size") or dataset.get("image_size")
    dims = model.get("spatial_dims", 2)
    base = model.get("base_filters", 16)
    ours = {
        "input (voxels or pixels)": " x ".join(map(str, size)) if size else "whole image",
        "batch": trainer.get("batch_size"),
        "levels, filters": f"{model.get('num_layers')}, "
        + "-".join(str(base * 2**i) for i in range(model.get("num_layers", 5))),
        "normalisation": f"{model.get('normalization', 'batch')}; {dataset.get('normalize')}",
        "configuration": f"{dims}D",
    }
    theirs = {}
    if nnunet:
        arch = nnunet.get("architecture", {}).get("arch_kwargs", {})
        features = arch.get("features_per_stage", [])
        norm = str(arch.get("norm_op", "")).rpartition(".")[2]
        theirs = {
            "input (voxels or pixels)": " x ".join(map(str, nnunet.get("patch_size", []))),
            "batch": nnunet.get("batch_size"),
            "levels, filters": f"{arch.get('n_stages')}, " + "-".join(map(str, features)),
            "normalisation": f"{norm}; {', '.join(nnunet.get('normalization_schemes', []))}",
            "configuration": f"{len(nnunet.get('patch_size', []))}D",
        }
    return [(k, [str(v), str(theirs.get(k, "-"))]) for k, v in ours.items()]


def fmt(value: float) -> str:
    return f"{value:.3f}"


if __name__ == "__main__":
    main()
