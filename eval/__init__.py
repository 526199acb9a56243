"""Evaluation suite: held-out sets, classical baselines, report writers, per-task scripts.

The scripts (``python eval/denoise.py ...``) import their helpers as
``eval.<module>``; this file only makes the folder a package so that tests and
scripts share one copy of the code. Nothing is imported here on purpose.
"""
