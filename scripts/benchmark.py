"""Training and inference speed of FlexUNet on every backend, beside hand-written PyTorch.

    python scripts/benchmark.py                                   # small and medium, all
    python scripts/benchmark.py --presets small --backends tensorflow pytorch-baseline
    python scripts/benchmark.py --presets reference --precision mixed_bfloat16   # on a GPU
    python scripts/benchmark.py --rounds 3      # three interleaved rounds, medians: steadier
    python scripts/benchmark.py --feed /data/lgg-flair-80 --rounds 3   # loader, evaluate, infer
    python scripts/benchmark.py --presets small --backends torch pytorch-baseline --profile 3

Each (preset, backend) runs in its own process: training images/s (after warm-up, the median
of `--repeats` windows of `--steps` steps on batches of `--batch-size`), inference images/s,
peak resident memory (and peak device memory on a GPU), forward FLOPs per image and the
achieved FLOP/s (forward + backward taken as 3x forward). `pytorch-baseline` is the same
network written by hand in PyTorch (`benchmarks/pytorch_flexunet.py`), timed as eager,
channels-last and `torch.compile`; the fastest variant is its record. The loader's images/s
with `augment=light` is measured once per preset. With `--rounds N` every measurement is
repeated N times, the backends interleaved, and the median round kept. Writes
`benchmarks/results.json` (a list of records) and `benchmarks/results.md`, with the machine,
versions and settings. `--feed` measures what feeds the model instead
(`scripts/benchmark_feed.py`): the loader by worker processes and cache, evaluation and
inference beside the model's own inference, and a cached training's memory. `--profile N`
adds, for Keras on torch and the hand-written network, the operators that took the most time
over N training steps (torch's profiler; the GPU's time where there is one); `--loss-share`
times Keras' step again with plain cross-entropy and no metrics, giving the share of a step
that CE + Dice and the metrics take; `--data-format` sets FlexUNet's layout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRESETS = {
    "small": {"size": 128, "base_filters": 16, "base_kernels": 3, "num_layers": 5},
    "medium": {"size": 256, "base_filters": 16, "base_kernels": 9, "num_layers": 6},
    "reference": {"size": 512, "base_filters": 16, "base_kernels": 9, "num_layers": 8},
}
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
BACKENDS = (*KERAS_BACKENDS, "pytorch-baseline")


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def batch(preset: dict, batch_size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    size = preset["size"]
    x = rng.standard_normal((batch_size, size, size, 3)).astype("float32")
    labels = (rng.random((batch_size, size, size)) > 0.9).astype("int64")
    return x, labels


def timed_windows(step, images_per_step: int, steps: int, repeats: int, warmup: int) -> float:
    """Median images/s over `repeats` windows of `steps` calls, after `warmup` calls."""
    for _ in range(warmup):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * images_per_step / (time.perf_counter() - start))
    return statistics.median(rates)


def keras_worker(preset_name: str, args) -> list[dict]:
    import keras
    import numpy as np

    from flexseg import backend
    from flexseg.losses import CrossEntropyDice
    from flexseg.metrics import segmentation_metrics
    from flexseg.models import FlexUNet, forward_flops
    from flexseg.models.flex_unet import resolve_data_format
    from flexseg.models.inference import inference_model
    from flexseg.training.setup import resolve_jit_compile

    preset = PRESETS[preset_name]
    keras.mixed_precision.set_global_policy(args.precision)
    start = time.perf_counter()
    model = FlexUNet(
        input_shape=(preset["size"], preset["size"], 3),
        num_classes=2,
        base_filters=preset["base_filters"],
        base_kernels=preset["base_kernels"],
        num_layers=preset["num_layers"],
        normalization="none",  # as the hand-written baseline
        data_format=args.data_format,
    )
    jit = resolve_jit_compile(args.jit_compile)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=CrossEntropyDice(),
        metrics=segmentation_metrics(2),
        jit_compile=jit,
    )
    x, labels = batch(preset, args.batch_size)
    # On the device already, as the hand-written baseline's batch is: time the step, not the copy.
    x = keras.ops.convert_to_tensor(x)
    y = keras.ops.convert_to_tensor(np.eye(2, dtype="float32")[labels])
    model.train_on_batch(x, y)
    first_step_s = time.perf_counter() - start
    train = timed_windows(
        lambda: model.train_on_batch(x, y), len(x), args.steps, args.repeats, args.warmup
    )
    # What flexseg-evaluate and flexseg-infer predict with: the model rebuilt for inference,
    # in 16 bits where training is.
    predictor = inference_model(model, args.precision.removeprefix("mixed_"))
    infer = timed_windows(
        lambda: keras.ops.convert_to_numpy(predictor.predict_on_batch(x)),
        len(x),
        args.steps,
        args.repeats,
        args.warmup,
    )
    flops = forward_flops(model)
    extra = {}
    if args.profile and backend.name() == "torch":
        extra["profile"] = torch_profile(lambda: model.train_on_batch(x, y), args.profile)
    if args.loss_share:
        # The same model with plain cross-entropy and no metrics: what CE + Dice and the
        # metrics add to a step.
        model.compile(
            optimizer=keras.optimizers.Adam(1e-3),
            loss=keras.losses.CategoricalCrossentropy(),
            jit_compile=jit,
        )
        model.train_on_batch(x, y)
        bare = timed_windows(
            lambda: model.train_on_batch(x, y), len(x), args.steps, args.repeats, args.warmup
        )
        extra["bare_train_img_s"] = round(bare, 2)
        extra["loss_metrics_share"] = round(1 - train / bare, 3)
    return [
        {
            **extra,
            "backend": backend.name(),
            "variant": f"keras jit_compile={jit} {resolve_data_format(args.data_format)}",
            "xla_flags": os.environ.get("XLA_FLAGS") if backend.name() == "jax" else None,
            "device": device_name(),
            "params": model.count_params(),
            "train_img_s": round(train, 2),
            "infer_img_s": round(infer, 2),
            "first_step_s": round(first_step_s, 1),
            "gflops_per_image": round(flops / 1e9, 3),
            "achieved_gflop_s": round(3 * flops * train / 1e9, 1),
            "peak_rss_mb": peak_rss_mb(),
            "peak_device_mb": peak_device_mb(),
        }
    ]


def torch_worker(preset_name: str, args) -> list[dict]:
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.pytorch_flexunet import TorchFlexUNet, ce_dice_loss

    preset = PRESETS[preset_name]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    x_np, labels_np = batch(preset, args.batch_size)
    autocast = args.precision != "float32"
    dtype = torch.bfloat16 if args.precision == "mixed_bfloat16" else torch.float16
    records = []
    for variant in args.torch_variants:
        torch.manual_seed(0)
        model = TorchFlexUNet(
            3, 2, preset["base_filters"], preset["base_kernels"], preset["num_layers"]
        ).to(device)
        x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous().to(device)
        target = torch.from_numpy(labels_np).to(device)
        if variant in ("channels_last", "compile"):
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        net = torch.compile(model) if variant == "compile" else model
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)

        def train_step(net=net, optimizer=optimizer, x=x, target=target):
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device, dtype=dtype, enabled=autocast):
                loss = ce_dice_loss(net(x).float(), target)
            loss.backward()
            optimizer.step()
            if device == "cuda":
                torch.cuda.synchronize()

        def infer_step(net=net, x=x):
            with torch.inference_mode(), torch.autocast(device, dtype=dtype, enabled=autocast):
                net(x).softmax(1).cpu()

        start = time.perf_counter()
        net.train()
        train_step()
        first_step_s = time.perf_counter() - start
        train = timed_windows(train_step, len(x_np), args.steps, args.repeats, args.warmup)
        profile = torch_profile(train_step, args.profile) if args.profile else None
        net.eval()
        infer = timed_windows(infer_step, len(x_np), args.steps, args.repeats, args.warmup)
        records.append(
            {
                **({"profile": profile} if profile else {}),
                "backend": "pytorch",
                "variant": variant,
                "device": device_name(),
                "params": sum(p.numel() for p in model.parameters()),
                "train_img_s": round(train, 2),
                "infer_img_s": round(infer, 2),
                "first_step_s": round(first_step_s, 1),
                "peak_rss_mb": peak_rss_mb(),
                "peak_device_mb": peak_device_mb(),
            }
        )
    return records


def torch_profile(step, steps: int, top: int = 15) -> list[dict]:
    """The `top` operators by their own time (the GPU's where there is one) over `steps`
    calls of `step`, per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        if cuda:
            torch.cuda.synchronize()
    averages = prof.key_averages()
    fields = ("self_device_time_total", "self_cuda_time_total") if cuda else ()
    field = next((f for f in fields if hasattr(averages[0], f)), "self_cpu_time_total")
    events = sorted(averages, key=lambda e: getattr(e, field), reverse=True)
    total = sum(getattr(e, field) for e in events) / 1000 / steps
    return [
        {
            "op": e.key[:80],
            "ms_per_step": round(getattr(e, field) / 1000 / steps, 2),
            "share": round(getattr(e, field) / 1000 / steps / total, 3),
            "calls_per_step": round(e.count / steps, 1),
        }
        for e in events[:top]
    ]


def loader_worker(preset_name: str, args) -> list[dict]:
    from flexseg.commands import load_config
    from flexseg.from_config import build_datasets, find_samples

    size = PRESETS[preset_name]["size"]
    overrides = [
        f"dataset.image_size=[{size},{size}]",
        "dataset.size_policy=resize",
        "dataset.channels=3",
        "dataset.cache=none",
        "augment=light",
        f"trainer.batch_size={args.batch_size}",
        *args.loader_overrides,
    ]
    cfg = load_config(overrides)
    splits = find_samples(cfg.dataset, cfg.seed)
    every = [s for samples in splits.values() for s in samples]
    data = build_datasets(cfg, {"train": every})["train"]
    data[0]
    start = time.perf_counter()
    images = sum(len(data[i][0]) for i in range(len(data)))
    rate = images / (time.perf_counter() - start)
    return [{"loader_img_s": round(rate, 1), "loader_images": images, "loader_data": overrides}]


def device_name() -> str:
    """The GPU's name (from nvidia-smi, which every CUDA machine has), else the CPU's cores."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip().splitlines()[0]
    return f"CPU ({os.cpu_count()} cores)"


def peak_device_mb() -> float | None:
    """Peak GPU memory this process allocated, through whichever framework holds it."""
    backend = os.environ.get("KERAS_BACKEND")
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        if device.platform == "gpu":
            return round(device.memory_stats()["peak_bytes_in_use"] / 2**20, 1)
        return None
    if backend == "tensorflow":
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            return round(tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20, 1)
        return None
    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


# Dense tensor-core peaks (TFLOP/s) from NVIDIA's data sheets, SXM parts: 16-bit, and TF32
# for float32. FLOP utilisation = achieved / peak for the precision benchmarked.
GPU_PEAK_TFLOPS = {"H100": (989.0, 494.0), "H200": (989.0, 494.0), "A100": (312.0, 156.0)}


def peak_tflops(device: str, precision: str) -> float | None:
    for name, (half, tf32) in GPU_PEAK_TFLOPS.items():
        if name in device:
            return tf32 if precision == "float32" else half
    return None


def run_worker(kind: str, preset: str, backend: str, args) -> list[dict]:
    """Runs one measurement in a fresh process with its own KERAS_BACKEND."""
    env = {**os.environ, "KERAS_BACKEND": backend if backend in KERAS_BACKENDS else "torch"}
    if kind == "loader":  # the loader needs Keras only for its config; any installed backend
        env["KERAS_BACKEND"] = next((b for b in args.backends if b in KERAS_BACKENDS), "torch")
    command = [sys.executable, __file__, "--worker", kind, "--presets", preset, *args.passthrough]
    try:
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout
        )
    except subprocess.TimeoutExpired:
        print(f"  {kind} {preset} {backend} ran past --timeout {args.timeout} s", file=sys.stderr)
        return []
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-5:])
        print(f"  {kind} {preset} {backend} failed:\n{tail}", file=sys.stderr)
        return []
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import importlib.metadata as md

    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
        cpu = names[0] if names else cpu
    versions = {}
    for package in ("keras", "tensorflow-cpu", "tensorflow", "jax", "torch", "numpy"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[package] = md.version(package)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def markdown(records: list[dict], info: dict) -> str:
    gpu = any(r.get("peak_device_mb") for r in records)
    columns = [
        ("preset", lambda r: r["preset"]),
        ("backend", lambda r: r["backend"]),
        ("variant", lambda r: r.get("variant", "")),
        ("device", lambda r: r["device"]),
        ("train img/s", lambda r: r["train_img_s"]),
        ("vs best PyTorch", lambda r: ratio_to_baseline(r, records)),
        ("infer img/s", lambda r: r["infer_img_s"]),
        ("peak RSS MB", lambda r: r["peak_rss_mb"]),
        *([("peak GPU MB", lambda r: r.get("peak_device_mb") or "")] if gpu else []),
        ("GFLOP/s achieved", lambda r: r.get("achieved_gflop_s", "")),
        *([("FLOP utilisation", lambda r: percent(r.get("flop_utilisation")))] if gpu else []),
        ("loader img/s", lambda r: r.get("loader_img_s", "")),
    ]
    lines = [
        f"Machine: {info['machine']['cpu']}, {info['machine']['cores']} cores; "
        + ", ".join(f"{k} {v}" for k, v in info["machine"]["versions"].items()),
        f"Settings: batch {info['settings']['batch_size']}, precision "
        f"{info['settings']['precision']}, median of {info['settings']['repeats']} windows of "
        f"{info['settings']['steps']} steps, median of {info['settings']['rounds']} interleaved "
        f"round(s); {info['machine']['date']}.",
        "",
        "| " + " | ".join(name for name, _ in columns) + " |",
        "|" + "---|" * len(columns),
    ]
    for r in records:
        lines.append("| " + " | ".join(str(cell(r)) for _, cell in columns) + " |")
    return "\n".join(lines) + "\n"


def ratio_to_baseline(record: dict, records: list[dict]) -> str:
    baseline = next(
        (
            b
            for b in records
            if b["preset"] == record["preset"] and b["backend"] == "pytorch-baseline"
        ),
        None,
    )
    return f"{record['train_img_s'] / baseline['train_img_s']:.2f}" if baseline else ""


def percent(fraction: float | None) -> str:
    return f"{100 * fraction:.1f}%" if fraction is not None else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["small", "medium"], choices=PRESETS)
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=3, help="timed windows (median)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--precision", default="float32",
                        choices=["float32", "mixed_float16", "mixed_bfloat16"])  # fmt: skip
    parser.add_argument("--jit-compile", default="auto", help="trainer.jit_compile for Keras")
    parser.add_argument("--data-format", default="auto", help="FlexUNet's data_format")
    parser.add_argument(
        "--torch-variants", nargs="+", default=["eager", "channels_last", "compile"]
    )
    parser.add_argument(
        "--loader-overrides", nargs="*", default=[], help="config overrides of the loader's data"
    )
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="measure everything this many times, backends interleaved; keep each median",
    )  # fmt: skip
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--no-loader", action="store_true", help="skip the loader measurement")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="STEPS",
        help="torch and Keras on torch: the top operators' times over this many steps",
    )  # fmt: skip
    parser.add_argument(
        "--loss-share", action="store_true",
        help="Keras: also time the step with plain cross-entropy and no metrics",
    )  # fmt: skip
    parser.add_argument("--feed", metavar="DATA", help="lgg-flair-80's folder: measure the feed")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results.json"))
    parser.add_argument("--worker", choices=["keras", "torch", "loader"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.feed:
        import benchmark_feed  # beside this script

        benchmark_feed.main(args.feed, args.rounds)
        return
    if args.jit_compile in ("true", "false"):
        args.jit_compile = args.jit_compile == "true"

    if args.worker:
        from flexseg.runtime import prepare_process

        prepare_process()  # as flexseg's commands do
        worker = {"keras": keras_worker, "torch": torch_worker, "loader": loader_worker}
        print(json.dumps(worker[args.worker](args.presets[0], args)))
        return

    args.passthrough = [
        "--batch-size", str(args.batch_size), "--steps", str(args.steps),
        "--repeats", str(args.repeats), "--warmup", str(args.warmup),
        "--precision", args.precision, "--jit-compile", str(args.jit_compile).lower(),
        "--data-format", args.data_format,
        "--profile", str(args.profile), *(["--loss-share"] if args.loss_share else []),
        "--torch-variants", *args.torch_variants, "--loader-overrides", *args.loader_overrides,
    ]  # fmt: skip
    info = {
        "machine": machine(),
        "settings": {
            k: getattr(args, k)
            for k in (
                "batch_size",
                "steps",
                "repeats",
                "warmup",
                "precision",
                "jit_compile",
                "data_format",
                "rounds",
            )
        },  # fmt: skip
    }
    measured: dict[tuple, list[dict]] = {}  # (preset, backend) -> one record per round
    loaders: dict[str, dict] = {}
    for round_ in range(args.rounds):
        for preset in args.presets:
            if preset not in loaders:
                found = [] if args.no_loader else run_worker("loader", preset, "loader", args)
                loaders[preset] = (found or [{}])[0]
            for backend in args.backends:
                kind = "torch" if backend == "pytorch-baseline" else "keras"
                for r in run_worker(kind, preset, backend, args):
                    if kind == "torch":
                        r["backend"] = f"pytorch-{r['variant']}"
                    r.update(preset=preset, batch_size=args.batch_size, precision=args.precision)
                    r.update(loaders[preset])
                    measured.setdefault((preset, r["backend"]), []).append(r)
                    print(
                        f"round {round_ + 1} {preset:<9} {r['backend']:<22} "
                        f"train {r['train_img_s']:>7} img/s   infer {r['infer_img_s']:>7} img/s   "
                        f"peak RSS {r['peak_rss_mb']} MB",
                        flush=True,
                    )
                    if "loss_metrics_share" in r:
                        print(f"  CE + Dice and metrics: {r['loss_metrics_share']:.1%} of a step")
                    for op in r.get("profile", []):
                        print(f"  {op['ms_per_step']:>9} ms {op['share']:>6.1%}  {op['op']}")
                write_results(median_records(measured), info, args)  # a stopped run keeps them
    print(f"wrote {args.output} and {Path(args.output).with_suffix('.md')}")


def median_records(measured: dict[tuple, list[dict]]) -> list[dict]:
    """Per preset and backend, the round with the median training speed; then per preset the
    fastest hand-written variant again as `pytorch-baseline`."""
    records = []
    for rounds in measured.values():
        ranked = sorted(rounds, key=lambda r: r["train_img_s"])
        records.append({**ranked[(len(ranked) - 1) // 2], "rounds": len(ranked)})
    for preset in dict.fromkeys(r["preset"] for r in records):
        variants = [
            r for r in records if r["preset"] == preset and r["backend"].startswith("pytorch")
        ]
        if variants:
            best = max(variants, key=lambda r: r["train_img_s"])
            records.append({**best, "backend": "pytorch-baseline"})
    return records


def write_results(records: list[dict], info: dict, args) -> None:
    for r in records:  # the baseline runs the same network: the same FLOPs
        keras_record = next(
            (k for k in records if k["preset"] == r["preset"] and "gflops_per_image" in k), None
        )
        if keras_record and "gflops_per_image" not in r:
            r["gflops_per_image"] = keras_record["gflops_per_image"]
            r["achieved_gflop_s"] = round(3 * r["gflops_per_image"] * r["train_img_s"], 1)
        peak = peak_tflops(r["device"], args.precision)
        if peak and "achieved_gflop_s" in r:
            r["peak_tflop_s"] = peak
            r["flop_utilisation"] = round(r["achieved_gflop_s"] / (peak * 1000), 4)
        r.update(info)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(records, indent=2))
    output.with_suffix(".md").write_text(markdown(records, info))


if __name__ == "__main__":
    main()
