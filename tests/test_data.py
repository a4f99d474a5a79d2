"""Tests for tf_lottery.data: IDX parsing, TFDS path (mocked), splits, synthetic data, augment.

Nothing here touches the network: IDX files are written by the tests, TFDS runs under
`tfds.testing.mock_data` (which works offline in tfds 4.9.10 for mnist and cifar10,
generating random examples from the features spec), and the "TFDS unavailable" path
replaces `tfds.load` by a function that raises.
"""

import gzip
import os
import struct

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_lottery import data

IDX_NAMES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}


def _idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: 0x0000, type 0x08, rank, big-endian dims, data."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write(path, payload: bytes, gz: bool):
    if gz:
        path = str(path) + ".gz"
        payload = gzip.compress(payload)
    with open(path, "wb") as f:
        f.write(payload)
    return path


def _write_mnist_like(directory, n_train=10, n_test=4, gz_train=True, gz_test=False):
    """Tiny MNIST-shaped IDX files; image i is filled with the value 20 * i + label."""
    arrays = {}
    for split, n, gz in (("train", n_train, gz_train), ("test", n_test, gz_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8) + (np.arange(n) * 20 % 256).astype(np.uint8)[:, None, None]
        images[:, 0, 0] = 255  # A pixel at full scale.
        _write(os.path.join(directory, IDX_NAMES[split, "images"]), _idx_bytes(images), gz)
        _write(os.path.join(directory, IDX_NAMES[split, "labels"]), _idx_bytes(labels), gz)
        arrays[split] = (images, labels)
    return arrays


# ----------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrip(tmp_path, gz):
    images = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4)
    labels = np.array([7, 0, 9], np.uint8)
    pi = _write(tmp_path / "img", _idx_bytes(images), gz)
    pl = _write(tmp_path / "lab", _idx_bytes(labels), gz)
    np.testing.assert_array_equal(data.read_idx(pi), images)
    np.testing.assert_array_equal(data.read_idx(pl), labels)
    assert data.read_idx(pi).dtype == np.uint8 and data.read_idx(pi).shape == (3, 2, 4)


def test_read_idx_big_endian_int32(tmp_path):
    values = np.array([1, -2, 70000], np.int32)
    payload = struct.pack(">HBBI", 0, 0x0C, 1, 3) + values.astype(">i4").tobytes()
    path = _write(tmp_path / "ints", payload, False)
    np.testing.assert_array_equal(data.read_idx(path), values)


@pytest.mark.parametrize(
    "payload, match",
    [
        (b"\x1f\x8b\x08\x00garbage", "cannot be decompressed"),
        (b"\x08\x03\x00\x00" + b"\x00" * 20, "bad magic number"),  # Little-endian header.
        (struct.pack(">HBB", 0, 0x07, 1) + b"\x00" * 8, "bad magic number"),  # Unknown type.
        (struct.pack(">HBB", 0, 0x08, 3) + struct.pack(">I", 2), "truncated"),
        (struct.pack(">HBBI", 0, 0x08, 1, 5) + b"\x01\x02\x03", "requires 13"),  # Short data.
        (b"", "bad magic number"),
    ],
)
def test_read_idx_rejects_corrupt_files(tmp_path, payload, match):
    path = _write(tmp_path / "bad", payload, False)
    with pytest.raises(ValueError, match=match) as info:
        data.read_idx(path)
    assert str(path) in str(info.value)


def test_load_mnist_from_idx_dir(tmp_path):
    arrays = _write_mnist_like(tmp_path, n_train=10, n_test=4)
    ds = data.load("mnist", data_dir=tmp_path, validation_size=3)
    assert ds.source == "idx" and ds.name == "mnist"
    assert ds.sizes == {"train": 7, "val": 3, "test": 4}
    assert ds.input_shape == (28, 28, 1) and ds.num_classes == 10
    assert ds.x_train.dtype == np.float32 and ds.x_train.shape == (7, 28, 28, 1)
    assert ds.y_train.dtype == np.int32 and ds.y_train.shape == (7,)
    assert ds.x_test.max() == 1.0 and ds.channel_mean is None
    # Test set: unchanged order, pixels / 255.
    np.testing.assert_allclose(ds.x_test[..., 0], arrays["test"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, arrays["test"][1])
    # Train + validation are exactly the 10 training examples, each kept with its label.
    images, labels = arrays["train"]
    ids = np.concatenate([ds.x_train[:, 1, 1, 0], ds.x_val[:, 1, 1, 0]]) * 255 / 20
    ids = np.rint(ids).astype(int)
    assert sorted(ids) == list(range(10))
    np.testing.assert_array_equal(np.concatenate([ds.y_train, ds.y_val]), labels[ids])


def test_load_idx_rejects_inconsistent_files(tmp_path):
    _write_mnist_like(tmp_path)
    labels = np.full(9, 3, np.uint8)  # 9 labels for 10 images.
    os.remove(tmp_path / "train-labels-idx1-ubyte.gz")
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(labels), False)
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        data.load("mnist", data_dir=tmp_path, validation_size=2)
    _write(tmp_path / "train-labels-idx1-ubyte", _idx_bytes(np.full(10, 12, np.uint8)), False)
    with pytest.raises(ValueError, match=r"labels outside \[0, 10\)"):
        data.load("mnist", data_dir=tmp_path, validation_size=2)


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(data.FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz")),
    reason=f"Debian's dataset-fashion-mnist is not installed in {data.FASHION_MNIST_DIR}",
)
def test_load_real_fashion_mnist_from_debian_package():
    ds = data.load("fashion_mnist")
    assert ds.source == "idx"
    assert ds.sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    assert ds.x_train.shape == (55_000, 28, 28, 1) and ds.x_train.dtype == np.float32
    assert 0.0 == ds.x_train.min() and ds.x_train.max() == 1.0
    assert set(np.unique(ds.y_test)) == set(range(10))
    assert np.bincount(ds.y_test).tolist() == [1000] * 10  # Fashion-MNIST's balanced test set.


# ---------------------------------------------------------------------------- TFDS


def test_tfds_path_cifar10_standardized(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=20):
        ds = data.load("cifar10", validation_size=5)
    assert ds.source == "tfds" and ds.num_classes == 10
    assert ds.sizes == {"train": 15, "val": 5, "test": 20}
    assert ds.x_train.shape == (15, 32, 32, 3) and ds.x_train.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and ds.y_train.min() >= 0 and ds.y_train.max() < 10
    # Per-channel standardization with the training split's statistics.
    np.testing.assert_allclose(ds.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-5)
    np.testing.assert_allclose(ds.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    assert ds.channel_mean.shape == (3,) and np.all((ds.channel_mean > 0) & (ds.channel_mean < 1))
    # The test set uses the training statistics: its pixels map back into [0, 1].
    raw = ds.x_test * ds.channel_std + ds.channel_mean
    assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5


def test_tfds_fallback_when_idx_files_missing(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        ds = data.load("mnist", data_dir=tmp_path, validation_size=2)
    assert ds.source == "tfds"
    assert ds.sizes == {"train": 10, "val": 2, "test": 12}
    assert ds.x_train.shape[1:] == (28, 28, 1) and 0 <= ds.x_train.min() <= ds.x_train.max() <= 1


def test_clear_error_when_no_source_works(tmp_path, monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def no_network(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds, "load", no_network)
    with pytest.raises(ValueError) as info:
        data.load("fashion_mnist", data_dir=tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "data_dir" in message
    assert "apt-get install dataset-fashion-mnist" in message and "no network" in message
    with pytest.raises(ValueError, match=r"'cifar100'.*data_dir"):
        data.load("cifar100")


# -------------------------------------------------------------- splits and errors


def test_validation_split_is_fixed_and_independent_of_run_seeds():
    np.random.seed(1)
    keras.utils.set_random_seed(1)
    a = data.load("synthetic")
    np.random.seed(2)
    keras.utils.set_random_seed(2)
    b = data.load("synthetic")
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert a.sizes == {"train": 800, "val": 200, "test": 500}
    c = data.load("synthetic", validation_size=100)
    assert c.sizes == {"train": 900, "val": 100, "test": 500}
    # Train and validation partition the same 1,000 examples.
    whole = lambda d: np.sort(np.concatenate([d.x_train, d.x_val]).reshape(1000, -1), axis=0)  # noqa: E731
    np.testing.assert_array_equal(whole(a), whole(c))
    zero = data.load("synthetic", validation_size=0)
    assert zero.sizes["val"] == 0 and zero.x_val.shape == (0, 8, 8, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="imagenet"), r"name='imagenet'.*cifar10.*mnist"),
        (dict(name="synthetic", validation_size=1000), r"validation_size=1000"),
        (dict(name="synthetic", validation_size=-1), r"validation_size=-1"),
        (dict(name="synthetic", synthetic_size=1), r"synthetic_size=1"),
        (dict(name="mnist", synthetic_size=100), r"only to name='synthetic'.*synthetic_size=100"),
    ],
)
def test_load_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.load(**kwargs)


def test_dataset_checks_its_arrays():
    x = np.zeros((2, 4, 4, 1), np.float32)
    y = np.zeros(2, np.int32)
    ok = data.Dataset(x, y, x[:0], y[:0], x, y, "t", 10, (4, 4, 1), "synthetic")
    assert ok.sizes == {"train": 2, "val": 0, "test": 2}
    with pytest.raises(ValueError, match="y_train"):
        data.Dataset(x, y.astype(np.int64), x[:0], y[:0], x, y, "t", 10, (4, 4, 1), "synthetic")
    with pytest.raises(ValueError, match="x_test"):
        data.Dataset(x, y, x[:0], y[:0], x.astype(np.float64), y, "t", 10, (4, 4, 1), "synthetic")


# ------------------------------------------------------------------------ synthetic


def test_synthetic_sizes_and_stable_test_set():
    small = data.load("synthetic", synthetic_size=100)
    assert small.sizes == {"train": 80, "val": 20, "test": 500}
    assert small.input_shape == (8, 8, 1) and small.num_classes == 10 and small.source == "synthetic"
    big = data.load("synthetic")
    np.testing.assert_array_equal(small.x_test, big.x_test)
    assert 0.0 <= big.x_train.min() and big.x_train.max() <= 1.0


def test_synthetic_is_learnable_by_a_small_mlp():
    ds = data.load("synthetic")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, batch_size=32, epochs=8, verbose=0)  # 200 steps.
    _, accuracy = model.evaluate(ds.x_test, ds.y_test, verbose=0)
    assert accuracy > 0.6  # Chance is 0.1.


# -------------------------------------------------------------------------- augment


def _candidates(image, pad):
    """All flips and shifted crops of one (H, W, C) image, as numpy arrays."""
    h, w = image.shape[:2]
    out = []
    for img in (image, image[:, ::-1]):
        padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)))
        out += [padded[i:i + h, j:j + w] for i in range(2 * pad + 1) for j in range(2 * pad + 1)]
    return out


def test_augment_is_a_flip_and_shift_of_each_image():
    images = np.random.default_rng(0).uniform(size=(6, 5, 5, 2)).astype(np.float32)
    out = data.augment(images, tf.constant([3, 4]), padding=2).numpy()
    assert out.shape == images.shape and out.dtype == np.float32
    for image, result in zip(images, out):
        assert any(np.array_equal(result, c) for c in _candidates(image, 2))


def test_augment_determinism_and_independence():
    images = np.repeat(np.random.default_rng(1).uniform(size=(1, 8, 8, 3)), 16, 0).astype(np.float32)
    a = data.augment(images, [7, 1])
    np.testing.assert_array_equal(a, data.augment(images, tf.constant([7, 1], tf.int64)))
    assert not np.array_equal(a, data.augment(images, [7, 2]))
    # Copies of one image get different flips/crops within a batch.
    assert len({r.tobytes() for r in a.numpy()}) > 1
    # Same result inside tf.function and a tf.data map.
    fn = tf.function(lambda x, s: data.augment(x, s))
    np.testing.assert_array_equal(a, fn(images, tf.constant([7, 1])))
    mapped = tf.data.Dataset.from_tensors(images).map(lambda x: data.augment(x, tf.constant([7, 1])))
    np.testing.assert_array_equal(a, next(iter(mapped)))
    # One image (H, W, C) works too.
    assert data.augment(images[0], [0, 0]).shape == (8, 8, 3)


def test_augment_bad_arguments():
    images = np.zeros((2, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="seed"):
        data.augment(images, [1, 2, 3])
    with pytest.raises(ValueError, match="images"):
        data.augment(np.zeros((4, 4), np.float32), [1, 2])
    with pytest.raises(ValueError, match="padding=-1"):
        data.augment(images, [1, 2], padding=-1)
