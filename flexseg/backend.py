"""Everything that depends on the Keras backend in use.

This is the only flexseg module that imports tensorflow, jax or torch; the rest of the
package speaks `keras.ops` only. Choose the backend with ``KERAS_BACKEND`` before Python
starts (``tensorflow``, ``jax`` or ``torch``); Keras reads it once, at import.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import keras
import numpy as np

from flexseg.cluster import Processes, check_backend
from flexseg.errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")


def name() -> str:
    """The active Keras backend: ``"tensorflow"``, ``"jax"`` or ``"torch"``."""
    return keras.backend.backend()


def version() -> str:
    """Version string of the active backend's framework."""
    return importlib.import_module(name()).__version__


def devices() -> list[str]:
    """Names of the devices the active backend computes on, accelerators first."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return ["cpu"]
    raise ValueError(
        f"Unsupported Keras backend {backend!r}. Set KERAS_BACKEND to one of {BACKENDS}."
    )


def has_gpu() -> bool:
    """Whether the active backend computes on a GPU."""
    return any("GPU" in d.upper() or "CUDA" in d.upper() for d in devices())


def is_jax_on_cpu() -> bool:
    """Whether the active backend is JAX computing on the CPU (XLA's CPU code generator)."""
    if name() != "jax":
        return False
    import jax

    return jax.default_backend() == "cpu"


@contextlib.contextmanager
def tensorflow_left_out() -> Iterator[None]:
    """Keeps Keras from importing TensorFlow into a JAX or torch process.

    Keras looks TensorFlow up whenever it is installed: to seed it (for `tf.data`) and, when
    it saves a model, to recognise TensorFlow's shape and type objects. flexseg needs neither
    on JAX and torch, and the import cost a run 2-5 s of start-up and about 420 MB of memory.
    Inside, Python refuses the import and Keras takes TensorFlow as not installed; afterwards
    Keras looks it up again, for code that does want it.
    """
    if name() == "tensorflow" or "tensorflow" in sys.modules:
        yield
        return
    from keras.src.utils import module_utils

    lazy_tensorflow = module_utils.tensorflow
    sys.modules["tensorflow"] = None
    try:
        yield
    finally:
        del sys.modules["tensorflow"]
        if lazy_tensorflow.module is None:
            lazy_tensorflow._available = None  # Keras remembers "not installed": forget it


@contextlib.contextmanager
def this_process_alone() -> Iterator[None]:
    """For work one process of several does alone (process 0 saving a checkpoint).

    Under JAX's distribution over several processes, every new or assigned Keras variable is
    checked against the other processes (a collective): Keras' saving makes variables of its
    own, which would wait for processes that do not save. Inside, there is no distribution.
    """
    if _JOINED.get("kind") != "jax":
        yield
        return
    with swapped(keras.distribution.distribution, keras.distribution.set_distribution, None):
        yield


@contextlib.contextmanager
def swapped(get: Callable, put: Callable, value) -> Iterator[None]:
    """A Keras global setting (`get()`, `put(value)`) set to `value` inside, restored after."""
    previous = get()
    put(value)
    try:
        yield
    finally:
        put(previous)


def set_random_seed(seed: int) -> None:
    """`keras.utils.set_random_seed` (Python, NumPy, Keras' generators, torch), without
    importing TensorFlow into a JAX or torch process (`tensorflow_left_out`)."""
    with tensorflow_left_out():
        keras.utils.set_random_seed(seed)


# The persistent cache of `trainer.compile_cache=auto` keeps the newest programs up to this size.
COMPILE_CACHE_MAX_BYTES = 2**30


def default_compile_cache() -> Path:
    """Where `trainer.compile_cache=auto` keeps JAX's compiled programs."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "flexseg" / "jax"


def use_compile_cache(setting: str) -> Path | None:
    """`trainer.compile_cache`: JAX's persistent compilation cache; returns its folder.

    JAX compiles a program for every weight shape Keras initialises and one for the training
    step; on a CPU that is 12-23 s before a small FlexUNet's first step, every run. With the
    cache a second run of the same model and settings loads them instead (3 s). `"auto"`:
    `$XDG_CACHE_HOME/flexseg/jax` (`~/.cache/flexseg/jax`), or the folder JAX already has
    (`JAX_COMPILATION_CACHE_DIR`); a path: that folder; `"none"`: no cache. TensorFlow and
    torch compile nothing that JAX's cache holds: None.
    """
    if not isinstance(setting, str) or not setting.strip():
        raise ConfigError(
            "compile_cache must be auto, none or a folder for JAX's compiled programs. "
            f"Received: {setting!r}"
        )
    if name() != "jax":
        return None
    import jax

    if setting == "none":
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    folder = jax.config.jax_compilation_cache_dir
    if setting != "auto" or not folder:
        folder = default_compile_cache() if setting == "auto" else Path(setting).expanduser()
        jax.config.update("jax_compilation_cache_dir", str(folder))
        if jax.config.jax_compilation_cache_max_size == -1:  # unlimited: JAX's default
            jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_MAX_BYTES)
    # JAX keeps only programs that took a second to compile; each initialiser takes half one.
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    return Path(folder)


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX or AVX-512 BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:  # not Linux: no cheap way to know, so assume not
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def gpu_compute_capability() -> tuple[int, int] | None:
    """(major, minor) CUDA compute capability of the first GPU, or None without one."""
    if not has_gpu():
        return None
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]
        )
        return details.get("compute_capability")
    if backend == "jax":
        import jax

        major, minor = str(getattr(jax.devices()[0], "compute_capability", "0.0")).split(".")
        return int(major), int(minor)
    import torch

    return torch.cuda.get_device_capability(0)


def gpu_free_memory() -> int | None:
    """Bytes free on the first GPU (torch, JAX), or None: no GPU, or TensorFlow, which tells
    only what it uses itself."""
    if not has_gpu():
        return None
    try:
        if name() == "torch":
            import torch

            return int(torch.cuda.mem_get_info()[0])
        if name() == "jax":
            import jax

            stats = jax.devices()[0].memory_stats() or {}
            return int(stats.get("bytes_limit", 0) - stats.get("bytes_in_use", 0)) or None
    except Exception:  # a runtime that does not tell: no figure
        return None
    return None


def reset_gpu_peak_memory() -> None:
    """Starts the first GPU's peak memory count afresh (torch, TensorFlow)."""
    if not has_gpu():
        return
    if name() == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats()
    elif name() == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")


def gpu_peak_memory() -> int | None:
    """Peak bytes the backend used on the first GPU (since `reset_gpu_peak_memory` where the
    backend counts afresh), or None without a GPU or a figure."""
    if not has_gpu():
        return None
    try:
        if name() == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated())
        if name() == "tensorflow":
            import tensorflow as tf

            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
        import jax

        return int((jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use", 0)) or None
    except Exception:
        return None


def auto_precision() -> str:
    """The precision `trainer.precision=auto` picks, as measured (docs/performance.md).

    GPUs: tensor cores in 16 bits; mixed_bfloat16 from Ampere on (compute capability 8.0:
    float32's range, no loss scaling), mixed_float16 with loss scaling before. CPUs with
    bfloat16 matrix units: mixed_bfloat16 on TensorFlow and torch (1.7-2x faster FlexUNet
    training than float32); JAX's CPU convolutions gain nothing from it. Else float32.
    """
    capability = gpu_compute_capability()
    if capability is not None:
        return "mixed_bfloat16" if capability >= (8, 0) else "mixed_float16"
    if name() in ("tensorflow", "torch") and cpu_has_bf16_matrix_units():
        return "mixed_bfloat16"
    return "float32"


@contextlib.contextmanager
def data_parallel(processes: int = 1) -> Iterator[int]:
    """Replicates the model built inside on every device and splits each batch.

    JAX: `keras.distribution.DataParallel` over all devices of its default platform, those of
    every process when several processes joined (`join_processes`). TensorFlow:
    `tf.distribute.MirroredStrategy` over all GPUs, else over all logical CPUs, of one process.
    torch: one device per process; the processes average their gradients
    (`flexseg.training.distributed`). Yields the number of replicas.
    """
    backend = name()
    if backend == "jax":
        every = keras.distribution.list_devices()
        parallel = keras.distribution.DataParallel(devices=every)
        parallel.auto_shard_dataset = False  # flexseg's loader gives each process its part
        with swapped(
            keras.distribution.distribution, keras.distribution.set_distribution, parallel
        ):
            yield len(every)
    elif backend == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy(devices())  # all GPUs, else all CPUs
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    elif processes > 1:
        yield processes
    else:
        raise ConfigError(
            "trainer.distribution=data_parallel on the torch backend trains one process per "
            "device: start them with flexseg-launch --nproc <devices> train ..., torchrun or "
            "SLURM (README, Several GPUs and nodes), or set trainer.distribution=none."
        )


# What `join_processes` made: the store the processes share (for liveness) and its kind.
_JOINED: dict = {}


def join_processes(rank: int, count: int, local_rank: int, coordinator: str, timeout_s: float):
    """Connects this process to the other processes of its training, once per process.

    torch: `torch.distributed`'s process group (NCCL on GPUs, this process on GPU
    `local_rank`; gloo on CPU), through `torchrun`'s store when torchrun started the process,
    else at `coordinator`. JAX: `jax.distributed.initialize` (CPU collectives through gloo),
    before JAX's first computation. A collective that waits longer than `timeout_s` fails.
    TensorFlow: refused, as Keras 3 cannot train it over several processes.
    """
    if _JOINED:
        return
    backend = name()
    host, port = coordinator.rsplit(":", 1)
    if backend == "torch":
        import datetime

        import torch
        import torch.distributed as dist

        gpu = torch.cuda.is_available()
        if gpu:
            torch.cuda.set_device(local_rank)
        elastic = "TORCHELASTIC_RUN_ID" in os.environ  # torchrun: its agent holds the store
        dist.init_process_group(
            "nccl" if gpu else "gloo",
            init_method="env://" if elastic else f"tcp://{coordinator}",
            rank=rank,
            world_size=count,
            timeout=datetime.timedelta(seconds=timeout_s),
        )
        # A client of its own for the liveness beats, beside the process group's.
        store = dist.TCPStore(host, int(port), is_master=False, timeout=datetime.timedelta(30))
        _JOINED.update(kind="torch", store=store)
    elif backend == "jax":
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator, num_processes=count, process_id=rank,
            initialization_timeout=int(timeout_s),
        )  # fmt: skip
        from jax._src.distributed import global_state

        _JOINED.update(kind="jax", store=global_state.client)
    else:
        check_backend(Processes(rank, count), backend)


def leave_processes() -> None:
    """Disconnects this process from the others of its training once all got here.

    torch: its process group and store are closed before Python exits (left to exit, gloo's
    threads can abort a process that finished). JAX's runtime closes its own at exit.
    """
    if _JOINED.get("kind") == "torch":
        import torch.distributed as dist

        dist.barrier()
        dist.destroy_process_group()
        _JOINED.clear()


def store_add(key: str, amount: int) -> int:
    """Adds to a counter in the store the joined processes share; returns its new value."""
    store = _JOINED["store"]
    if _JOINED["kind"] == "torch":
        return store.add(key, amount)
    return store.key_value_increment(key, amount)


def store_set(key: str, value: str) -> None:
    """Sets a text in the store the joined processes share."""
    store = _JOINED["store"]
    if _JOINED["kind"] == "torch":
        store.set(key, value)
    else:
        store.key_value_set(key, value, allow_overwrite=True)


def store_set_once(key: str, value: str) -> str:
    """Sets a text in the shared store unless a process set it first; returns the text kept."""
    store = _JOINED["store"]
    if _JOINED["kind"] == "torch":
        return store.compare_set(key, "", value).decode()
    with contextlib.suppress(Exception):  # jaxlib's error for a key that exists: not first
        store.key_value_set(key, value, allow_overwrite=False)
    return store.key_value_try_get(key)


def store_get(key: str) -> str | None:
    """A text of the shared store, or None when nobody set it."""
    store = _JOINED["store"]
    if _JOINED["kind"] == "torch":
        return store.get(key).decode() if store.check([key]) else None
    try:
        return store.key_value_try_get(key)
    except Exception:  # jaxlib raises its own error type for a missing key
        return None


def _torch_collective(values: np.ndarray, collective: Callable) -> np.ndarray:
    """`collective(tensor)` (in place) on `values`, on the process group's device."""
    import torch
    import torch.distributed as dist

    tensor = torch.from_numpy(np.ascontiguousarray(values))
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    collective(tensor)
    return tensor.cpu().numpy()


def all_sum(values: np.ndarray) -> np.ndarray:
    """`values` (the same shape in every process) summed over the joined processes."""
    if _JOINED.get("kind") == "torch":
        import torch.distributed as dist

        return _torch_collective(np.asarray(values, np.float64), dist.all_reduce)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


def broadcast_from_first(values: np.ndarray) -> np.ndarray:
    """Process 0's `values` (the same shape and type in every process), in every process."""
    if _JOINED.get("kind") == "torch":
        import torch.distributed as dist

        return _torch_collective(values, lambda tensor: dist.broadcast(tensor, src=0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.broadcast_one_to_all(values))


def average_gradients(gradients: list) -> None:
    """torch: replaces each gradient by its mean over the joined processes, in place, in one
    collective over a flat copy (as DistributedDataParallel's buckets do)."""
    import torch
    import torch.distributed as dist

    present = [g for g in gradients if g is not None]
    flat = torch.cat([g.reshape(-1) for g in present])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in present:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def seed_global_rng(seed: int) -> None:
    """torch: seeds the global generators that dropout draws from (see `global_rng_state`)."""
    if name() == "torch":
        import torch

        torch.manual_seed(seed)


def global_rng_state() -> dict[str, np.ndarray]:
    """The backend's global random state, where Keras draws from it.

    Keras' torch backend runs dropout (of layers without an explicit seed) on torch's global
    generators, not on the layers' seed generators; JAX and TensorFlow draw from the seed
    generators, which are model variables. So this is torch's CPU and CUDA states, or nothing.
    """
    if name() != "torch":
        return {}
    import torch

    state = {"torch_cpu": torch.get_rng_state().numpy()}
    if torch.cuda.is_available():
        state["torch_cuda"] = np.stack([s.numpy() for s in torch.cuda.get_rng_state_all()])
    return state


def set_global_rng_state(state: dict[str, np.ndarray]) -> None:
    """Restores what `global_rng_state` returned."""
    if "torch_cpu" not in state:
        return
    import torch

    torch.set_rng_state(torch.from_numpy(state["torch_cpu"]))
    if "torch_cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.from_numpy(s) for s in state["torch_cuda"]])


def export_options(fmt: str) -> dict:
    """Keras `Model.export` arguments a format needs beyond the input signature: torch's
    ExportedProgram takes any batch size only when told so."""
    if fmt != "torch":
        return {}
    import torch

    return {"dynamic_shapes": {0: torch.export.Dim("batch", min=1, max=4096)}}


def run_saved_model(path: Path, batch: np.ndarray) -> np.ndarray:
    """The outputs of an exported TensorFlow SavedModel's `serve` endpoint, by TensorFlow."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # held: its variables live as long as it does
    return loaded.serve(tf.constant(batch)).numpy()


def run_exported_program(path: Path, batch: np.ndarray) -> np.ndarray:
    """The outputs of a torch ExportedProgram (`.pt2`), by torch."""
    import torch

    with torch.no_grad():
        return torch.export.load(str(path)).module()(torch.from_numpy(batch)).numpy()
