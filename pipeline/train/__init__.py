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

from __future__ import annotations

from ..errors import InputError

#: The four procedures of the study (``distilrank distill --procedure``): each names its phases in order, joined by
#: ``+``: an optional LM distillation (``lm-distill``), then the ranking phase, ``fine-tune`` (LCE on the labels)
#: or ``ranker-distill`` (the teacher's scores).
PROCEDURES = ("fine-tune", "ranker-distill", "lm-distill+fine-tune", "lm-distill+ranker-distill")


def procedure_phases(procedure: str) -> tuple[str, ...]:
    """The phases of ``procedure`` in order (``lm-distill+fine-tune``: ``lm-distill``, ``fine-tune``); an unknown
    procedure is an ``InputError``."""
    if procedure not in PROCEDURES:
        raise InputError(f"unknown procedure {procedure!r}; expected one of {', '.join(PROCEDURES)}")
    return tuple(procedure.split("+"))


def uses_lm_distill(procedure: str) -> bool:
    """Whether ``procedure`` begins with LM distillation (the student's layers matched to its base encoder's)."""
    return procedure_phases(procedure)[0] == "lm-distill"


def is_fine_tune(procedure: str) -> bool:
    """Whether ``procedure`` ends by fine-tuning on the labels (LCE) rather than distilling the teacher's scores."""
    return procedure_phases(procedure)[-1] == "fine-tune"
