"""Kubernetes manifests for single steps (`wan22 k8s job STEP`): a batch/v1 Job around the deployment's pod."""
from __future__ import annotations

import re

from wan_core.errors import UserError
from components.k8s.deployment import Deployment, pod_template, termination_grace_s

STEPS = ("validate-dataset", "convert", "cache-features", "train", "consolidate", "export", "export-lora", "merge-lora",
         "sample")  # every wan22 command a pipeline step runs


def k8s_name(text: str) -> str:
    """A DNS-1123 name (lower case, digits, dashes; at most 52 characters, leaving room for suffixes)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:52].rstrip("-")
    if not name:
        raise UserError(f"cannot make a Kubernetes name from {text!r}")
    return name


def step_job(step: str, args: list[str], deployment: Deployment, devices: int = 0, name: str | None = None) -> dict:
    """A batch/v1 Job running `wan22 STEP ARGS...` once (no retries: a failed step should be looked at)."""
    if step not in STEPS:
        raise UserError(f"unknown step {step!r}; choose one of {', '.join(STEPS)}")
    metadata = {"name": k8s_name(name or f"wan22-{step}"), "labels": {"app.kubernetes.io/name": "wan22", "wan22/step": step}}
    if deployment.namespace:
        metadata["namespace"] = deployment.namespace
    template = pod_template(deployment, ["wan22", step, *args], devices)
    template["metadata"]["labels"]["wan22/step"] = step
    if step == "train":  # room for the checkpoint training writes on SIGTERM
        template["spec"]["terminationGracePeriodSeconds"] = termination_grace_s()
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
            "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 86400, "template": template}}
