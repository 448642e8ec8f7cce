"""3D training and sliding-window speed: a 3D FlexUNet on every backend beside a 3D U-Net
written by hand in PyTorch (and MONAI's DynUNet, when a Python with MONAI is given).

    python scripts/benchmark_3d.py --rounds 3
    python scripts/benchmark_3d.py --rounds 3 --monai-python benchmarks/.venv-peers/bin/python

The network is experiment=hippocampus_3d's: patches of 40 x 56 x 40 voxels, one channel,
3 classes, base 16 filters, 4 levels, instance normalisation, batch 2, CE + Dice, Adam,
float32. Each measurement runs in its own process; with `--rounds N` all of them run N times,
interleaved (round 1: every backend and peer, then round 2, ...), and each keeps its median
round. Training patches/s: after warm-up steps, the median of `--repeats` windows of
`--steps` steps on a fixed batch. The hand-written network (`benchmarks/pytorch_unet3d.py`,
the same parameter count) is timed eager, channels-last-3d and `torch.compile`, its fastest
variant kept. Sliding window (Keras backends): a volume of `--volume` voxels predicted by
`flexseg.models.windows.sliding_window` (overlap 0.5, gaussian weights, windows in batches of
2), its window voxels per second beside the model's own forward throughput on batches of 2
windows (`predict_on_batch`), and output voxels per second. Writes
`benchmarks/results_3d.json` and `benchmarks/results_3d.md`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from scripts.benchmark import peak_rss_mb, timed_windows  # noqa: E402

PATCH = (40, 56, 40)
NET = {"channels": 1, "num_classes": 3, "base_filters": 16, "num_layers": 4}
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
TORCH_VARIANTS = ("eager", "channels_last_3d", "compile")


def batch(size: int, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((size, *PATCH, NET["channels"])).astype("float32")
    labels = rng.integers(0, NET["num_classes"], (size, *PATCH)).astype("int64")
    return x, labels


def keras_worker(args) -> list[dict]:
    import keras
    import numpy as np

    from flexseg import backend
    from flexseg.losses import CrossEntropyDice
    from flexseg.models import FlexUNet
    from flexseg.models.inference import inference_model
    from flexseg.models.windows import sliding_window, window_count
    from flexseg.training.setup import resolve_jit_compile

    model = FlexUNet(
        input_shape=(*PATCH, NET["channels"]),
        num_classes=NET["num_classes"],
        base_filters=NET["base_filters"],
        num_layers=NET["num_layers"],
        normalization="instance",
        spatial_dims=3,
    )
    jit = resolve_jit_compile("auto")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=CrossEntropyDice(), jit_compile=jit)
    x, labels = batch(args.batch_size)
    y = keras.ops.convert_to_tensor(np.eye(NET["num_classes"], dtype="float32")[labels])
    x = keras.ops.convert_to_tensor(x)
    train = timed_windows(
        lambda: model.train_on_batch(x, y), args.batch_size, args.steps, args.repeats, 2
    )
    predictor = inference_model(model, "float32")
    windows = keras.ops.convert_to_numpy(x)

    def forward(w):
        return keras.ops.convert_to_numpy(predictor.predict_on_batch(w))

    per_window = timed_windows(lambda: forward(windows), len(windows), args.steps, args.repeats, 2)
    volume = np.random.default_rng(1).standard_normal((*args.volume, NET["channels"]))
    volume = volume.astype("float32")
    count = window_count(args.volume, PATCH, 0.5)
    seconds = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        sliding_window(volume, forward, PATCH, 0.5, len(windows))
        seconds.append(time.perf_counter() - start)
    window_s = statistics.median(seconds)
    patch_voxels = math.prod(PATCH)
    return [
        {
            "backend": backend.name(),
            "variant": f"keras jit_compile={jit}",
            "params": model.count_params(),
            "train_patches_s": round(train, 3),
            "forward_voxels_s": round(per_window * patch_voxels),
            "window_voxels_s": round(count * patch_voxels / window_s),
            "output_voxels_s": round(math.prod(args.volume) / window_s),
            "windows": count,
            "sliding_vs_forward": round(count / window_s / per_window, 3),
            "peak_rss_mb": peak_rss_mb(),
        }
    ]


def torch_worker(args) -> list[dict]:
    import torch

    from benchmarks.pytorch_unet3d import TorchUNet3D, ce_dice_loss

    x_np, labels_np = batch(args.batch_size)
    records = []
    for variant in TORCH_VARIANTS:
        torch.manual_seed(0)
        model = TorchUNet3D(**NET)
        x = torch.from_numpy(x_np).permute(0, 4, 1, 2, 3).contiguous()
        target = torch.from_numpy(labels_np)
        if variant != "eager":
            model = model.to(memory_format=torch.channels_last_3d)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        net = torch.compile(model) if variant == "compile" else model
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)

        def step(net=net, optimizer=optimizer, x=x, target=target):
            optimizer.zero_grad(set_to_none=True)
            ce_dice_loss(net(x), target).backward()
            optimizer.step()

        net.train()
        train = timed_windows(step, args.batch_size, args.steps, args.repeats, 2)
        records.append(
            {
                "backend": "pytorch",
                "variant": variant,
                "params": sum(p.numel() for p in model.parameters()),
                "train_patches_s": round(train, 3),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    return records


def monai_worker(args) -> list[dict]:
    """MONAI's DynUNet of the same levels and filters (strided convolutions downsample, as
    nnU-Net's; its parameter count is its own), eager, channels-last-3d kept if faster."""
    import monai
    import torch
    from monai.networks.nets import DynUNet

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from pytorch_unet3d import ce_dice_loss

    x_np, labels_np = batch(args.batch_size)
    filters = [NET["base_filters"] * 2**i for i in range(NET["num_layers"])]
    records = []
    for variant in ("eager", "channels_last_3d"):
        torch.manual_seed(0)
        model = DynUNet(
            3, NET["channels"], NET["num_classes"], kernel_size=[3] * len(filters),
            strides=[1] + [2] * (len(filters) - 1), upsample_kernel_size=[2] * (len(filters) - 1),
            filters=filters, norm_name="instance", res_block=False,
        )  # fmt: skip
        x = torch.from_numpy(x_np).permute(0, 4, 1, 2, 3).contiguous()
        target = torch.from_numpy(labels_np)
        if variant != "eager":
            model = model.to(memory_format=torch.channels_last_3d)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        optimizer = torch.optim.Adam(model.parameters(), 1e-3)

        def step(model=model, optimizer=optimizer, x=x, target=target):
            optimizer.zero_grad(set_to_none=True)
            ce_dice_loss(model(x), target).backward()
            optimizer.step()

        model.train()
        train = timed_windows(step, args.batch_size, args.steps, args.repeats, 2)
        records.append(
            {
                "backend": f"monai {monai.__version__} DynUNet",
                "variant": variant,
                "params": sum(p.numel() for p in model.parameters()),
                "train_patches_s": round(train, 3),
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    return [max(records, key=lambda r: r["train_patches_s"])]


WORKERS = {"keras": keras_worker, "torch": torch_worker, "monai": monai_worker}


def measure(kind: str, backend: str | None, args) -> list[dict]:
    python = args.monai_python if kind == "monai" else sys.executable
    command = [python, str(Path(__file__).resolve()), "--worker", kind,
               "--steps", str(args.steps), "--repeats", str(args.repeats),
               "--batch-size", str(args.batch_size),
               "--volume", *map(str, args.volume)]  # fmt: skip
    env = {**os.environ, **({"KERAS_BACKEND": backend} if backend else {})}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise RuntimeError(f"{kind} {backend or ''} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(records: list[dict], info: dict) -> str:
    best_torch = max(
        (r for r in records if r["backend"] == "pytorch"), key=lambda r: r["train_patches_s"]
    )
    lines = [
        "# 3D FlexUNet speed beside a hand-written PyTorch 3D U-Net",
        "",
        f"Machine: {info['machine']}; {info['versions']}",
        f"Settings: {info['settings']}",
        "",
        "| backend | variant | params | train patches/s | vs best PyTorch | forward Mvox/s | "
        "sliding window Mvox/s (window voxels) | sliding vs forward | output Mvox/s | "
        "peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        mvox = {k: f"{r[k] / 1e6:.2f}" if k in r else "" for k in
                ("forward_voxels_s", "window_voxels_s", "output_voxels_s")}  # fmt: skip
        ratio = r["train_patches_s"] / best_torch["train_patches_s"]
        lines.append(
            f"| {r['backend']} | {r['variant']} | {r['params']:,} | {r['train_patches_s']} | "
            f"{ratio:.2f} | {mvox['forward_voxels_s']} | {mvox['window_voxels_s']} | "
            f"{r.get('sliding_vs_forward', '')} | {mvox['output_voxels_s']} | {r['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--volume", type=int, nargs=3, default=[80, 112, 80])
    parser.add_argument("--backends", nargs="+", default=list(KERAS_BACKENDS))
    parser.add_argument("--monai-python", help="a Python with MONAI and the CPU torch")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results_3d.json"))
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        if args.worker != "monai":
            from flexseg.runtime import prepare_process

            prepare_process()  # as flexseg's commands do
        print(json.dumps(WORKERS[args.worker](args)))
        return
    plan = [("keras", b) for b in args.backends] + [("torch", None)]
    if args.monai_python:
        plan.append(("monai", None))
    rounds: dict[tuple, list[dict]] = {}
    for round_ in range(args.rounds):
        for kind, backend in plan:
            for record in measure(kind, backend, args):
                key = (record["backend"], record["variant"])
                rounds.setdefault(key, []).append(record)
                print(f"round {round_ + 1}: {key} {record['train_patches_s']} patches/s")
    records = []
    for same in rounds.values():  # each measurement's median round by training speed
        ordered = sorted(same, key=lambda r: r["train_patches_s"])
        records.append(
            {**ordered[(len(ordered) - 1) // 2], "rounds": [r["train_patches_s"] for r in same]}
        )
    counts = {r["params"] for r in records if r["backend"] in (*KERAS_BACKENDS, "pytorch")}
    if len(counts) != 1:
        raise RuntimeError(f"FlexUNet and the hand-written network differ: {counts} parameters")
    import keras  # the versions only
    import torch

    versions = (
        f"python {platform.python_version()}, keras {keras.__version__}, torch {torch.__version__}"
    )
    info = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "versions": versions,
        "settings": f"patch {list(PATCH)}, batch {args.batch_size}, float32, median of "
        f"{args.repeats} windows of {args.steps} steps, median of {args.rounds} interleaved "
        f"round(s); volume {args.volume}; {time.strftime('%Y-%m-%d %H:%M')}",
    }
    Path(args.output).write_text(json.dumps({"info": info, "records": records}, indent=2))
    Path(args.output).with_suffix(".md").write_text(markdown(records, info))
    print(markdown(records, info))


if __name__ == "__main__":
    main()
