#!/usr/bin/env bash
# The dense bi-encoder baseline of the quality recipe (issue 20), beside run.sh's sparse model and BM25:
# the same config, data, mined triples recipe and Ray Train + DeepSpeed budget (train.max_steps, batch size) with
# model.kind=dense -> OUT/dense/model -> raysparse evaluate on the dev sets -> the side-by-side tables
# (benchmarks/quality/systems.py: BM25-Kiwi, sparse, dense, BM25+sparse, BM25+dense on each set's test half).
#
#   benchmarks/quality/dense.sh OUT       # after (or inside) run.sh: OUT/data must exist (run.sh builds it)
#   QUALITY_DENSE_SETS="msmarco-ko-ko msmarco-en-ko" benchmarks/quality/dense.sh OUT   # only these dev sets
#   QUALITY_DENSE_SET="train.max_steps=40" ...  # extra --set overrides for the dense run only (space separated)
#
# Why a separate pipeline directory (OUT/dense/pipeline): its stages are keyed by the config, and model.kind is part
# of the backbone stage's key; sharing OUT/pipeline would replace the sparse model's cached stages.
# Everything else is the recipe's, the learning rate (2e-4) included: at train.lr=1e-3 the dense encoder collapsed
# (every text the same vector, InfoNCE stuck at ln 16; benchmarks/results/dense.md), at 2e-4 it did not.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT" >&2
  exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="$(cd "$1" && pwd)"
DATA="${QUALITY_DATA:-$REPO/../shared/data}"
DATA="$(cd "$DATA" && pwd)"
CONFIG="$REPO/benchmarks/quality/config.yaml"
export DS_ACCELERATOR=cpu RAY_AUTH_MODE=disabled
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$HOME/.cache/raysparse/torch_extensions}"
TIMES="$OUT/stage_times.tsv"
cd "$REPO"
if [[ ! -d "$OUT/data/dev" ]]; then
  echo "$0: $OUT/data/dev not found: run benchmarks/quality/run.sh $1 first (it builds the data)" >&2
  exit 2
fi

stage() {  # stage NAME COMMAND...: run, time, fail loudly
  local name="$1"; shift
  local t0; t0=$(date +%s)
  echo "== $(date -u +%H:%M:%S) $name: $*" >&2
  "$@"
  echo -e "$name\t$(( $(date +%s) - t0 ))" >> "$TIMES"
}

PARALLEL="[$DATA/bilingual/tatoeba/kor.txt,$DATA/bilingual/news-parallel-dev/korean-english-park.dev.ko,$DATA/bilingual/news-parallel-dev/jhe-koen-dev.ko,$OUT/data/parallel/python_docs_train.jsonl,$OUT/data/parallel/msmarco_1_800.jsonl]"
SETS=(--set "data.path=$OUT/data/train" --set "augment.parallel_text=$PARALLEL")
for kv in ${QUALITY_SET:-}; do SETS+=(--set "$kv"); done
DENSE=(--set model.kind=dense --set model.pooling=mean)
for kv in ${QUALITY_DENSE_SET:-}; do DENSE+=(--set "$kv"); done
mkdir -p "$OUT/dense"
RUN_CMD=(python -m raysparse run --config "$CONFIG" --out "$OUT/dense/pipeline" "${SETS[@]}" "${DENSE[@]}")
printf '%q ' "${RUN_CMD[@]}" > "$OUT/dense/command.txt"
stage dense-pipeline "${RUN_CMD[@]}"

MODEL_DIR="$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['info']['model_dir'])" "$OUT/dense/pipeline/train/_stage.json")"
rm -rf "$OUT/dense/model"
cp -r "$MODEL_DIR" "$OUT/dense/model"
MODEL_KEY="$(sha256sum "$OUT/dense/model/model.safetensors" | cut -c1-16)"
if [[ "$(cat "$OUT/dense/eval/.model" 2>/dev/null)" != "$MODEL_KEY" ]]; then
  rm -rf "$OUT/dense/eval"  # results of this model only, never an earlier one's
  mkdir -p "$OUT/dense/eval" && echo "$MODEL_KEY" > "$OUT/dense/eval/.model"
fi
for dev in "$OUT"/data/dev/*/; do
  name="$(basename "$dev")"
  if [[ -n "${QUALITY_DENSE_SETS:-}" && " $QUALITY_DENSE_SETS " != *" $name "* ]]; then continue; fi
  if [[ -f "$OUT/dense/eval/$name/model/metrics.json" ]]; then echo "== kept: dense/eval/$name" >&2; continue; fi
  rm -rf "$OUT/dense/eval/$name"
  stage "dense-eval-$name" python -m raysparse evaluate --config "$CONFIG" "${SETS[@]}" "${DENSE[@]}" \
    --model "$OUT/dense/model" --no-baseline --beir "$dev" --out "$OUT/dense/eval/$name" > "$OUT/dense-eval-$name.log"
done
# the split seed of the recipe's data (load_config needs data.path: the config's format is beir)
SEED="$(python -c "import sys; from raysparse.config import load_config; print(load_config(sys.argv[1], [sys.argv[2]]).data.seed)" "$CONFIG" "data.path=$OUT/data/train")"
python benchmarks/quality/systems.py "$OUT" --seed "$SEED"
