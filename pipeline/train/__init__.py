"""Training: teacher fine-tuning (LCE), teacher scores, student initialisation and the four
distillation procedures of the study (fine-tune, ranker-distill, lm-distill+fine-tune,
lm-distill+ranker-distill).

Modules: ``options`` (what each recipe takes and every training default, written once), ``groups``
(training groups from qrels + run files, streamed), ``losses``, ``students``
(student initialisation), ``trainer`` (the loop: AdamW, schedule, accumulation, autocast,
checkpoints, resume), ``tasks`` (what one training step computes), ``scores`` (teacher score
files), ``lm_distill`` (hidden-state and attention matching), ``recipes`` (train, bootstrap, score,
distill end to end). The bootstrap's zero-shot teacher is ``pipeline.biencoder``.
"""

#: The four procedures of the study (``distilrank distill --procedure``).
PROCEDURES = ("fine-tune", "ranker-distill", "lm-distill+fine-tune", "lm-distill+ranker-distill")
