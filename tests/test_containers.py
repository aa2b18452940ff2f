"""The container path without a container engine: `run_container` against a fake docker client (exit
statuses are real, the container is always removed), the runner's set-up, and the CLI's refusals.
`make e2e` runs the same code against podman or Docker for real."""
import types

import docker
import pytest

from pipelines import containers
from wan_core.errors import UserError


class FakeContainer:
    def __init__(self, status, logs):
        self.status, self.log_lines, self.removed = status, logs, False

    def logs(self, stream, follow):
        assert stream and follow
        return iter(self.log_lines)

    def wait(self):
        return {"StatusCode": self.status}

    def remove(self, force):
        self.removed = force


class FakeClient:
    def __init__(self, container, images=("wan22:0.1.0-cpu",)):
        self.container, self.known, self.run_args = container, set(images), None
        self.images = types.SimpleNamespace(get=self._get)
        self.containers = types.SimpleNamespace(run=self._run)

    def _get(self, name):
        if name not in self.known:
            raise docker.errors.ImageNotFound(name)

    def _run(self, **kwargs):
        self.run_args = kwargs
        return self.container


@pytest.mark.parametrize("status", [0, 1, 137])
def test_exit_status_is_the_containers_and_it_is_removed(status, capsys):
    c = FakeContainer(status, [b"step 1\n", b"step 2\n"])
    client = FakeClient(c)
    assert containers.run_container(client, "wan22:0.1.0-cpu", ["sh", "-c", "x"], {"/r": {}}, user="1000:1000") == status
    assert c.removed and client.run_args["detach"] and "auto_remove" not in client.run_args
    assert client.run_args["user"] == "1000:1000" and capsys.readouterr().out == "step 1\nstep 2\n"


def test_removed_even_when_streaming_fails():
    class Broken(FakeContainer):
        def logs(self, stream, follow):
            raise docker.errors.APIError("engine went away")

    c = Broken(0, [])
    with pytest.raises(docker.errors.APIError):
        containers.run_container(FakeClient(c), "wan22:0.1.0-cpu", [], {})
    assert c.removed


def test_missing_image_is_a_clear_error():
    with pytest.raises(UserError, match="make images"):
        containers.run_container(FakeClient(FakeContainer(0, []), images=()), "wan22:0.1.0-cpu", [], {})


def test_runner_patches_kfp_only_while_running(tmp_path, monkeypatch):
    from kfp.local import docker_task_handler

    class Pingable:
        def ping(self):
            return True

        def close(self):
            pass

    monkeypatch.setattr(docker, "from_env", lambda: Pingable())
    original = docker_task_handler.run_docker_container
    with containers.container_runner("wan22:0.1.0-cpu", tmp_path) as runner:
        assert docker_task_handler.run_docker_container is containers.run_container
        args = runner.container_run_args
        assert args["network_mode"] == "none" and args["labels"] == {containers.LABEL: str(tmp_path)}
    assert docker_task_handler.run_docker_container is original


def test_no_engine_is_a_clear_error(tmp_path, monkeypatch):
    def refuse():
        raise docker.errors.DockerException("Error while fetching server API version")

    monkeypatch.setattr(docker, "from_env", refuse)
    with pytest.raises(UserError, match="no Docker-API engine"):
        with containers.container_runner("wan22:0.1.0-cpu", tmp_path):
            pass
