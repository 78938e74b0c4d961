#!/usr/bin/env bash
# Synonym discovery benchmark end to end (docs/synonyms.md):
#   1. build the quality recipe's data (MS MARCO train/dev, parallel pairs) from ../shared/data;
#   2. `raysparse synonyms loop` with benchmarks/synonyms/loop.yaml: baseline job (NO shared glossaries) ->
#      discovery from its trained model, precision@k against the held-aside glossaries (kengdic, python-docs
#      glossary) -> the same job with the discovered pairs in augment.dictionaries -> both arms on the MS MARCO
#      en->ko and ko->en dev sets;
#   3. benchmarks/synonyms/report.py writes OUT/results.md (copy the tables into benchmarks/synonyms/results.md).
#
#   benchmarks/synonyms/run.sh OUT                   # ~15 min on 2 idle CPU cores
#   SYN_SET="train.max_steps=60" benchmarks/synonyms/run.sh OUT   # extra --set overrides (space separated)
# Stages are cached by content hash under OUT/loop, so re-running with the same OUT resumes.
set -euo pipefail

if [[ $# -ne 1 ]]; then
  echo "usage: $0 OUT" >&2
  exit 2
fi
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$1"
OUT="$(cd "$1" && pwd)"
DATA="${SYN_DATA:-$REPO/../shared/data}"
DATA="$(cd "$DATA" && pwd)"
export DS_ACCELERATOR=cpu RAY_AUTH_MODE=disabled
export TORCH_EXTENSIONS_DIR="${TORCH_EXTENSIONS_DIR:-$HOME/.cache/raysparse/torch_extensions}"
cd "$REPO"

python benchmarks/quality/build_data.py "$OUT/data" --data "$DATA" --distractors 300 --klue-distractors 200 \
  > "$OUT/build.log"

PARALLEL="[$DATA/bilingual/tatoeba/kor.txt,$DATA/bilingual/news-parallel-dev/korean-english-park.dev.ko,$DATA/bilingual/news-parallel-dev/jhe-koen-dev.ko,$DATA/bilingual/python-docs-glossary/pairs_en_ko.jsonl,$OUT/data/parallel/msmarco_1_800.jsonl]"
CMD=(python jobs/synonym_loop.py --config benchmarks/synonyms/loop.yaml --out "$OUT/loop"
  --set "data.path=$OUT/data/train" --set "augment.parallel_text=$PARALLEL"
  --glossary "$DATA/bilingual/kengdic/ezcorean_6000.tsv"
  --glossary "$DATA/bilingual/python-docs-glossary/glossary_terms_en_ko.tsv")
for dev in msmarco-en-ko msmarco-ko-en msmarco-en-ko-distractors msmarco-ko-en-distractors; do
  CMD+=(--dev "$OUT/data/dev/$dev")
done
for kv in ${SYN_SET:-}; do CMD+=(--set "$kv"); done
printf '%q ' "${CMD[@]}" > "$OUT/command.txt"
t0=$(date +%s)
"${CMD[@]}" > "$OUT/loop.log" 2>&1
echo "loop: $(( $(date +%s) - t0 )) s" | tee "$OUT/seconds.txt" >&2
python benchmarks/synonyms/report.py "$OUT" > "$OUT/results.md"
echo "results: $OUT/results.md" >&2
