"""The CA certificates this machine trusts beyond a stock trust store, for stock nodes on the host's network.

A node on the host's network reaches what this machine reaches, through the same network. Where that network
inspects TLS (a proxy re-signing every connection with its own CA, common in institutes), the node needs that CA
too, as a Batch pool there would get it from its start task or image. `azbatch-local` adds the machine's local
trust anchors (the directories `update-ca-certificates` / `update-ca-trust` read, where such CAs are installed) to
every host-network node's trust store, says so in one line, and `--no-node-host-cas` turns it off. Local-only
nodes reach nothing beyond the service, so they get none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..service_config import ServiceConfig

# Debian/Ubuntu, then Fedora/RHEL: the local administrator's trust anchors (never the distribution's own list).
ANCHOR_DIRS = (Path("/usr/local/share/ca-certificates"), Path("/etc/pki/ca-trust/source/anchors"))
_PEM = re.compile(r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----")


@dataclass(frozen=True)
class HostCas:
    files: tuple[Path, ...]  # the anchor files the certificates come from
    certificates: tuple[str, ...]  # PEM, one certificate each


def host_extra_cas(dirs: tuple[Path, ...] = ANCHOR_DIRS) -> HostCas:
    """Every PEM certificate in the anchor directories (files that hold none, or cannot be read, are skipped)."""
    files, certificates = [], []
    for directory in dirs:
        paths = sorted(p for p in directory.rglob("*") if p.suffix in (".crt", ".pem")) if directory.is_dir() else []
        for path in paths:
            try:
                found = _PEM.findall(path.read_text(errors="replace"))
            except OSError:
                continue
            if found:
                files.append(path)
                certificates += [pem for pem in found if pem not in certificates]
    return HostCas(tuple(files), tuple(certificates))


def node_cas(config: ServiceConfig, dirs: tuple[Path, ...] = ANCHOR_DIRS) -> HostCas | None:
    """What stock nodes of `config` trust besides their image's CAs: None when none (not stock nodes, local-only
    network, --no-node-host-cas, or no anchors here)."""
    if config.node_image is None or config.node_network != "host" or not config.node_host_cas:
        return None
    cas = host_extra_cas(dirs)
    return cas if cas.certificates else None


def notice(cas: HostCas) -> str:
    return (f"host-network nodes trust this machine's extra CA certificate(s) from {', '.join(map(str, cas.files))}, "
            "as a TLS-inspecting network needs; --no-node-host-cas turns this off")
