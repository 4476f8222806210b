"""Downstream task training and evaluation (one subpackage per task)."""
