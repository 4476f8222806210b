"""Parity with the official TensorFlow code: scripts run by a TensorFlow venv, and shared weight formulas."""
