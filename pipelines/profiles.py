"""Applying a deployment (components.k8s.deployment.Deployment) to pipeline tasks with kfp-kubernetes.

Compile-time fields (profile, secrets, whether a data volume is mounted) are fixed here; the rest are
run parameters of each pipeline, with the compile-time values as defaults (`run_defaults`), so a run
can move to another image, claim, node pool or accelerator count without recompiling. The same
values reach the training job the pretrain step submits (components/pretrain)."""
from __future__ import annotations

from kfp import kubernetes

from components.k8s.deployment import DATA_MOUNT, REQUIRED_SECRET_KEYS, STORAGE_SECRET_KEYS, Deployment


def run_defaults(deployment: Deployment) -> dict:
    """Defaults of the run parameters that carry deployment fields."""
    d = deployment
    return {"image": d.image, "pvc_name": d.pvc, "namespace": d.namespace, "service_account": d.service_account,
            "node_selector": dict(d.node_selector), "tolerations": [dict(t) for t in d.tolerations],
            "accelerator_resource": d.accelerator_resource, "volcano_queue": d.volcano_queue}


# CPU and memory each kind of task asks for (requests, so no pod is BestEffort and first to be evicted): light
# steps stream tensors one at a time; accelerator steps load whole models into host memory first
TASK_REQUESTS = {"light": ("1", "4G"), "accelerated": ("4", "32G")}


def apply(task, deployment: Deployment, pvc_name, image, devices=None, node_selector=None, tolerations=None,
          accelerator_resource=None, submits_job: bool = False):
    """Every task: no caching (steps write to the shared volume), the data claim at /data, /dev/shm in
    memory, the profile's env, secrets, the run's image, CPU and memory requests, the image's architecture. Tasks
    given `devices` also get the accelerator request, node selector and tolerations; the others run anywhere the
    image runs. A task that submits a training job and watches it is marked not to be evicted by the cluster
    autoscaler (an eviction would leave the job without its watcher until the step's retry re-attaches)."""
    task.set_caching_options(False)
    task.set_container_image(image)
    cpu, memory = TASK_REQUESTS["light" if devices is None else "accelerated"]
    task.set_cpu_request(cpu)
    task.set_memory_request(memory)
    if deployment.pvc:
        kubernetes.mount_pvc(task, pvc_name=pvc_name, mount_path=DATA_MOUNT)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory")
    for name, value in deployment.plain_env().items():
        task.set_env_variable(name, value)
    if deployment.storage_secret:
        kubernetes.use_secret_as_env(task, secret_name=deployment.storage_secret,
                                     secret_key_to_env={key: key for key in REQUIRED_SECRET_KEYS})
        kubernetes.use_secret_as_env(task, secret_name=deployment.storage_secret, optional=True,
                                     secret_key_to_env={key: key for key in STORAGE_SECRET_KEYS
                                                        if key not in REQUIRED_SECRET_KEYS})
    if deployment.image_pull_secret:
        kubernetes.set_image_pull_secrets(task, [deployment.image_pull_secret])
    if submits_job:
        kubernetes.add_pod_annotation(task, "cluster-autoscaler.kubernetes.io/safe-to-evict", "false")
    if devices is not None:
        if deployment.accelerator_resource:
            task.set_accelerator_type(accelerator_resource)
            task.set_accelerator_limit(devices)
        kubernetes.add_node_selector_json(task, node_selector_json=node_selector)
        kubernetes.add_toleration_json(task, toleration_json=tolerations)
    elif deployment.arch:  # the CPU-only steps run the accelerator image too: pin its architecture
        kubernetes.add_node_selector(task, label_key="kubernetes.io/arch", label_value=deployment.arch)
    return task
