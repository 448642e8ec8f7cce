"""Run the pytest suite once per Keras backend, each in its own process, and sum up.

    python scripts/run_tests.py                       # tensorflow, jax and torch, side by side
    python scripts/run_tests.py --backends jax -- -k flops
    python scripts/run_tests.py --jobs 1              # one backend after another
    python scripts/run_tests.py -- tests/data         # only these paths, on every backend

Tests marked `once` (the fuzz suite, the installed wheel, config errors, Hydra's launchers)
work the same on every backend: they run once, in a process of their own on torch (the
quickest to start), unless test paths are given; the per-backend runs leave them out.
Exits non-zero if any run fails; the last lines give each run's result and a total.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BACKENDS = ("tensorflow", "jax", "torch")
ONCE = "once"  # the marker of backend-independent tests
ONCE_BACKEND = "torch"
NO_TESTS = 5  # pytest's exit code when a filter leaves a run no tests
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)")


def plan_runs(backends: list[str], pytest_args: list[str]) -> list[tuple[str, str, list[str]]]:
    """(name, backend, pytest arguments) of each run: one per backend without the tests
    marked ONCE, and those once, unless the arguments name test paths of their own."""
    paths = [a for a in pytest_args if not a.startswith("-") and Path(a.split("::")[0]).exists()]
    if paths:
        return [(b, b, pytest_args) for b in backends]
    args, expression = list(pytest_args), None
    if "-m" in args:  # the caller's own marker expression, combined with ours
        at = args.index("-m")
        expression = args[at + 1]
        del args[at : at + 2]

    def marked(rule: str) -> list[str]:
        return [*args, "-m", f"({expression}) and {rule}" if expression else rule]

    once_backend = ONCE_BACKEND if ONCE_BACKEND in backends else backends[0]
    once = ("once", once_backend, marked(ONCE))
    return [once, *((b, b, marked(f"not {ONCE}")) for b in backends)]


def start_run(
    name: str, backend: str, pytest_args: list[str], folder: Path, log
) -> subprocess.Popen:
    env = {**os.environ, "KERAS_BACKEND": backend}
    # Its own temporary folder: pytest's default one is shared, and cleaned by each session.
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", f"--basetemp={folder / name}", *pytest_args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )


def counts_of(output: str) -> dict[str, int]:
    """pytest's final counts ("3 passed, 1 failed in 9.1s")."""
    last_summary = next(
        (line for line in reversed(output.splitlines()) if COUNT.search(line) and " in " in line),
        "",
    )
    counts = {}
    for number, word in COUNT.findall(last_summary):
        word = "errors" if word.startswith("error") else word
        counts[word] = counts.get(word, 0) + int(number)
    return counts


def run_all(runs: list[tuple[str, str, list[str]]], jobs: int) -> dict:
    """Runs up to `jobs` runs at once; prints each one's whole output when it ends."""
    results, running, waiting = {}, {}, list(runs)
    with tempfile.TemporaryDirectory() as folder:
        while waiting or running:
            while waiting and len(running) < jobs:
                name, backend, pytest_args = waiting.pop(0)
                log = open(Path(folder) / f"{name}.log", "w+")  # noqa: SIM115
                print(f"started {name} (KERAS_BACKEND={backend})", flush=True)
                proc = start_run(name, backend, pytest_args, Path(folder), log)
                running[name] = (proc, log, time.monotonic(), backend)
            for name, (proc, log, start, backend) in list(running.items()):
                if proc.poll() is None:
                    continue
                seconds = time.monotonic() - start
                log.seek(0)
                output = log.read()
                log.close()
                print(
                    f"\n===== {name} (KERAS_BACKEND={backend}) =====\n{output}", end="", flush=True
                )
                results[name] = (proc.returncode, counts_of(output), seconds)
                del running[name]
            time.sleep(1)
    return {name: results[name] for name, _, _ in runs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--jobs", type=int, default=len(BACKENDS), help="runs at once (default: one per backend)"
    )
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args()

    start = time.monotonic()
    results = run_all(plan_runs(args.backends, args.pytest_args), args.jobs)
    print("\n===== summary =====")
    passed = failed = 0
    for name, (code, counts, seconds) in results.items():
        # A crash or a collection error counts as a failure even with no count printed; a run
        # whose tests a -k or -m filter left out does not.
        code = 0 if code == NO_TESTS else code
        bad = counts.get("failed", 0) + counts.get("errors", 0) or int(code != 0)
        passed += counts.get("passed", 0)
        failed += bad
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        detail = ", ".join(f"{n} {w}" for w, n in counts.items()) or "no tests ran"
        print(f"{name}: {detail} in {seconds:.0f}s -- {status}")
    if passed == 0:
        failed = max(failed, 1)
    print(f"total: {passed} passed, {failed} failed in {time.monotonic() - start:.0f}s")
    return 0 if failed == 0 and all(c in (0, NO_TESTS) for c, _, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
