"""Measuring: ir-measures evaluation, paired significance tests, speedups a noisy machine cannot fake, and
per-stage timing.
"""
