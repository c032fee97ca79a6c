#!/usr/bin/env bash
# Creates bench/peers/.venv with the Python peers' pinned packages
# (requirements.txt, constrained by constraints.txt). PyPI only.
#
#   bench/peers/setup.sh            # create or update the venv
#   PYTHON=python3.11 bench/peers/setup.sh
#   bench/peers/setup.sh --fresh    # delete the venv first
#
# It does not build Accel: see README.md (cargo build --release -p accel-cli).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
python="${PYTHON:-python3}"

if [[ "${1:-}" == "--fresh" ]]; then
    rm -rf "$venv"
fi
ver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
case "$ver" in
    3.10|3.11|3.12) ;;
    *) echo "warning: tested with Python 3.11; $python is $ver (constraints.txt may not resolve)" >&2 ;;
esac
if [[ ! -x "$venv/bin/python" ]]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -r "$here/requirements.txt" -c "$here/constraints.txt"
"$venv/bin/python" - <<'PY'
import onnxruntime, kserve, ray, fastapi, uvicorn, PIL, numpy
print("venv ready: onnxruntime", onnxruntime.__version__, "| ray", ray.__version__,
      "| fastapi", fastapi.__version__, "| uvicorn", uvicorn.__version__,
      "| pillow", PIL.__version__, "| numpy", numpy.__version__)
PY
echo "run: $venv/bin/python $here/run.py --help"
