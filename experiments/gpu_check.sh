#!/usr/bin/env bash
# The GPU check (experiments/gpu_check.py) as one call on a lent GPU machine, from the
# repository root:
#
#     bash experiments/gpu_check.sh OUT_DIR [--budget=SECONDS] [--tiny]
#
# The machine's image has jax with CUDA, flax, optax, orbax-checkpoint, numpy,
# scikit-image, scikit-learn and absl, but not ml_collections: put its wheel in .whl/
# first (python3 -m pip download --no-deps --only-binary=:all: -d .whl ml_collections)
# and carry that folder; this installs what .whl/ holds into a scratch folder.
set -euo pipefail
out=${1:?usage: bash experiments/gpu_check.sh OUT_DIR [gpu_check.py flags]}
shift
mkdir -p "$out"
if compgen -G ".whl/*.whl" > /dev/null; then
  site=$(mktemp -d)  # a scratch folder for the carried wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$site" .whl/*.whl
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1
python3 -c "import jax, flax, optax, ml_collections; print('jax', jax.__version__, jax.devices())"
exec python3 experiments/gpu_check.py "$out" "$@"
