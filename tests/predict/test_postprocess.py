"""Post-processing: rules on predicted slices, chosen on validation, applied by evaluate and
infer."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from flexseg.errors import DataError
from flexseg.predict.postprocess import (
    NONE,
    apply_rule,
    candidates,
    choose,
    classes,
    describe,
    pick,
    pooled,
    read_rule,
    save_rule,
)


def planted() -> tuple[np.ndarray, np.ndarray]:
    """A truth of one large lesion; a prediction of it plus a small blob far away."""
    truth = np.zeros((40, 40), np.uint8)
    truth[10:25, 10:25] = 1
    pred = truth.copy()
    pred[34:37, 34:37] = 1  # 9 pixels of nothing
    return truth, pred


def test_rules_remove_a_planted_small_component_and_keep_a_large_one():
    truth, pred = planted()
    cleaned = apply_rule(pred, {"name": "min_size", "min_size": 25})
    np.testing.assert_array_equal(cleaned, truth)  # the blob went, the lesion stayed
    np.testing.assert_array_equal(apply_rule(pred, {"name": "largest"}), truth)
    assert apply_rule(pred, {"name": "min_size", "min_size": 5}).sum() == pred.sum()
    three = np.zeros((8, 8), np.uint8)
    three[0, 0] = 1  # class 1's only component: its largest
    three[5:8, 5:8], three[0, 7] = 2, 2  # class 2: a block and a pixel
    largest = apply_rule(three, {"name": "largest"})
    assert largest[0, 0] == 1 and (largest[5:8, 5:8] == 2).all() and largest[0, 7] == 0
    assert apply_rule(pred, NONE) is pred


def sure(pred: np.ndarray, lesion: float = 0.9, elsewhere: float = 0.1) -> np.ndarray:
    """Two-class probabilities (H, W, 2): class 1 at `lesion` where `pred` is 1, else at
    `elsewhere`."""
    p = np.where(pred == 1, lesion, elsewhere).astype(np.float32)
    return np.stack([1 - p, p], axis=-1)


def test_a_rule_is_chosen_only_when_it_raises_validation_dice():
    truth, pred = planted()
    rule, scores = choose({"p01": [(truth, sure(pred))], "p02": [(truth, sure(truth))]})
    assert rule["name"] in ("min_size", "largest") and scores["none"] < scores["largest"]
    assert "threshold" not in rule  # a threshold changes nothing here: none is the first
    # Two true lesions: keeping the largest would lose one, small sizes change nothing.
    two = truth.copy()
    two[30:38, 30:38] = 1
    rule, scores = choose({"p01": [(two, sure(two))]})
    assert rule == NONE and scores["largest"] < scores["none"]


def test_a_threshold_is_chosen_for_a_model_unsure_of_lesions_and_applied():
    truth, pred = planted()
    probs = sure(truth, lesion=0.35, elsewhere=0.05)  # the lesion at 35%: argmax finds none
    probs[34:37, 34:37] = [0.85, 0.15]  # a blob below every threshold tried but 0.1
    rule, scores = choose({"p01": [(truth, probs)]})
    # 0.3, 0.2 and 0.1 with the blob removed score alike: the nearest 0.5 is kept
    assert scores["none"] == 0.0 and rule == {"name": "none", "threshold": 0.3}
    assert scores["threshold=0.2"] == scores["threshold=0.1 min_size=10"] == 1.0
    np.testing.assert_array_equal(classes(probs, rule), truth)
    np.testing.assert_array_equal(classes(probs, NONE), 0 * truth)
    # A sure model keeps the most probable class.
    assert choose({"p01": [(truth, sure(truth))]})[0] == NONE
    # With several foreground classes, the threshold is of all of them together, and the
    # most probable of them is the class.
    three = np.array([[[0.4, 0.35, 0.25], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]]], np.float32)
    np.testing.assert_array_equal(classes(three, NONE), [[0, 0, 2]])
    np.testing.assert_array_equal(classes(three, {"name": "none", "threshold": 0.5}), [[1, 0, 2]])
    rule = {"name": "min_size", "min_size": 10, "threshold": 0.3}
    assert describe(rule) == "threshold=0.3 min_size=10" and describe(rule) in scores


def test_the_chosen_rule_is_recorded_and_applied_by_evaluate_and_infer(trained, tmp_path):
    from flexseg.predict.evaluation import choose_postprocessing, evaluate
    from flexseg.predict.inference import infer

    root, original, _ = trained
    run_dir = tmp_path / "run"
    shutil.copytree(original, run_dir, ignore=shutil.ignore_patterns("evaluation"))
    chosen = choose_postprocessing(run_dir)
    saved = json.loads((run_dir / "postprocessing.json").read_text())
    assert saved["rule"] == chosen["rule"] and "none" in saved["fg_dice_volume_mean"]
    assert (run_dir / "evaluation" / "valid" / "evaluation.json").is_file()
    # Whatever was chosen, a rule that removes everything shows it is applied.
    (run_dir / "postprocessing.json").write_text(
        json.dumps({"rule": {"name": "min_size", "min_size": 10**6}})
    )
    summary = evaluate({"run_dir": str(run_dir)})
    assert summary["postprocessing"] == "min_size=1000000"
    assert summary["volumes_missed"] == ["p03"]  # nothing predicted is left
    written = infer({"run_dir": str(run_dir), "input": str(root / "images")})
    for paths in written:
        with Image.open(paths["mask"]) as mask:
            assert not np.asarray(mask).any()
    for bad in ({"name": "smooth"}, {"name": "none", "threshold": 1.5}):
        (run_dir / "postprocessing.json").write_text(json.dumps({"rule": bad}))
        with pytest.raises(DataError, match="postprocessing.json holds no post-processing rule"):
            read_rule(run_dir)
    # A threshold of 1 - 1e-6 leaves no foreground either.
    (run_dir / "postprocessing.json").write_text(
        json.dumps({"rule": {"name": "none", "threshold": 1 - 1e-6}})
    )
    assert evaluate({"run_dir": str(run_dir)})["volumes_missed"] == ["p03"]


def scored(none: float, min_size_10: float) -> dict[str, float]:
    """Candidate scores of one validation split: every other rule scores 0."""
    scores = {describe(rule): 0.0 for rule in candidates()}
    return {**scores, "none": none, "min_size=10": min_size_10}


@pytest.mark.once
def test_pooled_validation_splits_weigh_each_by_its_volumes():
    small, large = scored(0.5, 0.8), scored(0.8, 0.7)  # the rule helps one split, not the other
    rule, scores = pooled([(small, 2), (large, 7)])
    assert rule == NONE and scores["none"] == pytest.approx((2 * 0.5 + 7 * 0.8) / 9)
    rule, scores = pooled([(small, 6), (large, 2)])
    assert rule == {"name": "min_size", "min_size": 10}
    assert scores["min_size=10"] == pytest.approx((6 * 0.8 + 2 * 0.7) / 8)
    # A split scored before thresholds were tried: the pool is of the rules both scored.
    earlier = {k: v for k, v in small.items() if "threshold" not in k}
    rule, scores = pooled([(earlier, 6), (large, 2)])
    assert rule == {"name": "min_size", "min_size": 10} and set(scores) == set(earlier)


@pytest.mark.once
def test_an_ensemble_of_folds_applies_the_rule_chosen_on_their_validation_splits(tmp_path):
    from flexseg.commands._compose import load_config
    from flexseg.predict.ensembles import rule_of
    from flexseg.runs import Run

    def run(name: str, fold: int, scores: dict, volumes: int, folds: int = 2) -> Run:
        run_dir = tmp_path / name
        (run_dir / "evaluation" / "valid").mkdir(parents=True)
        (run_dir / "evaluation" / "valid" / "evaluation.json").write_text(
            json.dumps({"volumes": volumes})
        )
        save_rule(run_dir, pick(scores), scores)
        split = [f"dataset.split.folds={folds}", f"dataset.split.fold={fold}"]
        return Run(run_dir, load_config(split), model=None, checkpoint="last")

    a, b = run("a", 0, scored(0.5, 0.8), 2), run("b", 1, scored(0.8, 0.7), 7)
    assert rule_of([a, b]) == NONE  # each fold chose differently; pooled, none wins
    c = run("c", 1, scored(0.8, 0.7), 1)
    assert rule_of([a, c]) == {"name": "min_size", "min_size": 10}
    # Not the folds of one cross-validation: their validation splits may overlap.
    assert rule_of([a, run("d", 0, scored(0.8, 0.7), 1)]) == NONE  # the same fold twice
    assert rule_of([a, run("e", 1, scored(0.8, 0.7), 1, folds=3)]) == NONE
    # A fold that has not chosen: no rule for the ensemble.
    (tmp_path / "c" / "postprocessing.json").unlink()
    assert rule_of([a, c]) == NONE
