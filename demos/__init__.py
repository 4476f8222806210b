"""Demos (run from a checkout): the Gradio tracking and localization demo. Builds on ``constcl_zoo``."""
