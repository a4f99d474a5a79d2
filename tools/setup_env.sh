# Sourced by tools/test.sh and tools/quickstart.sh: the one place that installs things.
# Creates or reuses .venv, installs the package with the test, tfmot and hub extras, and
# installs Debian's dataset-fashion-mnist when apt-get is usable as root.
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "[setup] installing tf_lottery[test,tfmot,hub] into .venv"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test,tfmot,hub]"
FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ -f "$FASHION" ]; then
  :
elif [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "[setup] installing Debian's dataset-fashion-mnist"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist >/dev/null
else
  echo "[setup] not root or no apt-get: skipping dataset-fashion-mnist (tests on real data will be skipped)"
fi
