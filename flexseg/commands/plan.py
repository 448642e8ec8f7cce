"""`flexseg-plan`: a recipe planned from the data and the machine, as an experiment file."""

from __future__ import annotations

import json
import time
from pathlib import Path

from flexseg.commands._app import command
from flexseg.config.schema import PlanConfig

_STARTED = time.monotonic()  # the budget counts from the command's start


@command
def main(cfg: PlanConfig, run_dir: Path) -> None:
    """Computes (or reads from its cache) the dataset's fingerprint, measures candidate models
    on this machine, and writes `fingerprint.json`, `plan.json` and
    `experiment/<name>.yaml` into the run folder; prints the plan as a table."""
    from flexseg.commands._compose import load_config
    from flexseg.errors import ConfigError
    from flexseg.planner import planning
    from flexseg.planner.measure import find_machine, time_step

    workers = planning.workers_of(cfg.plan.workers)
    machine = find_machine(cfg.plan.device)
    fp, counts = planning.planned_fingerprint(cfg, workers)
    seen = "read from its cache" if fp["cached"] else f"computed in {fp['seconds']:.0f} s"
    print(f"fingerprint: {fp['samples']} {fp['kind']} (train + valid), {seen}")
    recipe = planning.make_recipe(cfg, fp, counts, machine, time_step, _STARTED, workers=workers)
    name = cfg.plan.name or f"{cfg.dataset.name}_plan"
    path = (run_dir / "experiment" / f"{name}.yaml").resolve()
    option, given = planning.given_dataset(run_dir, cfg)
    text = planning.experiment_text(recipe, option, given, fp, machine, cfg.plan.minutes, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    (run_dir / "fingerprint.json").write_text(json.dumps(fp, indent=2))
    (run_dir / "plan.json").write_text(
        json.dumps(planning.summary_json(recipe, fp, machine), indent=2)
    )
    try:  # what flexseg-train will compose: the plan must pass the schema
        load_config([f"experiment={path}"])
    except ConfigError as error:
        raise ConfigError(f"the plan written to {path} does not compose: {error}") from error
    print(planning.table(recipe, fp, machine))
    print(f"wrote {path}, {run_dir / 'fingerprint.json'}, {run_dir / 'plan.json'}")
    print(f"train it: flexseg-train experiment={path}")
