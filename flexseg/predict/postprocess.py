"""Post-processing of predicted masks, chosen on validation as nnU-Net chooses it.

A rule turns a slice's class probabilities into class ids, then acts on each foreground class
apart. Class ids are the most probable class or, with a `threshold`, the most probable
foreground class wherever the foreground classes together reach that probability (a model
trained on few patients is often less sure of lesions in a new one). Then `none`; `min_size`:
connected components (face neighbours) of fewer than `min_size` pixels become background;
`largest`: only the largest component of the class is kept. `choose` keeps a rule only when it
raises the mean per-volume Dice of the validation split over no rule at all.
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
# foreground probabilities tried, nearest the most probable class's 0.5 first: of rules that
# score alike, `pick` keeps the first, the smallest change
THRESHOLDS = (0.4, 0.6, 0.3, 0.7, 0.2, 0.8, 0.1, 0.9)


def shapes() -> list[dict]:
    """The component rules, no rule first."""
    return [NONE, *({"name": "min_size", "min_size": n} for n in MIN_SIZES), {"name": "largest"}]


def candidates() -> list[dict]:
    """The rules `choose` tries, no rule first: each component rule on the most probable
    class, then on each threshold."""
    return [*shapes(), *({**shape, "threshold": t} for t in THRESHOLDS for shape in shapes())]


def describe(rule: Mapping) -> str:
    """A rule in words: "none", "min_size=50", "largest", "threshold=0.3",
    "threshold=0.3 min_size=50"."""
    shape = f"min_size={rule['min_size']}" if rule["name"] == "min_size" else rule["name"]
    if "threshold" not in rule:
        return shape
    threshold = f"threshold={rule['threshold']:g}"
    return threshold if rule["name"] == "none" else f"{threshold} {shape}"


def classes(probs: np.ndarray, rule: Mapping) -> np.ndarray:
    """Class ids (H, W) of class probabilities `probs` (H, W, K) under `rule`."""
    if "threshold" not in rule:
        pred = probs.argmax(-1)
    else:
        foreground = probs[..., 1:]
        reached = foreground.sum(-1) >= rule["threshold"]
        pred = np.where(reached, foreground.argmax(-1) + 1, 0)
    return apply_rule(pred.astype(np.uint8), rule)


def apply_rule(pred: np.ndarray, rule: Mapping) -> np.ndarray:
    """`pred` (class ids, (H, W)) with `rule`'s components rule applied to each foreground
    class (its threshold is `classes`')."""
    return each_shape(pred, [rule])[0]


def each_shape(pred: np.ndarray, rules: Sequence[Mapping]) -> list[np.ndarray]:
    """`pred` (class ids, (H, W)) under each of `rules`' components rules, each class's
    components found once for all of them."""
    outs = [pred if rule["name"] == "none" else pred.copy() for rule in rules]
    if all(rule["name"] == "none" for rule in rules):
        return outs  # nothing to label: evaluate and infer without a components rule
    for class_id in np.unique(pred):
        if class_id == 0:
            continue
        labels, count = ndimage.label(pred == class_id)  # count >= 1: the class is there
        sizes = np.bincount(labels.ravel())[1:]  # pixels of components 1..count
        for out, rule in zip(outs, rules, strict=True):
            if rule["name"] == "none":
                continue
            kept = np.ones(count + 1, bool)  # by component; 0, the rest of the slice, stays
            if rule["name"] == "min_size":
                kept[1:] = sizes >= rule["min_size"]
            elif rule["name"] == "largest":
                kept[1:] = np.arange(count) == sizes.argmax()
            else:
                raise ValueError(f"unknown post-processing rule {rule!r}")
            out[~kept[labels]] = 0
    return outs


class RuleScores:
    """Each candidate rule's per-volume counts, gathered one predicted slice at a time, and
    the choice they make (nothing but the counts is kept)."""

    def __init__(self):
        # group -> (candidates, K, 3); class 0's counts leave out pixels no one marked
        self.counts: dict[str, np.ndarray] = {}

    def add(self, group: str, truth: np.ndarray, probs: np.ndarray) -> None:
        """Scores one slice: `truth` class ids (H, W), `probs` class probabilities (H, W, K)."""
        rules, num_classes = candidates(), probs.shape[-1]
        counts = self.counts.setdefault(group, np.zeros((len(rules), num_classes, 3), np.int64))
        step = len(shapes())  # candidates(): every components rule for each threshold
        for start in range(0, len(rules), step):
            unshaped = classes(probs, {**rules[start], **NONE})
            # The foreground classes' counts (all that Dice needs here) come from the pixels
            # where the truth or this prediction has foreground: the rules only remove some.
            where = np.flatnonzero((truth > 0) | (unshaped > 0))
            seen = truth.ravel()[where]
            for k, pred in enumerate(each_shape(unshaped, rules[start : start + step])):
                counts[start + k] += counts_np(seen, pred.ravel()[where], num_classes)

    def choice(self) -> tuple[dict, dict[str, float]]:
        """The rule with the best mean per-volume foreground Dice, if better than none (else
        `{"name": "none"}`), and each candidate's mean per-volume Dice, by `describe(rule)`."""
        scores = {
            describe(rule): float(np.mean([fg_dice_np(c[k]) for c in self.counts.values()]))
            for k, rule in enumerate(candidates())
        }
        return pick(scores), scores


def choose(
    volumes: Mapping[str, Sequence[tuple[np.ndarray, np.ndarray]]],
) -> tuple[dict, dict[str, float]]:
    """`RuleScores.choice` of `volumes`: per group (patient), its slices' (truth class ids,
    class probabilities) pairs."""
    scores = RuleScores()
    for group, slices in volumes.items():
        for truth, probs in slices:
            scores.add(group, truth, probs)
    return scores.choice()


def pick(scores: Mapping[str, float]) -> dict:
    """The candidate of the best score (`describe(rule)` -> mean per-volume Dice) if better
    than none, else none; candidates without a score are left out."""
    scored = [r for r in candidates() if describe(r) in scores]
    best = max(scored, key=lambda r: scores[describe(r)])  # the first of equals: none
    return dict(best if scores[describe(best)] > scores["none"] else NONE)


def pooled(chosen: Sequence[tuple[Mapping[str, float], int]]) -> tuple[dict, dict[str, float]]:
    """The rule chosen on several validation splits together, from each split's candidate
    scores and its number of volumes (the folds of a cross-validation: every patient outside
    the test split, predicted by the model that did not train on it, as nnU-Net chooses for
    an ensemble of folds). Returns the rule and each candidate's pooled mean per-volume Dice."""
    total = sum(n for _, n in chosen)
    # the candidates every split scored (a file written before thresholds were tried has fewer)
    names = [describe(r) for r in candidates() if all(describe(r) in s for s, _ in chosen)]
    scores = {k: sum(s[k] * n for s, n in chosen) / total for k in names}
    return pick(scores), scores


def save_rule(
    run_dir: str | Path, rule: Mapping, scores: Mapping[str, float], tta: str = "none"
) -> Path:
    """Writes the run's `postprocessing.json`: the rule evaluate and infer apply, chosen on
    the valid split's predictions with test-time augmentation `tta`."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    payload = {
        "rule": dict(rule), "chosen_on": "valid", "tta": tta,
        "fg_dice_volume_mean": dict(scores),
    }  # fmt: skip
    path.write_text(json.dumps(payload, indent=2))
    return path


def read_scores(run_dir: str | Path) -> dict[str, float] | None:
    """The validation score of each candidate the run's `postprocessing.json` scored, if it
    has one that scored no rule at all."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    try:
        scores = json.loads(path.read_text())["fg_dice_volume_mean"]
        known = {describe(r) for r in candidates()}
        found = {k: float(v) for k, v in scores.items() if k in known}
        return found if "none" in found else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def read_rule(run_dir: str | Path) -> dict:
    """The run's post-processing rule; none when it has no `postprocessing.json`."""
    path = Path(run_dir) / POSTPROCESSING_FILE
    if not path.is_file():
        return dict(NONE)
    try:
        rule = json.loads(path.read_text())["rule"]
        threshold = rule.get("threshold", 0.5)
        if (
            rule["name"] not in {r["name"] for r in shapes()}
            or (rule["name"] == "min_size" and not isinstance(rule["min_size"], int))
            or isinstance(threshold, bool)
            or not isinstance(threshold, (int, float))
            or not 0 < threshold < 1
        ):
            raise ValueError(f"unknown rule {rule!r}")
    except (ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"{path} holds no post-processing rule flexseg knows ({error}); remove it, or "
            'choose again: python -c "from flexseg.predict import choose_postprocessing as c; '
            f"c('{Path(run_dir)}')\"."
        ) from error
    return rule
