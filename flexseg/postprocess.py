"""Post-processing of predicted masks, chosen on validation as nnU-Net chooses it.

A rule acts on each foreground class of a predicted slice (class ids, (H, W)) apart: `none`;
`min_size`: connected components (face neighbours) of fewer than `min_size` pixels become
background; `largest`: only the largest component of the class is kept. `choose` keeps a rule
only when it raises the mean per-volume Dice of the validation split over no rule at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from flexseg.errors import DataError
from flexseg.metrics import counts_np, fg_dice_np

POSTPROCESSING_FILE = "postprocessing.json"
NONE = {"name": "none"}
MIN_SIZES = (10, 25, 50, 100, 200, 400)  # pixels per slice, the candidates tried


def candidates() -> list[dict]:
    """The rules `choose` tries, no rule first."""
    return [NONE, *({"name": "min_size", "min_size": n} for n in MIN_SIZES), {"name": "largest"}]


def describe(rule: Mapping) -> str:
    """A rule in words: "none", "min_size=50", "largest"."""
    return f"min_size={rule['min_size']}" if rule["name"] == "min_size" else rule["name"]


def apply_rule(pred: np.ndarray, rule: Mapping) -> np.ndarray:
    """`pred` (class ids, (H, W)) with `rule` applied to each foreground class."""
    if rule["name"] == "none":
        return pred
    out = pred.copy()
    for class_id in np.unique(pred):
        if class_id == 0:
            continue
        labels, count = ndimage.label(pred == class_id)  # count >= 1: the class is there
        sizes = np.bincount(labels.ravel())[1:]  # pixels of components 1..count
        if rule["name"] == "min_size":
            dropped = np.flatnonzero(sizes < rule["min_size"]) + 1
        elif rule["name"] == "largest":
            dropped = np.delete(np.arange(1, count + 1), sizes.argmax())
        else:
            raise ValueError(f"unknown post-processing rule {rule!r}")
        out[np.isin(labels, dropped)] = 0
    return out


def choose(
    volumes: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]], num_classes: int
) -> tuple[dict, dict[str, float]]:
    """The rule with the best mean per-volume foreground Dice, if better than none.

    Args:
        volumes: per group (patient), its slices' (truth, prediction) class-id pairs.

    Returns:
        The chosen rule (`{"name": "none"}` unless one is strictly better) and each
        candidate's mean per-volume Dice, by `describe(rule)`.
    """
    scores = {}
    for rule in candidates():
        dice = []
        for slices in volumes.values():
            counts = sum(counts_np(t, apply_rule(p, rule), num_classes) for t, p in slices)
            dice.append(fg_dice_np(counts))
        scores[describe(rule)] = float(np.mean(dice))
    return pick(scores), scores


def pick(scores: Mapping[str, float]) -> dict:
    """The candidate of the best score (`describe(rule)` -> mean per-volume Dice) if better
    than none, else none."""
    best = max(candidates(), key=lambda r: scores[describe(r)])  # the first of equals: none
    return dict(best if scores[describe(best)] > scores["none"] else NONE)


def pooled(chosen: Sequence[tuple[Mapping[str, float], int]]) -> tuple[dict, dict[str, float]]:
    """The rule chosen on several validation splits together, from each split's candidate
    scores and its number of volumes (the folds of a cross-validation: every patient outside
    the test split, predicted by the model that did not train on it, as nnU-Net chooses for
    an ensemble of folds). Returns the rule and each candidate's pooled mean per-volume Dice."""
    total = sum(n for _, n in chosen)
    scores = {describe(r): sum(s[describe(r)] * n for s, n in chosen) / total for r in candidates()}
    return pick(scores), scores


def save_rule(run_dir: str | Path, rule: Mapping, scores: Mapping[str, float]) -> Path:
    """Writes the run's `postprocessing.json`: the rule evaluate and infer apply."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    payload = {"rule": dict(rule), "chosen_on": "valid", "fg_dice_volume_mean": dict(scores)}
    path.write_text(json.dumps(payload, indent=2))
    return path


def read_scores(run_dir: str | Path) -> dict[str, float] | None:
    """Each candidate's validation score from the run's `postprocessing.json`, if it has one
    with every candidate scored."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    try:
        scores = json.loads(path.read_text())["fg_dice_volume_mean"]
        return {describe(r): float(scores[describe(r)]) for r in candidates()}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_rule(run_dir: str | Path) -> dict:
    """The run's post-processing rule; none when it has no `postprocessing.json`."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    if not path.is_file():
        return dict(NONE)
    try:
        rule = json.loads(path.read_text())["rule"]
        if rule["name"] not in {r["name"] for r in candidates()} or (
            rule["name"] == "min_size" and not isinstance(rule["min_size"], int)
        ):
            raise ValueError(f"unknown rule {rule!r}")
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{path} holds no post-processing rule flexseg knows ({error}); remove it, or "
            'choose again: python -c "from flexseg.evaluation import choose_postprocessing as c; '
            f"c('{Path(run_dir)}')\"."
        ) from error
    return rule
