#!/usr/bin/env bash
# One GPU session, as run on a lent H100: the rerank speed benchmark, the distillation study (which
# trains the subset teacher and students) and `distilrank compare` on the subset with those models.
# The GPU box has torch/transformers but no pyserini, Java or network: inputs come from carry/
# (benchmarks/prepare_gpu_inputs.py) and ir-measures from wheels in .whl/. Results go to $OUT
# (default ./gpu-results). Usage: bash benchmarks/gpu_session.sh [SECONDS_BUDGET]
# A CPU rehearsal of the same flow: DEVICE=cpu STUDY_ARGS=--quick bash benchmarks/gpu_session.sh 1500
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-results}
mkdir -p "$OUT"
BUDGET=${1:-570}
DEVICE=${DEVICE:-cuda}
STUDY_ARGS=${STUDY_ARGS:-}
START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
gunzip -kf carry/msmarco-subset/*.gz carry/runs/*.gz
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

echo "== rerank speed ($(left)s left)"
timeout 170 python3 benchmarks/rerank_speed.py --device $DEVICE --data carry/msmarco-subset --tokenizer carry/minilm \
  --out "$OUT/rerank_speed_h100.json" 2>&1 | tee "$OUT/rerank_speed.log" | grep -v "it/s\]$"

echo "== distillation study ($(left)s left)"
timeout $(( $(left) - 75 )) python3 benchmarks/distill_study.py --data carry/msmarco-subset --runs carry/runs \
  --minilm carry/minilm --work /tmp/study --results "$OUT/distill_study.md" --export models --device $DEVICE $STUDY_ARGS 2>&1 \
  | tee "$OUT/distill_study.log" | grep -v "it/s\]$" | tail -60

echo "== compare on the subset with the study's models ($(left)s left)"
cat > /tmp/subset-gpu.toml <<EOF
name = "msmarco-subset"
[data]
collection = "$ROOT/carry/msmarco-subset/collection.tsv"
topics = "$ROOT/carry/msmarco-subset/queries.dl20.tsv"
qrels = "$ROOT/carry/msmarco-subset/qrels.dl20.tsv"
qids = "$ROOT/configs/dl20-heldout.qids"
[first_stage]
run = "$ROOT/carry/runs/dl20.bm25.trec"
hits = 1000
[rerank]
depth = 100
device = "$DEVICE"
warmup_queries = 2
[teacher]
name = "teacher-6L"
model = "$ROOT/models/subset-teacher"
EOF
for p in fine-tune ranker-distill lm-distill+fine-tune lm-distill+ranker-distill; do
  for n in 2 3; do
    [ -d "models/subset-student-${n}L-$p" ] && printf '[[students]]\nname = "%sL-%s"\nmodel = "%s"\n' \
      "$n" "$p" "$ROOT/models/subset-student-${n}L-$p" >> /tmp/subset-gpu.toml
  done
done
printf '[evaluation]\nmeasures = ["nDCG@10", "RR(rel=2)@10", "R(rel=2)@100"]\nplot_measure = "nDCG@10"\n' >> /tmp/subset-gpu.toml
timeout $(( $(left) > 10 ? $(left) : 10 )) python3 -m pipeline -v compare --config /tmp/subset-gpu.toml \
  --output /tmp/compare-subset 2>&1 | grep -v "it/s\]$" | tail -40
cp /tmp/compare-subset/report.md "$OUT/compare_subset_report.md" 2>/dev/null
cp /tmp/compare-subset/report.json "$OUT/compare_subset_report.json" 2>/dev/null
cp /tmp/compare-subset/effectiveness_vs_speed.png "$OUT/compare_subset.png" 2>/dev/null
echo "done in $((SECONDS - START))s"
