"""Feeding the model: the loader by worker processes and cache, evaluation and inference beside
the model's own inference speed, and the memory of a cached two-worker training; one run.

    python scripts/benchmark.py --feed /path/to/lgg-flair-80 [--rounds 3]

Every figure is the median of `--rounds` interleaved rounds. Writes benchmarks/feed.json and
benchmarks/feed.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def loader_rates(data: Path, rounds: int, batches: int) -> list[dict]:
    """Loader images/s: 128 and 256 pixels, uncached and cached, 0 (the main process), 1, 2
    and `auto` worker processes, light augmentation, lgg's group z-scoring. The loaders of
    one size and cache run side by side, their timed windows alternating round by round."""
    from flexseg.commands import load_config
    from flexseg.data.dataset import SegmentationDataset, compute_group_stats
    from flexseg.data.transforms import build_augmentation
    from flexseg.data.workers import resolve_workers
    from flexseg.from_config import colormap_of, find_samples, read_spec

    cfg = load_config(["experiment=lgg", f"dataset.root={data}", "augment=light"])
    splits = find_samples(cfg.dataset, cfg.seed)
    every = [s for split in splits.values() for s in split]
    stats = compute_group_stats(every, read_spec(cfg.dataset, 16))
    cache_dir = Path(tempfile.mkdtemp(prefix="flexseg-bench-cache-"))
    counts = sorted({0, 1, 2, resolve_workers("auto")})
    rates: dict[tuple, list[float]] = {}
    for size in (128, 256):
        spec = read_spec(dataclasses.replace(cfg.dataset, image_size=[size, size]), 16)
        augment = build_augmentation(cfg.augment.transforms, (size, size))
        for cache in ("none", "disk"):
            loaders = {
                workers: SegmentationDataset(
                    every,
                    2,
                    16,
                    spec,
                    colormap_of(cfg.dataset),
                    augment,
                    shuffle=True,
                    group_stats=stats,
                    cache=cache,
                    cache_dir=cache_dir,
                    workers=workers,
                )  # fmt: skip
                for workers in counts
            }
            at = {}
            for ds in loaders.values():
                ds[0]  # the worker processes start
            time.sleep(5)  # every worker has started, its queue is full
            for workers, ds in loaders.items():
                at[workers] = 1 + (ds.pool.depth if ds.pool else 0)
                for i in range(1, at[workers]):  # the batches made while waiting
                    ds[i]
            for round_ in range(rounds):
                for workers, ds in loaders.items():
                    start, images = time.perf_counter(), 0
                    for _ in range(batches):
                        if at[workers] == len(ds):
                            ds.on_epoch_end()
                            at[workers] = 0
                        images += len(ds[at[workers]][0])
                        at[workers] += 1
                    rate = images / (time.perf_counter() - start)
                    rates.setdefault((size, cache, workers), []).append(rate)
                    print(f"round {round_ + 1} loader {size} {cache:<4} workers={workers} "
                          f"{rate:7.1f} img/s", flush=True)  # fmt: skip
            for ds in loaders.values():
                if ds.pool is not None:
                    ds.pool.close()
    return [
        {"size": size, "cache": cache, "workers": workers, "img_s": statistics.median(r)}
        for (size, cache, workers), r in rates.items()
    ]


def tiny_run(data: Path, folder: Path) -> Path:
    """A run of experiment=lgg's network (weights barely trained: speed does not depend on
    them)."""
    run = folder / "run"
    subprocess.run(
        [sys.executable, "-m", "flexseg", "train", "experiment=lgg", f"dataset.root={data}",
         "trainer.epochs=1", "trainer.steps_per_epoch=2", "trainer.preview_images=0",
         "trainer.verbose=0", f"hydra.run.dir={run}"],
        check=True, cwd=ROOT, capture_output=True,
    )  # fmt: skip
    return run


def prediction_rates(run: Path, folder: Path, rounds: int) -> dict:
    """The model's own inference images/s (compiled, batch 16) and flexseg-evaluate's and
    flexseg-infer's with flip TTA (two forward passes per image) on the test split."""
    import numpy as np

    from flexseg.from_config import find_samples
    from flexseg.predict.evaluation import evaluate
    from flexseg.predict.inference import infer
    from flexseg.runs import load_run

    loaded = load_run(run)
    test = find_samples(loaded.cfg.dataset, loaded.cfg.seed)["test"]
    listing = folder / "test_images.txt"
    listing.write_text("\n".join(str(s.image) for s in test))
    batch = np.random.default_rng(0).normal(size=(16, *loaded.model.input_shape[1:]))
    batch = batch.astype("float32")
    for _ in range(3):
        loaded.model.predict_on_batch(batch)
    model, evaluation, inference = [], [], []
    for round_ in range(rounds):
        start = time.perf_counter()
        for _ in range(20):
            loaded.model.predict_on_batch(batch)
        model.append(20 * 16 / (time.perf_counter() - start))
        start = time.perf_counter()
        evaluate({"run_dir": str(run), "split": "test", "tta": "flip"})
        evaluation.append(len(test) / (time.perf_counter() - start))
        start = time.perf_counter()
        out = folder / f"predictions_{round_}"
        infer({"run_dir": str(run), "input": str(listing), "output": str(out), "tta": "flip"})
        inference.append(len(test) / (time.perf_counter() - start))
        rates = f"evaluate {evaluation[-1]:.1f} img/s, infer {inference[-1]:.1f} img/s"
        print(f"round {round_ + 1} model {model[-1]:.1f} img/s, {rates}", flush=True)
    m, e, i = (statistics.median(v) for v in (model, evaluation, inference))
    return {
        "test_images": len(test),
        "model_img_s": m,
        "evaluate_img_s": e,
        "infer_img_s": i,
        "evaluate_share": 2 * e / m,  # two forward passes per image with flip TTA
        "infer_share": 2 * i / m,
    }


def peak_memory(data: Path, folder: Path) -> dict:
    """Peak memory (PSS: shared pages counted once) of a 2-worker memory-cached training of
    experiment=lgg at 128 x 128, its loader processes included."""
    command = [
        sys.executable, "-m", "flexseg", "train", "experiment=lgg", f"dataset.root={data}",
        "trainer.workers=2", "dataset.cache=memory", "trainer.epochs=1",
        "trainer.steps_per_epoch=40", "trainer.preview_images=0", "trainer.verbose=0",
        f"hydra.run.dir={folder / 'memory_run'}",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL)
    peak, done = [0, 0], threading.Event()

    def sample():
        while not done.is_set():
            pids = [process.pid, *_children(process.pid)]
            total = sum(_pss_kib(pid) for pid in pids)
            peak[0], peak[1] = max(peak[0], total), max(peak[1], len(pids))
            time.sleep(0.25)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    code = process.wait()
    done.set()
    watcher.join()
    return {"exit_code": code, "peak_pss_gib": peak[0] / 2**20, "processes": peak[1]}


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        for child in (task / "children").read_text().split():
            found += [int(child), *_children(int(child))]
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def main(data: str, rounds: int = 3, batches: int = 40) -> None:
    from flexseg.runtime import prepare_process

    prepare_process()
    data = Path(data).resolve()
    folder = Path(tempfile.mkdtemp(prefix="flexseg-bench-feed-"))
    loader = loader_rates(data, rounds, batches)
    predictions = prediction_rates(tiny_run(data, folder), folder, rounds)
    memory = peak_memory(data, folder)
    results = {
        "cores": len(os.sched_getaffinity(0)),
        "backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
        "loader": loader,
        "prediction": predictions,
        "memory": memory,
    }
    out = ROOT / "benchmarks" / "feed.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    out.with_suffix(".md").write_text(markdown(results) + "\n")
    print(markdown(results))


def markdown(results: dict) -> str:
    rows = {(r["size"], r["cache"], r["workers"]): r["img_s"] for r in results["loader"]}
    lines = ["| size | cache | workers | img/s | vs 1 worker | cached vs uncached |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for (size, cache, workers), rate in sorted(rows.items()):
        one = rows.get((size, cache, 1))
        uncached = rows.get((size, "none", workers))
        lines.append(
            f"| {size} | {cache} | {workers} | {rate:.1f} | {rate / one:.2f} | "
            f"{rate / uncached:.2f} |"
        )
    p, m = results["prediction"], results["memory"]
    lines += [
        "",
        f"model inference {p['model_img_s']:.1f} img/s; evaluate {p['evaluate_img_s']:.1f} img/s "
        f"({p['evaluate_share']:.0%} of the model, flip TTA), infer {p['infer_img_s']:.1f} img/s "
        f"({p['infer_share']:.0%}) over {p['test_images']} test images",
        f"peak memory of a 2-worker cached training: {m['peak_pss_gib']:.2f} GiB PSS over "
        f"{m['processes']} processes (exit {m['exit_code']})",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main(*sys.argv[1:2], *(int(a) for a in sys.argv[2:4]))
