"""Run the pytest suite once per Keras backend, each in its own process, and sum up.

    python scripts/run_tests.py                       # tensorflow, jax and torch
    python scripts/run_tests.py --backends jax -- -k flops

Exits non-zero if any backend fails; the last lines give each backend's result and a total.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
COUNT = re.compile(r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)")


def run_backend(backend: str, pytest_args: list[str]) -> tuple[int, dict[str, int], float]:
    print(f"\n===== KERAS_BACKEND={backend} =====", flush=True)
    env = {**os.environ, "KERAS_BACKEND": backend}
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", *pytest_args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    last_summary = ""
    for line in proc.stdout:
        print(line, end="", flush=True)
        if COUNT.search(line) and " in " in line:
            last_summary = line
    code = proc.wait()
    counts = {}
    for number, word in COUNT.findall(last_summary):
        word = "errors" if word.startswith("error") else word
        counts[word] = counts.get(word, 0) + int(number)
    return code, counts, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args()

    results = {b: run_backend(b, args.pytest_args) for b in args.backends}
    print("\n===== summary =====")
    passed = failed = 0
    for backend, (code, counts, seconds) in results.items():
        # A crash or a collection error counts as a failure even with no count printed.
        bad = counts.get("failed", 0) + counts.get("errors", 0) or int(code != 0)
        passed += counts.get("passed", 0)
        failed += bad
        status = "ok" if code == 0 else f"FAILED (exit {code})"
        detail = ", ".join(f"{n} {w}" for w, n in counts.items()) or "no tests ran"
        print(f"{backend}: {detail} in {seconds:.0f}s -- {status}")
    if passed == 0:
        failed = max(failed, 1)
    print(f"total: {passed} passed, {failed} failed")
    return 0 if failed == 0 and all(code == 0 for code, _, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
