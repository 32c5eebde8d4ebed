"""Matplotlib figures from result files; no training code here."""
