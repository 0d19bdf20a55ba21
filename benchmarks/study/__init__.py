"""The distillation study of ``benchmarks/distill_study.py``, one job a module: ``design`` (what is studied and the
targets, as data), ``state`` (the study's folder, packed and unpacked between GPU calls), ``inputs`` (the files
every phase reads), ``cost`` (what a phase should take, from the speed phase), ``speed`` (the speed phase's
measurements), ``phases`` (the phases themselves) and ``report`` (the Markdown table, the targets, the curves).
"""
