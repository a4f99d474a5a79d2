"""Datasets for lottery-ticket experiments: local IDX files, TFDS, and a synthetic set.

`load(name)` returns a `Dataset` of preprocessed numpy arrays with a fixed validation
split held out of the training set. Sources, in the order tried:

* `mnist`, `fashion_mnist`: IDX files (the original LeCun / Zalando format, gzipped or
  not) in `data_dir`; for Fashion-MNIST `data_dir` defaults to
  `/usr/share/datasets/fashion-mnist`, where Debian's `dataset-fashion-mnist` package
  installs them. If they are missing, TFDS (`tfds.load(name, data_dir=data_dir)`).
* `cifar10`, `cifar100`: TFDS only.
* `synthetic`: generated in memory (small, deterministic, learnable), for tests.

TFDS reads a prepared dataset without the network; one that is not prepared is
downloaded only when TFDS's server answers (checked first, in seconds: TFDS's own ten
retries with backoff take about 3.5 minutes to fail without a network).

Preprocessing:

* MNIST / Fashion-MNIST: pixels / 255 as float32 in [0, 1], shape (N, 28, 28, 1)
  (Frankle & Carbin 2019 feed raw scaled pixels to LeNet).
* CIFAR-10 / 100: pixels / 255, then per-channel standardization
  `(x - mean) / std` with the mean and std of the training split (the validation
  examples excluded), stored in `Dataset.channel_mean` / `channel_std`. Note that
  open_lth normalizes CIFAR with the ImageNet constants (0.485, 0.456, 0.406) /
  (0.229, 0.224, 0.225) instead; both are close to the CIFAR statistics.
  Training-time flip-and-crop augmentation is `augment`, applied per batch.

The validation split is a fixed permutation drawn with `SPLIT_SEED`, independent of
any run seed, so every experiment on a dataset shares one validation set.
"""

from __future__ import annotations

import dataclasses
import gzip
import numbers
import os
import socket

import numpy as np
import tensorflow as tf

__all__ = [
    "DATASETS",
    "train_examples",
    "Dataset",
    "DatasetInfo",
    "FASHION_MNIST_DIR",
    "SPLIT_SEED",
    "augment",
    "load",
    "read_idx",
]

#: Seed of the permutation choosing the validation examples (shared by all runs).
SPLIT_SEED = 0
#: Where Debian's `dataset-fashion-mnist` package installs the IDX files.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

_SYNTHETIC_SHAPE = (8, 8, 1)
_SYNTHETIC_CLASSES = 10
_SYNTHETIC_TRAIN = 1000
_SYNTHETIC_TEST = 500
_SYNTHETIC_SEED = 20190306  # Fixed: the synthetic data never depends on a run seed.
_SYNTHETIC_NOISE = 0.45

_PAPER_VALIDATION_SIZE = 5000

# IDX element types: code -> big-endian numpy dtype (LeCun's format description).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------- Dataset


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A preprocessed dataset split into train / validation / test numpy arrays.

    Attributes:
      x_train, x_val, x_test: float32 arrays of shape `(N, H, W, C)`, preprocessed
        (see the module docstring); `(H, W, C) == input_shape`.
      y_train, y_val, y_test: int32 arrays of shape `(N,)`, class ids in
        `[0, num_classes)`.
      name: registry name, e.g. "fashion_mnist".
      num_classes: number of classes, e.g. 10.
      input_shape: `(H, W, C)` of one example, e.g. `(28, 28, 1)`.
      source: where the data came from: "idx", "tfds" or "synthetic".
      channel_mean, channel_std: float32 arrays of shape `(C,)` used to standardize
        the pixels after scaling to [0, 1] (CIFAR), or `None` when the pixels are only
        scaled (MNIST-like, synthetic). Apply the same to new images at inference.

    Raises:
      ValueError: at construction, if the arrays' dtypes, ranks or lengths disagree
        with each other or with `input_shape`.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    name: str
    num_classes: int
    input_shape: tuple
    source: str
    channel_mean: np.ndarray | None = None
    channel_std: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
        if self.source not in ("idx", "tfds", "synthetic"):
            raise ValueError(
                f"`source` must be 'idx', 'tfds' or 'synthetic'. Received: source={self.source!r}."
            )
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.shape[1:] != self.input_shape:
                raise ValueError(
                    f"`x_{split}` must be a float32 numpy array of shape (N, "
                    f"{', '.join(map(str, self.input_shape))}). Received: "
                    f"{getattr(x, 'dtype', type(x).__name__)} array of shape {getattr(x, 'shape', None)}."
                )
            if not isinstance(y, np.ndarray) or y.dtype != np.int32 or y.shape != (len(x),):
                raise ValueError(
                    f"`y_{split}` must be an int32 numpy array of shape ({len(x)},) matching "
                    f"x_{split}. Received: {getattr(y, 'dtype', type(y).__name__)} array of "
                    f"shape {getattr(y, 'shape', None)}."
                )

    @property
    def sizes(self) -> dict[str, int]:
        """Number of examples per split: `{"train": ..., "val": ..., "test": ...}`."""
        return {"train": len(self.x_train), "val": len(self.x_val), "test": len(self.x_test)}

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, source={self.source!r}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, sizes={self.sizes})"
        )


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a registered dataset (known without loading it).

    Attributes:
      name: registry name.
      num_classes: number of classes.
      input_shape: `(H, W, C)` of one example.
      num_train: size of the full training set before the validation split
        (for `synthetic`, the default `synthetic_size`).
      num_test: size of the test set.
      sources: the sources `load` tries, in order ("idx", "tfds", "synthetic").
      default_data_dir: directory searched for IDX files when `data_dir` is None.
    """

    name: str
    num_classes: int
    input_shape: tuple
    num_train: int
    num_test: int
    sources: tuple
    default_data_dir: str | None = None


DATASETS: dict[str, DatasetInfo] = {
    "mnist": DatasetInfo("mnist", 10, (28, 28, 1), 60000, 10000, ("idx", "tfds")),
    "fashion_mnist": DatasetInfo(
        "fashion_mnist", 10, (28, 28, 1), 60000, 10000, ("idx", "tfds"), FASHION_MNIST_DIR),
    "cifar10": DatasetInfo("cifar10", 10, (32, 32, 3), 50000, 10000, ("tfds",)),
    "cifar100": DatasetInfo("cifar100", 100, (32, 32, 3), 50000, 10000, ("tfds",)),
    "synthetic": DatasetInfo(
        "synthetic", _SYNTHETIC_CLASSES, _SYNTHETIC_SHAPE, _SYNTHETIC_TRAIN, _SYNTHETIC_TEST,
        ("synthetic",)),
}


# ------------------------------------------------------------------------------ IDX


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (the MNIST / Fashion-MNIST format), gzipped or not.

    Format (LeCun et al., http://yann.lecun.com/exdb/mnist/): two zero bytes, a type
    byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64),
    a byte giving the number of dimensions `d`, `d` big-endian uint32 sizes, then the
    data in C order, big-endian. Gzip compression is detected from the content (magic
    bytes 1f 8b), not from the file name.

    Args:
      path: file path.

    Returns:
      A numpy array with the file's shape and native-endian dtype of the file's type
      (uint8 for MNIST images `(N, 28, 28)` and labels `(N,)`).

    Raises:
      ValueError: if the file cannot be decompressed, has a bad magic number or type
        byte, or its length disagrees with the sizes in its header.
      OSError: if the file cannot be opened.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise ValueError(
                f"IDX file {path!r} looks gzipped but cannot be decompressed ({err}). "
                "The file is corrupt or truncated: download it again."
            ) from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"{path!r} is not an IDX file: bad magic number {raw[:4].hex() or '(empty)'} "
            "(expected 0x00 0x00, a type byte in 08 09 0b 0c 0d 0e, and the rank, e.g. "
            "00000803 for images). Pass the path of an IDX file such as train-images-idx3-ubyte.gz."
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"IDX file {path!r} is truncated: its header declares {ndim} dimensions but "
            f"the file has only {len(raw)} bytes. Download it again."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"IDX file {path!r} has {len(raw)} bytes but its header (shape {shape}, "
            f"{dtype.name}) requires {expected}. The file is corrupt or truncated: "
            "download it again."
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find_idx(directory: str, stem: str, kind: str, rank: int) -> str | None:
    for candidate in (
        f"{stem}-{kind}-idx{rank}-ubyte.gz",
        f"{stem}-{kind}-idx{rank}-ubyte",
        f"{stem}-{kind}.idx{rank}-ubyte",  # LeCun's files unzipped by some tools.
    ):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    return None


def _load_idx_dir(directory: str, info: DatasetInfo):
    """Return ((x_train, y_train), (x_test, y_test)) uint8/int arrays, or None if absent."""
    paths = {}
    for split, stem in (("train", "train"), ("test", "t10k")):
        for kind, rank in (("images", 3), ("labels", 1)):
            path = _find_idx(directory, stem, kind, rank)
            if path is None:
                return None
            paths[split, kind] = path
    out = []
    for split in ("train", "test"):
        images, labels = read_idx(paths[split, "images"]), read_idx(paths[split, "labels"])
        if images.ndim != 3 or images.shape[1:] != info.input_shape[:2] or labels.ndim != 1:
            raise ValueError(
                f"IDX files {paths[split, 'images']!r} / {paths[split, 'labels']!r} hold "
                f"shapes {images.shape} / {labels.shape}; {info.name} needs (N, "
                f"{info.input_shape[0]}, {info.input_shape[1]}) images and (N,) labels. "
                "Point data_dir to the right dataset."
            )
        if len(images) != len(labels):
            raise ValueError(
                f"IDX files {paths[split, 'images']!r} and {paths[split, 'labels']!r} hold "
                f"{len(images)} images but {len(labels)} labels. Download them again."
            )
        if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
            raise ValueError(
                f"IDX file {paths[split, 'labels']!r} has labels outside "
                f"[0, {info.num_classes}) (min {labels.min()}, max {labels.max()}). "
                "The file is corrupt or belongs to another dataset."
            )
        out.append((images[..., np.newaxis], labels))
    return tuple(out)


# ----------------------------------------------------------------------------- TFDS


def _load_tfds(info: DatasetInfo, data_dir: str | None):
    """Return ((x_train, y_train), (x_test, y_test)) from TFDS; may raise anything."""
    import tensorflow_datasets as tfds  # Lazy: heavy import, only needed here.

    def read(download: bool):
        out = []
        for split in ("train", "test"):
            # Not batch_size=-1: it batches by info.splits.total_num_examples, which is 0
            # under tfds.testing.mock_data offline (no metadata), making TFDS batch by
            # sys.maxsize and abort the process. Chunked batching works for both.
            ds = tfds.load(info.name, split=split, as_supervised=True, data_dir=data_dir,
                           download=download)
            xs, ys = [], []
            for x, y in tfds.as_numpy(ds.batch(10_000)):
                xs.append(x)
                ys.append(y)
            if not xs:
                raise ValueError(f"TFDS returned an empty {split!r} split for {info.name!r}.")
            out.append((np.concatenate(xs), np.concatenate(ys)))
        return tuple(out)

    try:  # prepared already (or mocked): no network needed
        return read(download=False)
    except Exception:  # noqa: BLE001 - not prepared: download it, if the network is there
        _check_download_reachable()
        return read(download=True)


#: Where TFDS downloads the datasets of this module from, checked before a download.
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def _check_download_reachable(timeout: float = 5.0) -> None:
    """Raises ``ConnectionError`` at once when TFDS could not download: no proxy is set
    and ``_DOWNLOAD_HOST`` does not answer within ``timeout`` seconds. (TFDS itself
    retries ten times with exponential backoff, about 3.5 minutes, before failing.)"""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY")):
        return  # the proxy decides; let TFDS try
    try:
        socket.create_connection(_DOWNLOAD_HOST, timeout=timeout).close()
    except OSError as err:
        raise ConnectionError(
            f"no network: {_DOWNLOAD_HOST[0]} is unreachable ({err}), so TFDS cannot "
            "download the dataset") from None


# ------------------------------------------------------------------------ synthetic


def _synthetic(num_train: int):
    """Class templates plus Gaussian noise; deterministic, independent of any run seed."""
    train_seq, test_seq, template_seq = np.random.SeedSequence(_SYNTHETIC_SEED).spawn(3)
    templates = np.random.default_rng(template_seq).uniform(
        0.0, 1.0, size=(_SYNTHETIC_CLASSES, *_SYNTHETIC_SHAPE))

    def draw(seq, n):
        rng = np.random.default_rng(seq)
        y = rng.integers(0, _SYNTHETIC_CLASSES, size=n)
        x = templates[y] + rng.normal(0.0, _SYNTHETIC_NOISE, size=(n, *_SYNTHETIC_SHAPE))
        return np.clip(x, 0.0, 1.0).astype(np.float32), y.astype(np.int32)

    return draw(train_seq, num_train), draw(test_seq, _SYNTHETIC_TEST)


# ----------------------------------------------------------------------------- load


def _split_indices(n: int, validation_size: int):
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    return np.sort(perm[validation_size:]), np.sort(perm[:validation_size])


def train_examples(name: str, *, validation_size: int | None = None,
                   synthetic_size: int | None = None) -> int:
    """Examples in the training split ``load`` returns for these arguments, known
    without loading the data (e.g. to count iterations per epoch of a finished run).

    Raises:
      ValueError: on an unknown ``name``.
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"Unknown dataset {name!r}. Available: {sorted(DATASETS)}.")
    if key == "synthetic":
        total = _SYNTHETIC_TRAIN if synthetic_size is None else int(synthetic_size)
        default_val = total // 5
    else:
        total, default_val = DATASETS[key].num_train, _PAPER_VALIDATION_SIZE
    return total - (default_val if validation_size is None else int(validation_size))


def load(name: str, *, data_dir: str | os.PathLike | None = None,
         validation_size: int | None = None, synthetic_size: int | None = None) -> Dataset:
    """Load a registered dataset, preprocessed and split into train / validation / test.

    Args:
      name: one of `DATASETS`: "mnist", "fashion_mnist", "cifar10", "cifar100",
        "synthetic" (case-insensitive, "-" read as "_").
      data_dir: for mnist / fashion_mnist, a directory holding the four IDX files
        (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`,
        `t10k-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`); default
        `FASHION_MNIST_DIR` for fashion_mnist, none for mnist. If the files are not
        there, and for CIFAR, it is passed to `tfds.load` as its `data_dir` (None: the
        TFDS default, `~/tensorflow_datasets`).
      validation_size: number of training examples held out as the validation set,
        `0 <= validation_size < number of training examples`. None means the
        default: 5,000 for real datasets (Frankle & Carbin 2019) and 1/5 of the
        training examples (200) for `synthetic`.
      synthetic_size: for `synthetic` only, the number of training examples
        (validation included), int >= 2; default 1,000. The test set has 500.

    Returns:
      A `Dataset`. Sizes for the real datasets with the default split: MNIST and
      Fashion-MNIST 55,000 / 5,000 / 10,000 (28x28x1); CIFAR 45,000 / 5,000 / 10,000
      (32x32x3). Synthetic: 800 / 200 / 500 examples of 8x8x1, 10 classes.

    Raises:
      ValueError: on an unknown `name`; a `validation_size` or `synthetic_size` out of
        range (or `synthetic_size` for a real dataset); a corrupt IDX file; or when
        neither IDX files nor TFDS can provide the data (the message lists the paths
        tried and how to fix it).
    """
    key = name.lower().replace("-", "_") if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(
            f"Unknown dataset `name`. Received: name={name!r}. "
            f"Expected one of: {', '.join(sorted(DATASETS))}."
        )
    info = DATASETS[key]
    if synthetic_size is not None and key != "synthetic":
        raise ValueError(
            f"`synthetic_size` applies only to name='synthetic'. Received: "
            f"synthetic_size={synthetic_size!r} with name={name!r}. Leave it None."
        )
    channel_mean = channel_std = None

    if key == "synthetic":
        if synthetic_size is None:
            synthetic_size = _SYNTHETIC_TRAIN
        if (isinstance(synthetic_size, bool) or not isinstance(synthetic_size, numbers.Integral)
                or synthetic_size < 2):
            raise ValueError(
                "`synthetic_size` must be an integer >= 2 (training examples, validation "
                f"included). Received: synthetic_size={synthetic_size!r}."
            )
        (x_full, y_full), (x_test, y_test) = _synthetic(int(synthetic_size))
        source = "synthetic"
        default_val = int(synthetic_size) // 5
    else:
        (x_full, y_full), (x_test, y_test), source = _load_real(info, data_dir)
        default_val = _PAPER_VALIDATION_SIZE

    n = len(x_full)
    if validation_size is None:
        validation_size = default_val
    if (isinstance(validation_size, bool) or not isinstance(validation_size, numbers.Integral)
            or not 0 <= validation_size < n):
        raise ValueError(
            f"`validation_size` must be an integer in [0, {n}) for {key!r}, which has {n} "
            f"training examples. Received: validation_size={validation_size!r}. "
            "Pass e.g. validation_size=5000 (the paper's), or 0 for no validation set."
        )
    train_idx, val_idx = _split_indices(n, int(validation_size))

    if key != "synthetic":
        # uint8 pixels -> float32 in [0, 1].
        x_full = x_full.astype(np.float32)
        x_full /= 255.0
        x_test = x_test.astype(np.float32)
        x_test /= 255.0
    x_train, y_train = x_full[train_idx], y_full[train_idx]
    x_val, y_val = x_full[val_idx], y_full[val_idx]
    del x_full
    if key in ("cifar10", "cifar100"):
        channel_mean = x_train.mean(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        channel_std = x_train.std(axis=(0, 1, 2), dtype=np.float64).astype(np.float32)
        channel_std = np.maximum(channel_std, np.float32(1e-6))
        for x in (x_train, x_val, x_test):
            x -= channel_mean
            x /= channel_std

    return Dataset(
        x_train=x_train, y_train=y_train.astype(np.int32),
        x_val=x_val, y_val=y_val.astype(np.int32),
        x_test=x_test, y_test=np.asarray(y_test).astype(np.int32),
        name=key, num_classes=info.num_classes, input_shape=info.input_shape,
        source=source, channel_mean=channel_mean, channel_std=channel_std,
    )


def _load_real(info: DatasetInfo, data_dir):
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    tried = []
    if "idx" in info.sources:
        idx_dir = data_dir if data_dir is not None else info.default_data_dir
        if idx_dir is not None:
            tried.append(f"IDX files in {idx_dir}")
            found = _load_idx_dir(idx_dir, info)
            if found is not None:
                return (*found, "idx")
    try:
        train, test = _load_tfds(info, data_dir)
    except Exception as err:  # noqa: BLE001 - any TFDS failure gets one clear message.
        tried.append(f"TFDS {info.name!r} in {data_dir or 'its default data_dir'} "
                     f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")
        fix = {
            "fashion_mnist": "apt-get install dataset-fashion-mnist (IDX files in "
                             f"{FASHION_MNIST_DIR}), or pass as `data_dir` a "
                             "directory with the four IDX files or a prepared TFDS data_dir",
            "mnist": "pass as `data_dir` a directory with the four MNIST IDX files "
                     "(train-images-idx3-ubyte.gz, ...) or a prepared TFDS data_dir",
        }.get(info.name, "prepare it with TFDS on a machine with network (python -c "
                         f"\"import tensorflow_datasets as tfds; tfds.builder('{info.name}', "
                         "data_dir='tfds_data').download_and_prepare()\"), copy "
                         f"tfds_data/{info.name} here and pass its parent as `data_dir` "
                         "(README, Experiments)")
        raise ValueError(
            f"Cannot load dataset {info.name!r}: tried {'; '.join(tried)}. Fix: {fix}."
        ) from err
    (x_train, y_train), (x_test, y_test) = train, test
    for x, split in ((x_train, "train"), (x_test, "test")):
        if x.shape[1:] != info.input_shape:
            raise ValueError(
                f"TFDS {info.name!r} {split} images have shape {x.shape[1:]}, expected "
                f"{info.input_shape}. Check data_dir={data_dir!r}."
            )
    return (x_train, y_train), (x_test, y_test), "tfds"


# -------------------------------------------------------------------------- augment


def augment(images, seed, *, padding: int = 4) -> tf.Tensor:
    """CIFAR flip-and-crop augmentation, deterministic in `seed` (stateless random ops).

    Each image is independently flipped left-right with probability 1/2, zero-padded
    by `padding` pixels on every side and cropped back to its size at a random offset
    (He et al. 2016; open_lth's `RandomHorizontalFlip` + `RandomCrop(32, 4)`). Padding
    is applied to the preprocessed images, so pad pixels are 0 in standardized units
    (the channel mean) rather than black as in open_lth, which pads raw pixels.

    The flip uses `tf.image.stateless_random_flip_left_right` (independent per image
    on a batch); the crop offsets come from `tf.random.stateless_uniform` and are
    applied by gathering rows and columns, because `tf.image.stateless_random_crop`
    would cut the whole batch at one offset. The same `images` and `seed` always give
    the same output, in eager mode, `tf.function` or a `tf.data` map.

    Args:
      images: float tensor/array `(N, H, W, C)` (or one image `(H, W, C)`), any float
        dtype (float32 expected); the rank must be known.
      seed: int32/int64 tensor or sequence of shape `(2,)`, e.g. `[run_seed, step]`.
      padding: pixels padded on each side before the crop, int >= 0 (0 disables the
        crop).

    Returns:
      A tensor with the shape and dtype of `images`.

    Raises:
      ValueError: if `images` is not rank 3 or 4, `seed` is not shape `(2,)`, or
        `padding` is negative.
    """
    if isinstance(padding, bool) or not isinstance(padding, numbers.Integral) or padding < 0:
        raise ValueError(
            f"`padding` must be an integer >= 0 (pixels). Received: padding={padding!r}.")
    images = tf.convert_to_tensor(images)
    rank = images.shape.rank
    if rank not in (3, 4):
        raise ValueError(
            "`images` must be a batch (N, H, W, C) or one image (H, W, C). "
            f"Received: images with shape {images.shape}."
        )
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64) or not seed.shape.is_compatible_with([2]):
        raise ValueError(
            "`seed` must be an int32/int64 tensor of shape (2,), e.g. "
            f"tf.constant([run_seed, step]). Received: {seed.dtype.name} tensor of shape {seed.shape}."
        )
    seed = tf.cast(seed, tf.int64)  # int32 and int64 seeds give the same augmentation.
    single = rank == 3
    if single:
        images = images[tf.newaxis]
    flip_seed, crop_seed = tf.unstack(tf.random.split(seed, 2))
    out = tf.image.stateless_random_flip_left_right(images, seed=flip_seed)
    if padding:
        shape = tf.shape(out)
        n, h, w = shape[0], shape[1], shape[2]
        padded = tf.pad(out, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
        offsets = tf.random.stateless_uniform(
            [n, 2], seed=crop_seed, minval=0, maxval=2 * padding + 1, dtype=tf.int32)
        rows = offsets[:, :1] + tf.range(h)[tf.newaxis, :]  # (N, H)
        cols = offsets[:, 1:] + tf.range(w)[tf.newaxis, :]  # (N, W)
        out = tf.gather(padded, rows, axis=1, batch_dims=1)  # (N, H, W + 2p, C)
        out = tf.gather(out, cols, axis=2, batch_dims=1)  # (N, H, W, C)
        out = tf.ensure_shape(out, images.shape)
    return out[0] if single else out
