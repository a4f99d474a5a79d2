"""TFDS's real prepare-and-load path for cifar10 and mnist, offline.

`tests/test_data.py` runs TFDS under `tfds.testing.mock_data`, which never imports the
download / prepare code; a dependency missing there (`importlib_resources` on a fresh
install) only showed when a user ran a CIFAR preset. Here TFDS downloads small fake
source files, in the real formats, from an HTTP server on 127.0.0.1, extracts them,
writes its TFRecords into `tmp_path` (`download_and_prepare`) and reads them back
(`as_dataset`). Then the prepared `<tmp_path>/<name>` alone is copied to a fresh
data_dir, as README says to do for a machine without network, and
`tf_lottery.data.load(..., data_dir=<copy>)` loads it through our own `_load_tfds`.
A missing TFDS dependency fails these tests (no skip).

How TFDS is pointed at the local server (tensorflow-datasets 4.9.10):

* cifar10: `Cifar10._cifar_info` (a property holding the archive URL) is patched to
  return the same `CifarInfo` with a local URL.
* mnist: the class attribute `MNIST.URL` (the base URL of the four files) is patched,
  and the module constants `_TRAIN_EXAMPLES` / `_TEST_EXAMPLES`, which the builder uses
  as the number of examples to read from each file, are set to the fake files' sizes.
* Checksums: the local URLs are not in TFDS's registered checksums, and with
  `DownloadConfig(force_checksums_validation=False)` (the default, set explicitly)
  TFDS accepts unregistered URLs and only records their checksums.
* No GCS: `try_download_gcs=False`, and `gcs_utils._is_gcs_disabled` stays True, so
  TFDS neither fetches prepared data nor metadata from gs://tfds-data.
* Bounded time: `downloader.MAX_RETRIES` is 1 (TFDS's 10 retries with backoff take
  minutes when a download fails), and the server's sockets time out.

Any name lookup or socket connection beyond loopback is refused at once and recorded,
and the tests fail if one was attempted (`gcs_utils.exists` would swallow the OSError).
"""

import functools
import gzip
import http.server
import io
import shutil
import socket
import struct
import sys
import tarfile
import threading

import numpy as np
import pytest

import tensorflow_datasets as tfds  # A hard import: a broken TFDS must fail, not skip.
from tensorflow_datasets.core.download import downloader as tfds_downloader
from tensorflow_datasets.core.utils import gcs_utils

from tf_lottery import data

CIFAR_TRAIN_PER_FILE = 3  # five data_batch_<i>.bin files -> 15 training examples
CIFAR_TEST = 4
MNIST_TRAIN = 12
MNIST_TEST = 5
CIFAR_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                     "dog", "frog", "horse", "ship", "truck"]
SERVER_TIMEOUT_S = 10


# ------------------------------------------------------------------- fake source files


def _cifar_images(rng, n):
    return rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _cifar_batch_bytes(images, labels):
    """CIFAR-10 binary format: per record 1 label byte + 3072 bytes, channel-major (R, G, B)."""
    out = bytearray()
    for img, label in zip(images, labels):
        out.append(int(label))
        out += img.transpose(2, 0, 1).tobytes()
    return bytes(out)


def _make_cifar10(rng):
    """The cifar-10-binary.tar.gz archive, and the (images, labels) of each split."""
    files, train_x, train_y = {}, [], []
    for i in range(1, 6):
        x = _cifar_images(rng, CIFAR_TRAIN_PER_FILE)
        y = rng.integers(0, 10, size=CIFAR_TRAIN_PER_FILE).astype(np.uint8)
        files[f"data_batch_{i}.bin"] = _cifar_batch_bytes(x, y)
        train_x.append(x)
        train_y.append(y)
    test_x = _cifar_images(rng, CIFAR_TEST)
    test_y = np.arange(CIFAR_TEST, dtype=np.uint8) % 10
    files["test_batch.bin"] = _cifar_batch_bytes(test_x, test_y)
    files["batches.meta.txt"] = ("\n".join(CIFAR_LABEL_NAMES) + "\n\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    splits = {"train": (np.concatenate(train_x), np.concatenate(train_y)),
              "test": (test_x, test_y)}
    return buf.getvalue(), splits


def _idx_bytes(array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _make_mnist(rng):
    """The four gzipped IDX files {name: bytes}, and the (images, labels) of each split."""
    files, splits = {}, {}
    for split, stem, n in (("train", "train", MNIST_TRAIN), ("test", "t10k", MNIST_TEST)):
        x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=n).astype(np.uint8)
        files[f"{stem}-images-idx3-ubyte.gz"] = gzip.compress(_idx_bytes(x))
        files[f"{stem}-labels-idx1-ubyte.gz"] = gzip.compress(_idx_bytes(y))
        splits[split] = (x[..., np.newaxis], y)
    return files, splits


# ------------------------------------------------------------------------ local server


class _Handler(http.server.BaseHTTPRequestHandler):
    timeout = SERVER_TIMEOUT_S  # A stuck client connection cannot hold a thread forever.

    def __init__(self, *args, files, log, **kwargs):
        self._files, self._log = files, log
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 - http.server's naming.
        self._log.append(self.path)
        payload = self._files.get(self.path)
        if payload is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):  # Keep pytest output quiet.
        pass


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 at a free port serving `files` ({path: bytes})."""
    files, log = {}, []
    handler = functools.partial(_Handler, files=files, log=log)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    httpd.timeout = SERVER_TIMEOUT_S
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                              daemon=True)
    thread.start()
    try:
        yield {"url": f"http://127.0.0.1:{httpd.server_address[1]}", "files": files, "log": log}
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=SERVER_TIMEOUT_S)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Refuse (and record) name lookups and connections beyond loopback; no proxies, no GCS."""
    attempts = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def _allowed(sock, address):
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return True
        return address[0] in ("127.0.0.1", "::1", "localhost")

    def connect(sock, address):
        if not _allowed(sock, address):
            attempts.append(address)
            raise OSError(f"test_tfds_prepare: network access to {address!r} blocked")
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if not _allowed(sock, address):
            attempts.append(address)
            raise OSError(f"test_tfds_prepare: network access to {address!r} blocked")
        return real_connect_ex(sock, address)

    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        # Refused here too: a DNS lookup of a real host can hang for minutes offline.
        name = host.decode() if isinstance(host, bytes) else host
        if name not in (None, "127.0.0.1", "::1", "localhost"):
            attempts.append(name)
            raise socket.gaierror(f"test_tfds_prepare: name lookup of {name!r} blocked")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(gcs_utils, "_is_gcs_disabled", True)
    # TFDS retries a failed download 10 times with exponential backoff (minutes in all).
    monkeypatch.setattr(tfds_downloader, "MAX_RETRIES", 1)
    yield
    assert not attempts, f"TFDS tried to reach the network: {attempts}"


def _prepare(name, data_dir):
    """TFDS's own download_and_prepare + as_dataset; returns {split: (images, labels)}."""
    builder = tfds.builder(name, data_dir=str(data_dir))
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        try_download_gcs=False, force_checksums_validation=False))
    out = {}
    for split in ("train", "test"):
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        pairs = list(tfds.as_numpy(ds))
        out[split] = (np.stack([x for x, _ in pairs]), np.array([y for _, y in pairs]))
    return builder, out


def _copy_prepared(data_dir, name):
    """Copy <data_dir>/<name> alone to a new data_dir (as onto a machine without network)."""
    target = data_dir / "copied"
    shutil.copytree(data_dir / name, target / name)
    return target


def _rows(images, labels):
    """Order-free view of a split (TFDS shuffles examples when writing): sorted rows."""
    flat = np.concatenate([labels.reshape(-1, 1).astype(np.uint8),
                           images.reshape(len(images), -1).astype(np.uint8)], axis=1)
    return flat[np.lexsort(flat.T[::-1])]


def _assert_same_examples(got, expected):
    np.testing.assert_array_equal(_rows(*got), _rows(*expected))


def _raw_pixels(dataset, x):
    """Undo data.load's preprocessing back to uint8 pixels."""
    if dataset.channel_mean is not None:
        x = x * dataset.channel_std + dataset.channel_mean
    return np.rint(x * 255.0).astype(np.uint8)


def _check_loaded(dataset, expected, input_shape, validation_size):
    n_train = len(expected["train"][0])
    assert dataset.source == "tfds"
    assert dataset.input_shape == input_shape
    assert dataset.sizes == {"train": n_train - validation_size, "val": validation_size,
                             "test": len(expected["test"][0])}
    for split in ("train", "val", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        assert x.dtype == np.float32 and x.shape[1:] == input_shape
        assert y.dtype == np.int32 and y.min() >= 0 and y.max() < 10
    full_x = np.concatenate([dataset.x_train, dataset.x_val])
    full_y = np.concatenate([dataset.y_train, dataset.y_val])
    _assert_same_examples((_raw_pixels(dataset, full_x), full_y), expected["train"])
    _assert_same_examples((_raw_pixels(dataset, dataset.x_test), dataset.y_test),
                          expected["test"])


# ------------------------------------------------------------------------------- tests


def test_cifar10_prepare_and_load(server, tmp_path, monkeypatch):
    archive, expected = _make_cifar10(np.random.default_rng(10))
    server["files"]["/cifar/cifar-10-binary.tar.gz"] = archive
    cls = tfds.builder_cls("cifar10")
    original, url = cls._cifar_info, server["url"] + "/cifar/cifar-10-binary.tar.gz"
    monkeypatch.setattr(cls, "_cifar_info",
                        property(lambda self: original.fget(self)._replace(url=url)))

    builder, prepared = _prepare("cifar10", tmp_path)

    assert server["log"] == ["/cifar/cifar-10-binary.tar.gz"]
    assert builder.info.splits["train"].num_examples == 5 * CIFAR_TRAIN_PER_FILE
    assert builder.info.splits["test"].num_examples == CIFAR_TEST
    assert builder.info.features["label"].names == CIFAR_LABEL_NAMES
    for split in ("train", "test"):
        x, y = prepared[split]
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
        _assert_same_examples(prepared[split], expected[split])

    # As README says: copy only the prepared <data_dir>/cifar10 (not downloads/) over.
    copied = _copy_prepared(tmp_path, "cifar10")
    dataset = data.load("cifar10", data_dir=copied, validation_size=5)
    _check_loaded(dataset, expected, (32, 32, 3), validation_size=5)
    assert dataset.channel_mean.shape == (3,) and dataset.channel_std.shape == (3,)
    # Standardized with the statistics of the training split (validation excluded).
    np.testing.assert_allclose(dataset.x_train.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(dataset.x_train.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    assert server["log"] == ["/cifar/cifar-10-binary.tar.gz"]  # Loaded, not downloaded again.


def test_mnist_prepare_and_load(server, tmp_path, monkeypatch):
    files, expected = _make_mnist(np.random.default_rng(28))
    for name, payload in files.items():
        server["files"][f"/mnist/{name}"] = payload
    cls = tfds.builder_cls("mnist")
    monkeypatch.setattr(cls, "URL", server["url"] + "/mnist/")
    module = sys.modules[cls.__module__]
    monkeypatch.setattr(module, "_TRAIN_EXAMPLES", MNIST_TRAIN)
    monkeypatch.setattr(module, "_TEST_EXAMPLES", MNIST_TEST)

    builder, prepared = _prepare("mnist", tmp_path)

    assert sorted(server["log"]) == sorted(f"/mnist/{name}" for name in files)
    assert builder.info.splits["train"].num_examples == MNIST_TRAIN
    assert builder.info.splits["test"].num_examples == MNIST_TEST
    for split in ("train", "test"):
        x, y = prepared[split]
        assert x.dtype == np.uint8 and x.shape[1:] == (28, 28, 1)
        _assert_same_examples(prepared[split], expected[split])

    # The copy holds TFDS's directories, not the four IDX files: load goes to TFDS.
    copied = _copy_prepared(tmp_path, "mnist")
    dataset = data.load("mnist", data_dir=copied, validation_size=3)
    _check_loaded(dataset, expected, (28, 28, 1), validation_size=3)
    assert dataset.channel_mean is None
    assert dataset.x_train.min() >= 0.0 and dataset.x_train.max() <= 1.0
    assert len(server["log"]) == len(files)  # Loaded, not downloaded again.
