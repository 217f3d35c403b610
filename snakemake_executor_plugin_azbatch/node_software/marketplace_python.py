"""The python3 that Batch's common Linux Marketplace images ship, by image reference (one table for both wings)."""

from __future__ import annotations

# (publisher, offer prefix, sku prefix), lower-case -> python3 X.Y; the first match wins.
IMAGE_PYTHON = (
    (("canonical", "ubuntu-24_04", ""), "3.12"),
    (("canonical", "0001-com-ubuntu-server-noble", ""), "3.12"),
    (("canonical", "0001-com-ubuntu-server-jammy", ""), "3.10"),
    (("canonical", "0001-com-ubuntu-server-focal", ""), "3.8"),
    (("microsoft-dsvm", "ubuntu-hpc", "2404"), "3.12"),
    (("microsoft-dsvm", "ubuntu-hpc", "2204"), "3.10"),
    (("microsoft-azure-batch", "ubuntu-server-container", "20-04"), "3.8"),
    (("debian", "debian-13", ""), "3.13"),
    (("debian", "debian-12", ""), "3.11"),
    (("debian", "debian-11", ""), "3.9"),
    (("almalinux", "", "8"), "3.6"),
    (("almalinux", "", "9"), "3.9"),
)


def image_python(image: tuple[str, str, str] | None) -> str | None:
    """The python3 X.Y of the image (publisher, offer, sku), None when unknown."""
    if not image:
        return None
    publisher, offer, sku = (str(part or "").lower() for part in image)
    for (p, o, s), python in IMAGE_PYTHON:
        if publisher == p and offer.startswith(o) and sku.startswith(s):
            return python
    return None
