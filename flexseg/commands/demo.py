"""`make demo` (`flexseg-demo`): train on the built-in sample, evaluate on the unseen patient,
predict a few of its slices, and say where everything is."""

from __future__ import annotations

from pathlib import Path

from flexseg.commands._app import command
from flexseg.commands._report import format_evaluation, postprocess_run
from flexseg.config.schema import EvaluateConfig, InferConfig, TrainConfig

TTA = "flip"  # the demo's evaluation: the mean of the image's and its mirror's prediction


@command
def main(cfg: TrainConfig, run_dir: Path) -> None:
    """Trains the demo recipe, then evaluates, predicts and prints where the files are."""
    import numpy as np

    from flexseg import backend, training
    from flexseg.from_config import find_samples
    from flexseg.predict.evaluation import evaluate
    from flexseg.predict.inference import infer

    backend.use_compile_cache(cfg.trainer.compile_cache)
    summary = training.train(cfg, run_dir)
    if cfg.postprocess == "auto":
        postprocess_run(run_dir, TTA)
    scores = evaluate(EvaluateConfig(run_dir=str(run_dir), tta=TTA))
    test = find_samples(cfg.dataset, cfg.seed)["test"]
    if test[0].volume:  # the test cases' whole volumes, every channel file
        picks = list(dict.fromkeys(str(p) for sample in test for p in sample.images))
    else:
        picks = [str(test[int(i)].image) for i in np.linspace(0, len(test) - 1, 6)]
    written = infer(InferConfig(run_dir=str(run_dir), input=picks))
    previews = sorted((run_dir / "previews").glob("epoch_*.png"))
    print(format_evaluation(scores))
    print(f"training curves:   {run_dir / 'plots'}")
    if previews:
        print(f"epoch previews:    {previews[-1]} (and {len(previews) - 1} earlier)")
    if "overlay" in written[0]:
        print(
            f"test predictions:  {written[0]['overlay'].parent} (overlays), "
            f"{written[0]['mask'].parent} (palette masks)"
        )
    else:
        print(f"test predictions:  {written[0]['mask'].parent} (NIfTI label volumes)")
    print(f"fg_dice_volume={scores['fg_dice_volume_mean']:.4f} run_dir={summary['run_dir']}")
