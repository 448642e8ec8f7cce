"""The same weights give the same outputs on TensorFlow, JAX and PyTorch.

The fixture holds weights, inputs and outputs computed once on one backend by
scripts/make_parity_fixture.py; this test runs on every backend the suite runs on.
"""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from flexseg.models import FlexUNet

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "flex_unet_parity.npz"
CASES = ("batch_dilated", "group_gelu_logits", "instance_anisotropic_3d", "batch_3d_logits")


@pytest.mark.parametrize("case", CASES)
def test_same_weights_give_same_outputs(case):
    data = np.load(FIXTURE)
    model = FlexUNet(**json.loads(str(data[f"{case}/config"])))
    assert len(model.weights) == sum(k.startswith(f"{case}/weights/") for k in data.files)
    for w in model.weights:
        w.assign(data[f"{case}/weights/{w.path}"])
    output = keras.ops.convert_to_numpy(model(data[f"{case}/input"], training=False))
    np.testing.assert_allclose(output, data[f"{case}/output"], atol=1e-4, rtol=0)
