"""Measuring: ir-measures evaluation, MS MARCO leaderboard files (written and validated), paired significance
tests, speedups a noisy machine cannot fake, and per-stage timing.
"""
