"""What the service's nodes really are, so its pools report it and Pools_AddPool refuses an image they cannot stand
in for (a client picks the nodes' Python from the image: a pool that claims Ubuntu 22.04 must not run Python 3.13).

Nodes run in the stock node image (`--node-image`: Debian 13, python3 3.13), on the host (its python3 on the
service's PATH; its Marketplace image when the host is a Debian or Ubuntu release whose own python3 that is, else
an `azbatch-local` reference that names the host and its python3), or nowhere (`--simulate`: any image will do, as
nothing runs). A created pool's image is refused when its python3 is known and is not the nodes' (stricter than
Batch, which runs any supported image; see README).
"""

from __future__ import annotations

import functools
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ...node_software import marketplace_python

# Marketplace images of the releases a host may be: (os-release ID, VERSION_ID) → (imageReference, node agent).
RELEASE_IMAGES = {
    ("ubuntu", "24.04"): (("canonical", "ubuntu-24_04-lts", "server"), "batch.node.ubuntu 24.04"),
    ("ubuntu", "22.04"): (("canonical", "0001-com-ubuntu-server-jammy", "22_04-lts"), "batch.node.ubuntu 22.04"),
    ("debian", "13"): (("debian", "debian-13", "13"), "batch.node.debian 13"),
    ("debian", "12"): (("debian", "debian-12", "12"), "batch.node.debian 12"),
}
# What simulated pools claim (no process runs on them): Batch's current Ubuntu LTS.
SIMULATED_IMAGE = (("canonical", "ubuntu-24_04-lts", "server"), "batch.node.ubuntu 24.04")


def _reference(parts: tuple[str, str, str]) -> dict[str, str]:
    return {"publisher": parts[0], "offer": parts[1], "sku": parts[2], "version": "latest"}


@dataclass(frozen=True)
class NodeSystem:
    """`python`: the nodes' python3 (X.Y), None when they have none; `runs`: False for simulated nodes."""

    image: dict[str, str]  # imageReference the service's own pools report
    node_agent: str
    python: str | None
    description: str
    runs: bool = True

    def vm_configuration(self) -> dict:
        return {"imageReference": dict(self.image), "nodeAgentSKUId": self.node_agent}

    def stand_in_problem(self, reference: dict) -> str | None:
        """Why these nodes cannot stand in for the Marketplace image `reference` (None: they can)."""
        wanted = image_python(reference)
        if not self.runs or wanted is None or wanted == self.python:
            return None
        name = "/".join(str(reference.get(k, "")) for k in ("publisher", "offer", "sku"))
        image = "/".join(self.image[k] for k in ("publisher", "offer", "sku"))
        return (f"The local service's nodes run {self.description}, python3 {self.python or 'none'}; they cannot "
                f"stand in for {name}, whose python3 is {wanted}. Create the pool with imageReference {image} and "
                f"nodeAgentSKUId '{self.node_agent}'.")


def image_python(reference: dict) -> str | None:
    return marketplace_python.image_python(tuple(reference.get(k) for k in ("publisher", "offer", "sku")))


STOCK = NodeSystem(_reference(("debian", "debian-13", "13")), "batch.node.debian 13", "3.13",
                   "the stock node image (Debian 13)")
SIMULATED = NodeSystem(_reference(SIMULATED_IMAGE[0]), SIMULATED_IMAGE[1], None, "simulated nodes", runs=False)


@functools.lru_cache(maxsize=8)
def path_python(path: str) -> str | None:
    """X.Y of the python3 first on `path` (what host nodes run), asked once per PATH."""
    try:
        return subprocess.run(["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                              capture_output=True, text=True, timeout=30, env={**os.environ, "PATH": path},
                              ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def host_system(os_release: Path = Path("/etc/os-release")) -> NodeSystem:
    """The host as nodes see it: its release and the python3 on the service's PATH."""
    release = {}
    try:
        for line in os_release.read_text().splitlines():
            key, _, value = line.partition("=")
            release[key.strip()] = value.strip().strip('"')
    except OSError:
        pass
    python = path_python(os.environ.get("PATH", ""))
    os_id, version = release.get("ID", "linux").lower(), release.get("VERSION_ID", "")
    known = RELEASE_IMAGES.get((os_id, version))
    if known and python and image_python(_reference(known[0])) == python:
        return NodeSystem(_reference(known[0]), known[1], python, f"this host ({os_id} {version})")
    sku = f"python3-{python}" if python else "no-python3"
    return NodeSystem(_reference(("azbatch-local", f"host-{os_id}-{version or 'unknown'}", sku)),
                      f"batch.node.{os_id} {version}".strip(), python, f"this host ({os_id} {version})")


def for_service(simulate: float | None, node_image: Path | None) -> NodeSystem:
    if simulate is not None:
        return SIMULATED
    if node_image is not None:
        return STOCK
    return host_system()
