"""Fast unit tests of the process kubelet's pure helpers (no cluster, no root)."""

from __future__ import annotations

import sys

import pytest
from localkube.kubelet import expand, resolve_argv, split_image


def test_split_image() -> None:
    assert split_image("ringkv") == ("ringkv", "latest")
    assert split_image("ghcr.io/x/ringkv:1.2.3") == ("ringkv", "1.2.3")
    assert split_image("ringkv:0.1@sha256:abc") == ("ringkv", "0.1")
    assert split_image("localhost:5000/ringkv:dev") == ("ringkv", "dev")


def test_expand_follows_kubernetes_rules() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_resolve_argv_maps_images_to_local_commands() -> None:
    env = {"PORT": "80"}
    py = resolve_argv({"image": "python:3.11", "command": ["python3", "-m", "x"],
                       "args": ["$(PORT)"]}, env)
    assert py == [sys.executable, "-m", "x", "80"]
    assert resolve_argv({"image": "busybox", "command": ["sleep", "1"]}, env) == ["sleep", "1"]
    with pytest.raises(ValueError):
        resolve_argv({"image": "busybox"}, env)
