"""Validate a request against botocore's SageMaker service model, the way AWS's front end does.

botocore's own ``ParamValidator`` checks what a client should send before it is sent (types, required members,
minimums); AWS additionally enforces maximum lengths and values, enums and patterns, and reports every violation
in one ``ValidationException`` ("N validation errors detected: Value 'x' at 'a.b' failed to satisfy constraint:
..."). This walker covers both, over the shapes botocore ships, so a request is accepted here exactly when the
model says AWS accepts it. Written by hand because no library applies a botocore model server-side. The rules AWS
documents beyond the shapes (KMS keys, instance storage, time limits, paths) are ``rules.check``'s, applied after.
"""

from __future__ import annotations

import datetime
import functools
from typing import Any

import botocore.session
import regex  # the model's patterns use Java classes such as \p{L}, which only the regex module supports
from botocore.model import OperationModel, Shape

from local_aws.sagemaker.exceptions import ValidationException


@functools.cache
def service_model(name: str = "sagemaker") -> Any:
    return botocore.session.get_session().get_service_model(name)


@functools.cache
def _pattern(pattern: str) -> Any:
    return regex.compile(pattern)


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _show(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 120 else text[:117] + "..."


def _check(shape: Shape, value: Any, path: str, errors: list[str]) -> None:
    where = path or "request"
    if value is None:
        return
    kind = shape.type_name
    meta = shape.metadata
    if kind == "structure":
        if not isinstance(value, dict):
            errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must be an object")
            return
        for member in shape.required_members:
            if value.get(member) is None:
                errors.append(f"Value null at '{_join(path, member)}' failed to satisfy constraint: "
                              "Member must not be null")
        for member, member_value in value.items():
            if member in shape.members:
                _check(shape.members[member], member_value, _join(path, member), errors)
        return
    if kind == "list":
        if not isinstance(value, list):
            errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must be a list")
            return
        _length(meta, len(value), value, where, errors)
        for index, item in enumerate(value, start=1):
            _check(shape.member, item, f"{where}.{index}.member", errors)
        return
    if kind == "map":
        if not isinstance(value, dict):
            errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must be a map")
            return
        _length(meta, len(value), value, where, errors)
        for key, item in value.items():
            _check(shape.key, key, f"{where}.{key}.key", errors)
            _check(shape.value, item, f"{where}.{key}.value", errors)
        return
    if kind == "string":
        if not isinstance(value, str):
            errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must be a string")
            return
        _length(meta, len(value), value, where, errors)
        if shape.enum and value not in shape.enum:
            errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must satisfy "
                          f"enum value set: [{', '.join(shape.enum)}]")
        if "pattern" in meta and not _pattern(meta["pattern"]).fullmatch(value):
            errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must satisfy "
                          f"regular expression pattern: ^{meta['pattern'].lstrip('^')}")
        return
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: "
                          "Member must be an integer")
            return
        _range(meta, value, where, errors)
        return
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must be a number")
            return
        _range(meta, value, where, errors)
        return
    if kind == "boolean" and not isinstance(value, bool):
        errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must be a boolean")
    if kind == "timestamp" and not isinstance(value, (int, float, str, datetime.datetime)):
        errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must be a timestamp")


def _join(path: str, member: str) -> str:
    return f"{path}.{_camel(member)}" if path else _camel(member)


def _length(meta: dict[str, Any], length: int, value: Any, where: str, errors: list[str]) -> None:
    if "min" in meta and length < meta["min"]:
        errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must have length "
                      f"greater than or equal to {meta['min']}")
    if "max" in meta and length > meta["max"]:
        errors.append(f"Value '{_show(value)}' at '{where}' failed to satisfy constraint: Member must have length "
                      f"less than or equal to {meta['max']}")


def _range(meta: dict[str, Any], value: float, where: str, errors: list[str]) -> None:
    if "min" in meta and value < meta["min"]:
        errors.append(f"Value '{value}' at '{where}' failed to satisfy constraint: Member must have value "
                      f"greater than or equal to {meta['min']}")
    if "max" in meta and value > meta["max"]:
        errors.append(f"Value '{value}' at '{where}' failed to satisfy constraint: Member must have value "
                      f"less than or equal to {meta['max']}")


def validate(operation: OperationModel, request: Any) -> None:
    """Raise ``ValidationException`` listing every constraint the request breaks."""
    errors: list[str] = []
    if operation.input_shape is not None:
        _check(operation.input_shape, request if request is not None else {}, "", errors)
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise ValidationException(f"{len(errors)} validation {noun} detected: " + "; ".join(errors))
