#!/usr/bin/env bash
# Installs the real t5x (with airio and jestimator, which it imports) into the active venv
# from the unchanged source snapshots in ../shared/vendor, for the tests that run t5x's own
# train and eval binaries on our gin files. t5x is not on PyPI; users install it from git
# (README, Cloud TPU). Usage, inside the venv of `pip install -e '.[test]'`:
#   bash .ci/install_t5x.sh [VENDOR_DIR]      (default: $SYMBOL_TUNING_SHARED/vendor)
set -euo pipefail
cd "$(dirname "$0")/.."
vendor="${1:-${SYMBOL_TUNING_SHARED:-$(cd .. && pwd)/shared}/vendor}"
for name in t5x airio jestimator; do
  [ -f "$vendor/$name.tar.gz" ] || { echo "install_t5x: no $vendor/$name.tar.gz" >&2; exit 1; }
done
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
for name in t5x airio jestimator; do tar -xzf "$vendor/$name.tar.gz" -C "$src"; done
python=$(command -v python)
installer=(python -m pip install -q)
if python -m uv --version >/dev/null 2>&1; then installer=(python -m uv pip install -q --python "$python"); fi
# --no-deps: their setup.py files ask for git-only packages (clu, flax, seqio @ git+...) and
# tensorflow-cpu; the project's pinned stack already provides them.
"${installer[@]}" --no-deps "$src/t5x" "$src/airio" "$src/jestimator"
# What t5x and airio import beyond our pins (../shared/vendor/README.md), at versions that
# keep those pins: tests/requirements-t5x.txt.
"${installer[@]}" -r tests/requirements-t5x.txt
# t5x's setup.py packages only folders with an __init__.py; examples/decoder_only has none, so
# its network.py and layers.py (t5x's DecoderOnlyModel network) are copied beside its gin
# files, where a git checkout has them (a namespace package then imports them).
site=$(python -c 'import importlib.util, pathlib
print(pathlib.Path(importlib.util.find_spec("t5x").origin).parent)')
cp "$src"/t5x/t5x/examples/decoder_only/{network,layers}.py "$site/examples/decoder_only/"
python - <<'PY'
import t5x.train, t5x.eval, airio, jestimator  # noqa: F401
from t5x.examples.decoder_only import network  # noqa: F401
print("install_t5x: t5x, airio and jestimator import")
PY
