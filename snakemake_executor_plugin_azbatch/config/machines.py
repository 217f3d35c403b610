"""--azbatch-vm-sizes: VM sizes the resource check does not know (or knows differently)."""

from __future__ import annotations

from ..settings.executor_settings import SettingsError
from ..pools.vm_sizes import VmSizeError, parse_overrides
from .packages import split_items
from .values import SettingValues


def resolve_vm_sizes(values: SettingValues) -> tuple:
    try:
        return tuple(parse_overrides(split_items(values.get("vm_sizes"))).values())
    except VmSizeError as e:
        raise SettingsError(str(e)) from None
