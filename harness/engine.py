"""The Docker engine the harness talks to, through the Docker SDK for Python.

The engine is found the way the ``docker`` command finds it: ``DOCKER_HOST`` (and the other
``DOCKER_*`` variables) if set, otherwise the local socket. ``scripts/docker-engine`` (as root)
starts one on a machine where none runs.
"""

from __future__ import annotations

import os

import docker
import docker.errors
import requests.exceptions

DEFAULT_SOCKET = "unix:///var/run/docker.sock"


class EngineUnavailable(RuntimeError):
    """No Docker engine answers; the message says where the harness looked and what to do."""


def connect(timeout: float = 60.0) -> docker.DockerClient:
    """A client for the Docker engine, checked to answer (API version negotiated with it).

    ``timeout`` bounds each API call in seconds (builds and imports set their own).
    Raises :class:`EngineUnavailable` if no engine answers at the configured address.
    """
    where = os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as error:
        raise EngineUnavailable(
            f"no Docker engine at {where} ({_reason(error)}); run scripts/docker-engine as root "
            "(it installs Debian's docker.io if needed and starts dockerd in the background), "
            "or point DOCKER_HOST at a running engine."
        ) from error
    return client


def _reason(error: Exception) -> str:
    """The last line of a docker/requests error, which is the one that says what went wrong."""
    text = str(error).strip().splitlines()
    return text[-1] if text else type(error).__name__
