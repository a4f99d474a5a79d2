#!/usr/bin/env bash
# README's first command: set up a fresh machine and run a small lottery-ticket
# experiment on real data (LeNet-300-100 on Fashion-MNIST, with controls).
#   tools/quickstart.sh [extra flags for tf_lottery.main...]
set -euo pipefail
cd "$(dirname "$0")/.."
source tools/setup_env.sh
exec .venv/bin/python -m tf_lottery.main --flagfile=configs/quickstart.flags "$@"
