"""Prediction: the predictor and its batching, what it reads and writes, ensembles,
post-processing, evaluation and export (`flexseg.predict.export.export`). It needs no
training module: a finished run is loaded through `flexseg.runs`."""

from flexseg.predict.ensembles import Ensemble, predictor_of
from flexseg.predict.evaluation import choose_postprocessing, evaluate
from flexseg.predict.inference import infer
from flexseg.predict.predictor import Predictor

__all__ = [
    "Ensemble",
    "Predictor",
    "choose_postprocessing",
    "evaluate",
    "infer",
    "predictor_of",
]
