"""Kubeflow pipelines: they only wire components (components/) and apply deployment settings (profiles.py)."""
