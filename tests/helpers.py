"""The contract every flexseg model honours, checked by one helper."""

from __future__ import annotations

import keras
import numpy as np


def run_model_contract(
    model_cls,
    init_kwargs: dict,
    input_data: np.ndarray,
    expected_output_shape: tuple,
    tmp_path,
    from_logits: bool = False,
) -> keras.Model:
    """Output shape, get_config round trip, .keras save/load and a few training steps.

    The training loss is read in training mode (dropout and batch statistics on), where a
    few optimizer steps on one fixed batch must lower it.
    """
    model = model_cls(**init_kwargs)
    output = model(input_data, training=False)
    assert tuple(output.shape) == expected_output_shape

    config = model.get_config()
    for key, value in init_kwargs.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert config[key] == expected, key
    revived = model_cls.from_config(config)
    assert revived.get_config() == config
    assert revived.count_params() == model.count_params()

    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, model_cls)
    assert loaded.get_config() == config
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.predict(input_data, verbose=0)),
        keras.ops.convert_to_numpy(model.predict(input_data, verbose=0)),
    )

    labels = np.zeros(expected_output_shape, "float32")
    labels[..., 0] = 1.0
    labels[:, : expected_output_shape[1] // 2, :, 0] = 0.0
    labels[:, : expected_output_shape[1] // 2, :, 1] = 1.0
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.CategoricalCrossentropy(from_logits=from_logits),
    )
    history = model.fit(
        input_data, labels, batch_size=len(input_data), epochs=5, shuffle=False, verbose=0
    )
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], losses
    return model
