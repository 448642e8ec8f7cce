"""The machine a plan is made for, and one candidate model's training step measured on it."""

from __future__ import annotations

import os
import resource
import statistics
import time

import numpy as np

from flexseg import backend
from flexseg.data.workers import usable_cores
from flexseg.errors import ConfigError
from flexseg.planner.recipe import Machine, Timing, estimated_bytes

STEPS = 5  # training steps timed after the first (which compiles); their median is taken
TIME_BOX_S = 10.0  # fewer (at least one) where a candidate's steps take longer than this


def find_machine(device: str = "auto") -> Machine:
    """The device the active backend trains on (`plan.device`: auto, cpu or gpu).

    Raises:
        ConfigError: `gpu` where the backend sees none.
    """
    gpu = backend.has_gpu()
    if device == "gpu" and not gpu:
        raise ConfigError(
            f"plan.device=gpu, but {backend.name()} sees no GPU here ({backend.devices()}); "
            "plan on the machine that will train, or set plan.device=auto."
        )
    host = _host_memory()
    cores = usable_cores()
    if gpu and device != "cpu":
        free = backend.gpu_free_memory() or host
        return Machine("gpu", backend.devices()[0], free, host, backend.name(), cores)
    return Machine("cpu", cpu_name(), host, host, backend.name(), cores)


def _host_memory() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def cpu_name() -> str:
    """The CPU's model name (Linux), or "cpu"."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "cpu"


def time_step(args: dict, batch: int, loss: str = "ce_dice", precision: str = "auto") -> Timing:
    """One candidate FlexUNet (`args`: its constructor arguments) trained for a few steps on
    random data of its input shape at `batch`, with the loss, metrics, optimizer and
    precision a training uses."""
    import keras

    from flexseg.config.schema import TrainerConfig, loss_schema, model_schema
    from flexseg.config.targets import instantiate
    from flexseg.losses import build_loss
    from flexseg.metrics import segmentation_metrics
    from flexseg.models import MODELS
    from flexseg.training.setup import Setup, build_optimizer, precision_policy

    trainer = TrainerConfig(precision=precision)
    setup = Setup.of(trainer)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    backend.reset_gpu_peak_memory()
    with precision_policy(setup.precision):
        section = model_schema(MODELS["flex_unet"])(**args)
        model = instantiate(section)
        model.compile(
            optimizer=build_optimizer(trainer),
            loss=build_loss(loss_schema(loss)(), args["num_classes"], section.from_logits),
            metrics=segmentation_metrics(args["num_classes"]),
            jit_compile=setup.jit_compile,
        )
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, *args["input_shape"])).astype(np.float32)
        ids = rng.integers(0, args["num_classes"], (batch, *args["input_shape"][:-1]))
        y = np.eye(args["num_classes"], dtype=np.float32)[ids]
        start = time.perf_counter()
        model.train_on_batch(x, y)
        first = time.perf_counter() - start
        steps = _timed(lambda: model.train_on_batch(x, y), STEPS)
        model.test_on_batch(x, y)
        tests = _timed(lambda: model.test_on_batch(x, y), 3)
        params = model.count_params()
    step = statistics.median(steps)
    measured = backend.gpu_peak_memory()
    if measured is None:
        measured = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    keras.backend.clear_session()
    return Timing(
        train_step_s=step,
        test_step_s=statistics.median(tests),
        compile_s=max(0.0, first - step),
        peak_bytes=int(max(measured, estimated_bytes(args, batch, params))),
    )


def _timed(step, count: int) -> list[float]:
    """Seconds of up to `count` calls of `step`, at least one, within TIME_BOX_S."""
    found: list[float] = []
    begin = time.perf_counter()
    while len(found) < count and (not found or time.perf_counter() - begin < TIME_BOX_S):
        start = time.perf_counter()
        step()
        found.append(time.perf_counter() - start)
    return found
