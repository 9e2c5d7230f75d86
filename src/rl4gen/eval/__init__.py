"""Evaluation helpers and run reports (plots, sample tables)."""
