"""Running kfp.local's DockerRunner against Docker or podman's Docker-compatible socket, with real exit
statuses and no containers left behind.

kfp 2.17's DockerRunner starts each step with `auto_remove=True` and reads the exit status afterwards;
when the engine has already removed the container (podman 4.3 answers 500 then, Docker 404) it either
fails at random or takes the step for a success. `container_runner` swaps in `run_container`, which
waits on the container itself and removes it afterwards, for the duration of one pipeline run."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from wan_core.errors import UserError
from components.k8s.deployment import NON_ROOT_UID  # the images' user

LABEL = "wan22.kfp-local"


def run_container(client, image: str, command: list[str], volumes: dict, **run_args) -> int:
    """Run one step to completion: stream its output, return its exit status, remove it."""
    import docker

    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        raise UserError(f"container image {image} is not there; build it with `make images` "
                        "(images/build.sh) or name another with --image") from None
    container = client.containers.run(image=image, command=command, detach=True, volumes=volumes, **run_args)
    try:
        for chunk in container.logs(stream=True, follow=True):
            print(chunk.decode(errors="replace"), end="", flush=True)
        return int(container.wait()["StatusCode"])
    finally:
        with contextlib.suppress(docker.errors.APIError):
            container.remove(force=True)


@contextlib.contextmanager
def container_runner(image: str, run_dir: Path):
    """A kfp.local DockerRunner for `image` whose steps can write to `run_dir` (the pipeline root, the
    only folder DockerRunner mounts). Steps run without a network, as the image's non-root user when
    this process is root (the run folder is handed to that user) and as this process's user otherwise."""
    try:
        import docker
        from kfp import local
        from kfp.local import docker_task_handler
    except ImportError as exc:
        raise UserError(f"--containers needs the docker package ({exc.name} is missing): "
                        "pip install 'wan22-kubeflow[containers]'") from None
    try:
        client = docker.from_env()
        try:
            client.ping()
        finally:
            client.close()
    except docker.errors.DockerException as exc:
        raise UserError(f"no Docker-API engine answers ({exc}); start Docker, or podman's service and point "
                        "DOCKER_HOST at its socket (images/engine.sh does both)") from None
    if os.getuid() == 0:
        user = f"{NON_ROOT_UID}:{NON_ROOT_UID}"
        for folder, _, files in os.walk(run_dir):
            for path in [folder, *(os.path.join(folder, f) for f in files)]:
                os.chown(path, NON_ROOT_UID, NON_ROOT_UID)
    else:
        user = f"{os.getuid()}:{os.getgid()}"
    runner = local.DockerRunner(user=user, network_mode="none", shm_size="2g", labels={LABEL: str(run_dir)})
    original = docker_task_handler.run_docker_container
    docker_task_handler.run_docker_container = run_container
    try:
        yield runner
    finally:
        docker_task_handler.run_docker_container = original
