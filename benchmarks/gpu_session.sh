#!/usr/bin/env bash
# One call of the distillation study on a lent GPU: benchmarks/distill_study.py runs its phases (speed, references,
# teacher, scores, the students one lever at a time, the table) until the call's time budget, then packs what the
# next call needs. Call it again, as often as needed: finished phases are skipped, an interrupted one resumes.
#
# The GPU box has torch, transformers and sentence-transformers but no pyserini, Java or network; it receives the
# working tree up to 64 MiB and returns at most 8 files of 16 MiB from $OUT. So:
#   here, once:  python benchmarks/prepare_gpu_inputs.py          # carry/{msmarco-subset,runs,minilm} (56 MiB)
#                ir-measures (not in the GPU image, Python 3.12) as wheels in .whl/, installed below when present:
#                pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                  --platform manylinux2014_x86_64 -d .whl ir-measures==0.4.3 pytrec-eval-terrier==0.5.11
#   call 1:      carry [carry/msmarco-subset, carry/runs, carry/minilm, .whl]; bash benchmarks/gpu_session.sh 560
#   next calls:  on the still-warm machine nothing needs carrying (its carry/study is still there); on a fresh one,
#                first here `python benchmarks/distill_study.py --unpack FILES_AT` (restores carry/study from the
#                returned parts), then carry also carry/study/scale.json, carry/study/rows, carry/study/logs and
#                carry/study/scores (8 paths in all): the teacher (45 MiB in bf16) and carry/minilm do not fit
#                together, and students from MiniLM need only the teacher's scores; carry carry/study/teacher
#                instead of carry/minilm for `--students 2L-teacher-init` (STUDY_ARGS).
# Results come back in $OUT: distill_study.md and its PNGs (when the table phase ran), the log, the packed state.
# Usage: bash benchmarks/gpu_session.sh [SECONDS_BUDGET]     (default 560: one 10-minute call with margin)
# The CPU rehearsal on the embedded sample (benchmarks/prepare_gpu_inputs.py --sample --out carry/sample):
#   PYTHON=.venv/bin/python CARRY=carry/sample DEVICE=cpu STUDY_ARGS="--sample-scale --torch-threads 1" bash benchmarks/gpu_session.sh 900
#
# MODE=speed runs the rerank speed benchmark instead (issue 13; about 6 minutes on an H100, carry only
# carry/msmarco-subset and carry/minilm): six model shapes in bf16, each end to end with the token cache,
# pre-tokenized, host side alone, plain HF length-sorted and the fast paths (CUDA graphs over bucketed shapes,
# zero-padded heads), each fast path checked against plain HF scores; the matmul ceiling, the targets and the
# MS MARCO dev projection. Results in $OUT/rerank_speed_CARD_DATE.{json,md} and the log. SPEED_ARGS adds options
# (default --repeats 2); the CPU rehearsal with tiny shapes:
#   PYTHON=.venv/bin/python MODE=speed DEVICE=cpu SPEED_ARGS="--shapes --tiny --pairs 256 --hf-pairs 256" \
#     bash benchmarks/gpu_session.sh 900
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-results}
CARRY=${CARRY:-carry}
STATE=${STATE:-$CARRY/study}
DEVICE=${DEVICE:-cuda}
STUDY_ARGS=${STUDY_ARGS:-}
MODE=${MODE:-study}
SPEED_ARGS=${SPEED_ARGS:---repeats 2}
PYTHON=${PYTHON:-python3}  # python3 on the GPU box; a CPU rehearsal: the venv's
BUDGET=${1:-560}
START=$SECONDS
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  $PYTHON -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PYTHON -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"

if [ "$MODE" = speed ]; then
  CARD=$($PYTHON -c "import torch; print(torch.cuda.get_device_name().split()[1].lower() if torch.cuda.is_available() else 'cpu')")
  gunzip -kf "$CARRY/msmarco-subset/collection.tsv.gz" 2>/dev/null
  timeout --signal=INT --kill-after=5 $((BUDGET - 20)) $PYTHON benchmarks/rerank_speed.py --device "$DEVICE" \
    --data "$CARRY/msmarco-subset" --tokenizer "$CARRY/minilm" $SPEED_ARGS \
    --out "$OUT/rerank_speed_${CARD}_$(date -u +%F).json" 2>&1 | grep --line-buffered -v "it/s\]$" \
    | tee "$OUT/rerank_speed.log"
  echo "done in $((SECONDS - START))s (exit ${PIPESTATUS[0]})"
  exit 0
fi

# The study stops between phases when the next would not fit (--budget); `timeout` stops a phase that runs over
# anyway (it resumes from its last checkpoint next call); a minute stays for packing the state.
timeout --signal=INT --kill-after=5 $((BUDGET - 60)) $PYTHON benchmarks/distill_study.py \
  --data "$CARRY/msmarco-subset" --runs "$CARRY/runs" --minilm "$CARRY/minilm" --state "$STATE" --device "$DEVICE" \
  --budget $((BUDGET - 75)) --results "$OUT/distill_study.md" $STUDY_ARGS 2>&1 \
  | grep --line-buffered -v "it/s\]$" | tee "$OUT/distill_study.log" | tail -60
echo "== study stopped after $((SECONDS - START))s (exit ${PIPESTATUS[0]}); packing the state"
$PYTHON benchmarks/distill_study.py --state "$STATE" --pack "$OUT"
ls -la "$OUT"
echo "done in $((SECONDS - START))s"
