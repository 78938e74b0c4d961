#!/usr/bin/env bash
# The quality recipe end to end: build data from ../shared/data -> raysparse run (backbone + priors, mining,
# augmentation, Ray Train + DeepSpeed) -> OUT/model -> raysparse evaluate on every dev set (model; BM25-Kiwi,
# BM25-bigram, BM25 over the model's pieces, BM25-Kiwi over dictionary-translated queries) -> the untrained backbone
# (priors only) -> ablations of the trained model (one window; documents pruned to K terms) -> the dense bi-encoder
# and the BM25+sparse / BM25+dense hybrids (dense.sh) -> OUT/results.md.
#
#   benchmarks/quality/run.sh OUT            # the real run (<= 60 min on 2 CPU cores)
#   QUALITY_SET="train.max_steps=10" benchmarks/quality/run.sh OUT   # extra --set overrides (space separated)
#   QUALITY_DATA=/path/to/shared/data benchmarks/quality/run.sh OUT
#   QUALITY_DISTRACTORS=300 QUALITY_KLUE_DISTRACTORS=500 ...     # smaller dev corpora on a loaded machine
#
# Stages are cached by content hash under OUT/pipeline, so re-running with the same OUT resumes.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT" >&2
  exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
DATA="${QUALITY_DATA:-$REPO/../shared/data}"
DATA="$(cd "$DATA" && pwd)"
CONFIG="$REPO/benchmarks/quality/config.yaml"
export DS_ACCELERATOR=cpu RAY_AUTH_MODE=disabled
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$HOME/.cache/raysparse/torch_extensions}"
TIMES="$OUT/stage_times.tsv"
# kept across a resumed run (same OUT): the report lists every stage as it ran, the resume marked
[[ -s "$TIMES" ]] && echo -e "(resumed $(date -u +%H:%M) UTC)\t-" >> "$TIMES" || : > "$TIMES"
cd "$REPO"

stage() {  # stage NAME COMMAND...: run, time, fail loudly
  local name="$1"; shift
  local t0; t0=$(date +%s)
  echo "== $(date -u +%H:%M:%S) $name: $*" >&2
  "$@"
  echo -e "$name\t$(( $(date +%s) - t0 ))" >> "$TIMES"
}

stage build-data python benchmarks/quality/build_data.py "$OUT/data" --data "$DATA" \
  --distractors "${QUALITY_DISTRACTORS:-1000}" --klue-distractors "${QUALITY_KLUE_DISTRACTORS:-2000}" > "$OUT/build.log"

# python_docs_train.jsonl: the python-docs pairs minus the segments used as English dev distractors (build_data.py)
PARALLEL="[$DATA/bilingual/tatoeba/kor.txt,$DATA/bilingual/news-parallel-dev/korean-english-park.dev.ko,$DATA/bilingual/news-parallel-dev/jhe-koen-dev.ko,$OUT/data/parallel/python_docs_train.jsonl,$OUT/data/parallel/msmarco_1_800.jsonl]"
SETS=(--set "data.path=$OUT/data/train" --set "augment.parallel_text=$PARALLEL")
for kv in ${QUALITY_SET:-}; do SETS+=(--set "$kv"); done
RUN_CMD=(python -m raysparse run --config "$CONFIG" --out "$OUT/pipeline" "${SETS[@]}")
printf '%q ' "${RUN_CMD[@]}" > "$OUT/command.txt"
stage pipeline "${RUN_CMD[@]}"

MODEL_DIR="$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['info']['model_dir'])" "$OUT/pipeline/train/_stage.json")"
rm -rf "$OUT/model"
cp -r "$MODEL_DIR" "$OUT/model"

# Results of this model only, never mixed with an earlier model's: evaluations are kept across a re-run (resume) only
# when OUT/model has the same weights, else everything evaluated before is removed.
MODEL_KEY="$(sha256sum "$OUT/model/model.safetensors" | cut -c1-16)"
if [[ "$(cat "$OUT/eval/.model" 2>/dev/null)" != "$MODEL_KEY" ]]; then
  rm -rf "$OUT/eval" "$OUT/priors" "$OUT/ablations"
  mkdir -p "$OUT/eval" && echo "$MODEL_KEY" > "$OUT/eval/.model"
fi
done_already() { [[ -f "$1/metrics.json" ]] && echo "== $(date -u +%H:%M:%S) kept: $1" >&2; }
for dev in "$OUT"/data/dev/*/; do
  name="$(basename "$dev")"
  done_already "$OUT/eval/$name" && continue
  rm -rf "$OUT/eval/$name"  # what a killed evaluation left half-written
  stage "eval-$name" python -m raysparse evaluate --config "$CONFIG" "${SETS[@]}" --model "$OUT/model" \
    --bm25 kiwi --bm25 bigram --bm25 pieces --bm25 translated --translator "$OUT/translator.json" \
    --beir "$dev" --out "$OUT/eval/$name" > "$OUT/eval-$name.log"
done

# The untrained backbone with its priors (step 0), on the same dev sets: what training has to add to.
PRIORS_DIR="$(python -c "import json,sys; print(json.load(open(sys.argv[1]))['info']['backbone_dir'])" "$OUT/pipeline/backbone/_stage.json")"
for dev in "$OUT"/data/dev/msmarco-en-ko-distractors/ "$OUT"/data/dev/msmarco-ko-ko-distractors/; do
  name="$(basename "$dev")"
  done_already "$OUT/priors/$name" && continue
  rm -rf "$OUT/priors/$name"
  stage "priors-$name" python -m raysparse evaluate --config "$CONFIG" "${SETS[@]}" --model "$PRIORS_DIR" \
    --no-baseline --beir "$dev" --out "$OUT/priors/$name" > "$OUT/priors-$name.log"
done

# Ablations of the trained model by its encoding spec (no retraining). On a 2-core VM each evaluation of KLUE (long passages, ~4.5k windows) takes minutes, so one ablation per question:
# what truncating to the first window costs (KLUE), and what pruning documents to the top 100 terms costs (en->ko).
for variant in "klue-odqa-distractors|first window only|max_windows=1" \
               "msmarco-en-ko-distractors|top-100 doc terms|doc_top_k=100"; do
  IFS="|" read -r name label spec <<< "$variant"
  done_already "$OUT/ablations/$label/$name" && continue
  rm -rf "$OUT/ablations/$label/$name"
  stage "ablation-$label-$name" python -m raysparse evaluate --config "$CONFIG" "${SETS[@]}" --model "$OUT/model" \
    --no-baseline --spec "$spec" --beir "$OUT/data/dev/$name" --out "$OUT/ablations/$label/$name" >> "$OUT/ablation.log" 2>&1
done

# The dense bi-encoder (model.kind=dense, same data and budget) on every dev set, and the side-by-side tables with
# both hybrids (benchmarks/quality/dense.sh; report.py includes its tables). QUALITY_DENSE=0 skips it.
if [[ "${QUALITY_DENSE:-1}" != 0 ]]; then
  benchmarks/quality/dense.sh "$OUT" > "$OUT/dense.log"
fi

QUALITY_DATA_DIR="$DATA" python benchmarks/quality/report.py "$OUT" --config "$CONFIG" --priors "$OUT/priors"
echo "results: $OUT/results.md" >&2
