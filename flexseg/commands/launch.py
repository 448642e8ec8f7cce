"""`flexseg-launch --nproc N train [overrides]`: one training in N processes on this machine.

One process per GPU (or, to try it, per CPU): each gets `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`LOCAL_WORLD_SIZE`, `MASTER_ADDR` and `MASTER_PORT`, as `torchrun` sets them, and runs
`python -m flexseg train [overrides]`; on GPUs process i computes on GPU i. Process 0's
output is shown as it is, the others' errors with a `[process i]` prefix. A stop signal
(TERM, INT, USR1, USR2) goes to every process. When one process ends with an error, the
others stop by themselves (naming it); any that remain after `--grace` seconds are ended.
The launcher exits with the first failure's code (3: stopped by a signal, resumable).

    flexseg-launch --nproc 2 train experiment=demo trainer.workers=0
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


def free_port() -> int:
    """A TCP port nobody listens on now, for the processes to meet on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(rank: int, count: int, port: int, base: dict | None = None) -> dict:
    """The environment of process `rank` of `count` meeting on this machine's `port`."""
    env = dict(os.environ if base is None else base)
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(count),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(count),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    return env


def _relay(stream, prefix: str, out) -> None:
    for line in iter(stream.readline, ""):
        out.write(prefix + line)
        out.flush()


def launch(nproc: int, command: list[str], port: int | None = None, grace: float = 150.0) -> int:
    """Runs `python -m flexseg <command>` in `nproc` processes; returns the exit code."""
    port = port or free_port()
    children = []
    relays = []
    for rank in range(nproc):
        main = rank == 0
        child = subprocess.Popen(
            [sys.executable, "-m", "flexseg", *command],
            env=process_env(rank, nproc, port),
            stdout=None if main else subprocess.DEVNULL,
            stderr=None if main else subprocess.PIPE,
            text=True,
        )
        children.append(child)
        if not main:
            relay = threading.Thread(
                target=_relay, args=(child.stderr, f"[process {rank}] ", sys.stderr), daemon=True
            )
            relay.start()
            relays.append(relay)

    def forward(signum, frame):
        for child in children:
            if child.poll() is None:
                child.send_signal(signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    code, failed_at = 0, None
    try:
        while any(child.poll() is None for child in children):
            for rank, child in enumerate(children):
                status = child.poll()
                if status is None or status == 0 or code:
                    continue
                code = status if status > 0 else 128 - status
                failed_at = time.monotonic()
                how = (
                    f"was ended by {signal.Signals(-status).name}"
                    if status < 0
                    else f"exited with code {status}"
                )
                print(f"flexseg-launch: process {rank} {how}", file=sys.stderr, flush=True)
            if failed_at is not None and time.monotonic() - failed_at > grace:
                for rank, child in enumerate(children):
                    if child.poll() is None:
                        print(
                            f"flexseg-launch: process {rank} still runs {grace:.0f} s after the "
                            "failure; ending it",
                            file=sys.stderr,
                            flush=True,
                        )
                        child.kill()
            time.sleep(0.2)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for relay in relays:
        relay.join(timeout=5)
    if not code:
        code = next((c.returncode for c in children if c.returncode), 0)
        code = code if code > 0 else (128 - code if code else 0)
    return code


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="flexseg-launch",
        description="One flexseg training in several processes on this machine (one per GPU).",
        epilog="e.g. flexseg-launch --nproc 2 train experiment=demo",
    )
    parser.add_argument("--nproc", type=int, required=True, help="processes (one per GPU)")
    parser.add_argument("--port", type=int, help="where they meet (default: a free port)")
    parser.add_argument(
        "--grace", type=float, default=150.0,
        help="seconds the others get to stop by themselves after one failed",
    )  # fmt: skip
    parser.add_argument("command", help="train")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="key=value ...")
    args = parser.parse_args(argv)
    if args.command != "train":
        parser.error(f"only train runs in several processes; received {args.command!r}")
    if args.nproc < 1:
        parser.error(f"--nproc must be >= 1; received {args.nproc}")
    if any(arg.startswith("-") for arg in args.overrides):
        parser.error(
            "a sweep (-m) of multi-process trainings runs as SLURM jobs (hydra/launcher=slurm "
            "hydra.launcher.tasks_per_node=...); flexseg-launch starts one training"
        )
    sys.exit(launch(args.nproc, [args.command, *args.overrides], args.port, args.grace))


if __name__ == "__main__":
    main()
