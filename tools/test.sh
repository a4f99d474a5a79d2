#!/usr/bin/env bash
# Sets up a fresh machine and runs the test suite: README's test command.
#   tools/test.sh [pytest args...]
# Creates or reuses .venv, installs tf_lottery with the `test` and `tfmot` extras,
# installs Debian's Fashion-MNIST files when apt-get is usable as root, then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"
