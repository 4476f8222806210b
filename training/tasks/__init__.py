"""Trainers of the downstream tasks (one subpackage per task); each reuses ``constcl_zoo`` for models and data."""
