"""Request-body checks for pool operations: Pools_AddPool, Pools_ResizePool and the autoscale operations.

As Batch: `id`, `vmSize` and `virtualMachineConfiguration` (imageReference, nodeAgentSKUId) are required; with
`enableAutoScale` a formula is required and node targets are refused; without it a target is required. Formulas
are parsed here, so a bad one is refused with `AutoScalingFormulaSyntaxError`. The evaluation interval's lower
bound is the service's `autoscale_min_interval` (Batch: 5 minutes), its upper bound Batch's 168 hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .autoscale_parser import DEALLOCATION_OPTIONS, FormulaSyntaxError, Program, parse
from .errors import AutoScalingFormulaSyntaxError, InvalidPropertyValue, MissingRequiredProperty
from .timestamps import duration_seconds
from .validation import POOL_SHAPES, check_id, check_shapes

MAX_INTERVAL_SECONDS = 168 * 3600
IMAGE_PROPERTIES = ("publisher", "offer", "sku", "version", "virtualMachineImageId", "exactVersion")
MAX_TASK_SLOTS = 256


@dataclass(frozen=True)
class PoolRequest:
    id: str
    slots: int
    dedicated: int
    low_priority: int
    program: Program | None  # autoscale formula when enableAutoScale
    interval: str
    fill_type: str


def _count(body: dict[str, Any], name: str, low: int = 0, high: int | None = None) -> int:
    value = body.get(name, 0) if body.get(name) is not None else 0
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        limit = f" and at most {high}" if high is not None else ""
        raise InvalidPropertyValue(f"{name} must be a whole number of at least {low}{limit}.",
                                   {"PropertyName": name, "PropertyValue": str(value)})
    return value


def check_formula(formula: Any) -> Program:
    if not isinstance(formula, str) or not formula.strip():
        raise MissingRequiredProperty("autoScaleFormula is required.", {"PropertyName": "autoScaleFormula"})
    try:
        return parse(formula)
    except FormulaSyntaxError as err:
        raise AutoScalingFormulaSyntaxError(f"The autoscale formula is invalid: {err}.",
                                            {"Message": str(err)}) from None


def check_interval(value: Any, min_seconds: float) -> str | None:
    if value is None:
        return None
    seconds = duration_seconds(value) if isinstance(value, str) else None
    if seconds is None or not min_seconds <= seconds <= MAX_INTERVAL_SECONDS:
        raise InvalidPropertyValue(
            f"autoScaleEvaluationInterval must be between {min_seconds:g} seconds and 168 hours "
            "(Batch's minimum is 5 minutes).", {"PropertyName": "autoScaleEvaluationInterval",
                                                 "PropertyValue": str(value)})
    return value


def check_pool_body(body: Any, min_interval: float) -> PoolRequest:
    if not isinstance(body, dict):
        raise InvalidPropertyValue("The pool must be a JSON object.")
    pool_id = check_id(body.get("id"), "pool")
    check_shapes(body, POOL_SHAPES)
    if not isinstance(body.get("vmSize"), str) or not body["vmSize"]:
        raise MissingRequiredProperty("vmSize is required.", {"PropertyName": "vmSize"})
    vm = body.get("virtualMachineConfiguration")
    if not isinstance(vm, dict) or not isinstance(vm.get("imageReference"), dict) or not vm.get("nodeAgentSKUId"):
        raise MissingRequiredProperty(
            "virtualMachineConfiguration with imageReference and nodeAgentSKUId is required.",
            {"PropertyName": "virtualMachineConfiguration"})
    image = {"nodeAgentSKUId": vm["nodeAgentSKUId"], **vm["imageReference"]}
    for name in ("nodeAgentSKUId", *IMAGE_PROPERTIES):
        if name in image and not isinstance(image[name], str):
            raise InvalidPropertyValue(f"virtualMachineConfiguration: {name} must be a string.",
                                       {"PropertyName": name, "PropertyValue": str(image[name])[:100]})
    slots = _count(body, "taskSlotsPerNode", 1, MAX_TASK_SLOTS) if "taskSlotsPerNode" in body else 1
    fill = str(((body.get("taskSchedulingPolicy") or {}).get("nodeFillType")) or "spread").lower()
    if fill not in ("spread", "pack"):
        raise InvalidPropertyValue("taskSchedulingPolicy.nodeFillType must be spread or pack.",
                                   {"PropertyName": "taskSchedulingPolicy.nodeFillType"})
    interval = check_interval(body.get("autoScaleEvaluationInterval"), min_interval) or "PT15M"
    if body.get("enableAutoScale"):
        for name in ("targetDedicatedNodes", "targetLowPriorityNodes"):
            if body.get(name) is not None:
                raise InvalidPropertyValue(f"{name} must not be given when enableAutoScale is true.",
                                           {"PropertyName": name})
        return PoolRequest(pool_id, slots, 0, 0, check_formula(body.get("autoScaleFormula")), interval, fill)
    if body.get("autoScaleFormula") is not None:
        raise InvalidPropertyValue("autoScaleFormula needs enableAutoScale true.", {"PropertyName": "autoScaleFormula"})
    if body.get("targetDedicatedNodes") is None and body.get("targetLowPriorityNodes") is None:
        raise MissingRequiredProperty("Give targetDedicatedNodes, targetLowPriorityNodes or both (or enableAutoScale).",
                                      {"PropertyName": "targetDedicatedNodes"})
    return PoolRequest(pool_id, slots, _count(body, "targetDedicatedNodes"), _count(body, "targetLowPriorityNodes"),
                       None, interval, fill)


def check_resize_body(body: Any) -> tuple[int, int, str]:
    if not isinstance(body, dict):
        raise InvalidPropertyValue("The resize options must be a JSON object.")
    option = str(body.get("nodeDeallocationOption") or "requeue").lower()
    if option not in DEALLOCATION_OPTIONS:
        raise InvalidPropertyValue(f"nodeDeallocationOption must be one of {', '.join(DEALLOCATION_OPTIONS)}.",
                                   {"PropertyName": "nodeDeallocationOption"})
    if "resizeTimeout" in body and duration_seconds(body["resizeTimeout"]) is None:
        raise InvalidPropertyValue("resizeTimeout must be an ISO 8601 duration.", {"PropertyName": "resizeTimeout"})
    return _count(body, "targetDedicatedNodes"), _count(body, "targetLowPriorityNodes"), option
