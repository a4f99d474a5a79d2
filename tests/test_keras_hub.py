"""A keras-hub backbone (built from a config: no download) through wrap, one training
step, prune and strip: every weight matrix masked, masked entries stay zero, the stripped
model computes what the masked one does."""

import numpy as np
import pytest

import tf_lottery as tfl

keras_hub = pytest.importorskip("keras_hub", reason="the `hub` extra is not installed")
import keras  # noqa: E402

pytestmark = pytest.mark.usefixtures("clean_keras")


def _bert():
    return keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=8)


def _inputs(n=4, seed=0):
    rng = np.random.default_rng(seed)
    return {"token_ids": rng.integers(0, 50, (n, 8)).astype("int32"),
            "segment_ids": np.zeros((n, 8), "int32"),
            "padding_mask": np.ones((n, 8), "int32")}


def test_wrap_masks_every_weight_matrix_of_a_bert_backbone_and_strips_back():
    backbone = _bert()
    masked = tfl.wrap(backbone)
    keys = set(tfl.mask_keys(masked))
    expected = {"token_embedding/embeddings", "position_embedding/embeddings",
                "segment_embedding/embeddings", "pooled_dense/kernel"}
    for block in ("transformer_layer_0", "transformer_layer_1"):
        expected |= {f"{block}/self_attention_layer/{p}/kernel"
                     for p in ("query", "key", "value", "attention_output")}
        expected |= {f"{block}/feedforward_intermediate_dense/kernel",
                     f"{block}/feedforward_output_dense/kernel"}
    assert keys == expected
    # Every weight with two or more dimensions is masked except biases (LayerNorm is 1-D).
    matrices = sum(int(np.prod(v.shape)) for v in backbone.trainable_weights
                   if len(v.shape) >= 2 and not v.path.endswith("bias"))
    report = tfl.sparsity_report(masked)
    assert report.weights == matrices and not report.unmasked
    x = _inputs()
    for name, value in backbone(x).items():
        np.testing.assert_allclose(masked(x)[name], value, atol=1e-6)

    # A classifier on the backbone, wrapped whole; one pruning round, one training step.
    backbone = _bert()
    head = keras.layers.Dense(3, name="head")(backbone.output["pooled_output"])
    classifier = tfl.wrap(keras.Model(backbone.input, head))
    masks = tfl.prune(classifier, rate=0.5, scope="global")
    tfl.set_masks(classifier, masks)
    classifier.compile(optimizer=keras.optimizers.Adam(1e-2),
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = tfl.get_prunable_weights(classifier)
    classifier.fit(x, np.array([0, 1, 2, 0]), epochs=1, batch_size=4, verbose=0)
    after = tfl.get_prunable_weights(classifier)
    key = "transformer_layer_0/self_attention_layer/query/kernel"
    assert not np.allclose(before[key], after[key])  # it trained
    kept = sum(int(m.sum()) for m in masks.values())
    assert kept == pytest.approx(0.5 * tfl.sparsity_report(classifier).weights, abs=1)
    plain = tfl.strip(classifier)
    stripped = {v.path: v.numpy() for v in plain.trainable_weights}
    query = next(v for p, v in stripped.items() if p.endswith(key))
    mask = masks[key]
    assert np.all(query[mask == 0] == 0) and np.any(query[mask == 1] != 0)
    np.testing.assert_allclose(plain(x), classifier(x), atol=1e-5)
