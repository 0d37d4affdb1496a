"""Request validation with msgspec: strict structs in, every failing field named out.

msgspec stops at the first error; a client fixing a form wants all of them. So on failure
we walk the schema ourselves (struct fields, lists of structs) and collect one `FieldError`
per problem, with paths such as `events[3].name`. Unknown fields are always rejected.
"""

from __future__ import annotations

import functools
import re
import types
import typing
from collections.abc import Mapping
from typing import Any

import msgspec

from server.errors import ApiError, Code, FieldError

MAX_FIELD_ERRORS = 50


class Schema(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Base for request bodies and query strings: unknown fields are an error.

    (msgspec does not inherit `kw_only`: in subclasses, list required fields first.)"""


_json_decoders: dict[type, msgspec.json.Decoder] = {}
_MSGSPEC_PATH = re.compile(r" - at `\$(.*)`$")


def decode_json_body(raw: bytes, schema: type[msgspec.Struct]) -> Any:
    """Parse and validate a JSON body: 400 if it is not JSON, 422 naming each bad field."""
    decoder = _json_decoders.get(schema)
    if decoder is None:
        decoder = _json_decoders[schema] = msgspec.json.Decoder(schema)
    untyped = None
    if b"\\u0000" in raw:  # rare: only then is the body walked for NUL characters
        untyped = _decode_untyped(raw)
        _refuse_nul(untyped, "")
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        raise _malformed() from None
    if untyped is None:  # the typed decoder stops at the first bad field, maybe before bytes
        untyped = _decode_untyped(raw)  # that are not JSON: those are a 400 all the same
    raise _validation_failed(collect_errors(untyped, schema))


def _decode_untyped(raw: bytes) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise _malformed() from None


def _refuse_nul(value: Any, path: str) -> None:
    """422 naming every field whose text holds a NUL character: no text column stores one
    (PostgreSQL refuses them), and no honest client sends one."""
    errors = nul_fields(value, path)
    if errors:
        raise _validation_failed(errors[:MAX_FIELD_ERRORS])


def nul_fields(value: Any, path: str = "") -> list[FieldError]:
    """The fields of a decoded JSON value whose text (or key) holds a NUL character."""
    errors: list[FieldError] = []
    _find_nul(value, path, errors)
    return errors


def _find_nul(value: Any, path: str, out: list[FieldError]) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            out.append(FieldError(path or "body", "Text may not contain NUL characters"))
    elif isinstance(value, dict):
        for key, item in value.items():
            _find_nul(key, path, out)
            _find_nul(item, f"{path}.{key}" if path else str(key), out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _find_nul(item, f"{path}[{index}]", out)


def _malformed() -> ApiError:
    return ApiError(Code.malformed, "The body is not valid JSON")


def decode_query(params: Mapping[str, Any], getlist, schema: type[msgspec.Struct]) -> Any:
    """Validate a query string against a struct. Repeated keys feed list fields; strings are
    coerced to the field types (`limit=20` → 20)."""
    list_fields = _list_fields(schema)
    values: dict[str, Any] = {}
    for key in params:
        values[key] = getlist(key) if key in list_fields else params[key]
    _refuse_nul(values, "")
    try:
        return msgspec.convert(values, schema, strict=False)
    except msgspec.ValidationError:
        raise _validation_failed(collect_errors(values, schema, strict=False)) from None


@functools.cache
def _list_fields(schema: type[msgspec.Struct]) -> frozenset[str]:
    """The query fields that take repeated keys; computed once per struct (msgspec's field
    introspection costs ~150 µs for a dozen fields, on every request otherwise)."""
    return frozenset(f.encode_name for f in msgspec.structs.fields(schema) if _is_list(f.type))


def collect_errors(
    value: Any, schema: Any, path: str = "", *, strict: bool = True
) -> list[FieldError]:
    """Every validation problem of `value` against `schema`, each with its field path."""
    errors: list[FieldError] = []
    _collect(value, schema, path, strict, errors)
    return errors[:MAX_FIELD_ERRORS] or [FieldError(path or "body", "Invalid value")]


def _collect(value: Any, schema: Any, path: str, strict: bool, out: list[FieldError]) -> None:
    if len(out) >= MAX_FIELD_ERRORS:
        return
    if isinstance(schema, type) and issubclass(schema, msgspec.Struct):
        if not isinstance(value, dict):
            out.append(FieldError(path or "body", "Expected an object"))
            return
        fields = {f.encode_name: f for f in msgspec.structs.fields(schema)}
        for key in value:
            if key not in fields:
                out.append(FieldError(_join(path, key), "Unknown field"))
        for name, field in fields.items():
            if name not in value:
                if field.required:
                    out.append(FieldError(_join(path, name), "Required"))
                continue
            _collect(value[name], field.type, _join(path, name), strict, out)
        return
    origin = typing.get_origin(schema)
    if origin in (list, tuple, set, frozenset) and isinstance(value, list):
        try:  # length limits live on the list itself; check them before the items
            msgspec.convert(value, schema, strict=strict)
            return
        except msgspec.ValidationError as error:
            message, where = _split(str(error))
            if not where:
                out.append(FieldError(path, message))
                return
        args = typing.get_args(schema)
        item = args[0] if args else Any
        for index, element in enumerate(value):
            _collect(element, item, f"{path}[{index}]", strict, out)
        return
    if origin is typing.Annotated:
        base = typing.get_args(schema)[0]
        if (isinstance(base, type) and issubclass(base, msgspec.Struct)) or typing.get_origin(
            base
        ) in (list, tuple):
            try:
                msgspec.convert(value, schema, strict=strict)
            except msgspec.ValidationError as error:
                message, where = _split(str(error))
                if where:
                    _collect(value, base, path, strict, out)
                else:
                    out.append(FieldError(path, message))
            return
    if origin in (typing.Union, types.UnionType):
        structs = [
            a
            for a in typing.get_args(schema)
            if isinstance(a, type) and issubclass(a, msgspec.Struct)
        ]
        if len(structs) == 1 and isinstance(value, dict):
            _collect(value, structs[0], path, strict, out)
            return
    try:
        msgspec.convert(value, schema, strict=strict)
    except msgspec.ValidationError as error:
        message, where = _split(str(error))
        out.append(FieldError(path + where if where else path or "body", message))


def _split(message: str) -> tuple[str, str]:
    match = _MSGSPEC_PATH.search(message)
    if not match:
        return message, ""
    return message[: match.start()], match.group(1)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_list(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation))
    return origin in (list, tuple, set, frozenset)


def _validation_failed(errors: list[FieldError]) -> ApiError:
    fields = ", ".join(e.field for e in errors[:5])
    return ApiError(Code.validation_failed, f"Invalid fields: {fields}", errors=errors)
