"""The canonical byte form of a JSON payload: what a signature covers.

It is RFC 8785, the JSON Canonicalization Scheme (JCS): UTF-8, object keys sorted by their
UTF-16 code units, no whitespace, strings escaped only where JSON requires it, numbers written
the way ECMAScript writes a double (``1`` for ``1.0``, ``1e+21``, ``0.000001``, ``1e-7``).

Why JCS rather than Python's own ``json.dumps(sort_keys=True)``: a signature is checked by
canonicalising what was *received*, and JSON does not say whether ``1`` and ``1.0`` differ.
Python keeps the difference, JavaScript and Go's ``interface{}`` do not, so a Python-only form
could only be checked by parsers that keep the raw number text. With JCS every language has a
library that gives the same bytes from the parsed value, and ``1763712000.0`` and
``1763712000`` canonicalise alike. As in JCS, every number is a double: an integer beyond
+-2**53 is written as the nearest double (a JavaScript parser would read it so). Such integers
never reach a signature check: ``parse_untrusted`` refuses them on input (I-JSON, RFC 7493), so
a received number is exactly the number that was signed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

#: The largest integer every JSON parser reads exactly (I-JSON, RFC 7493).
MAX_SAFE_INTEGER = 2**53


def canonical(payload: Any) -> bytes:
    """The canonical (RFC 8785) bytes of a JSON payload.

    Refused with ValueError: NaN and infinities (not JSON), integers beyond a double's range,
    object keys that are not strings (JSON would turn ``1`` into ``"1"`` and two keys could collide),
    strings that are not valid Unicode (lone surrogates). TypeError for values JSON has no
    form for. ``canonical(json.loads(canonical(p))) == canonical(p)``.
    """
    try:
        if _json_dumps_agrees(payload):  # the common case, five times faster
            return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode("utf-8")
        out: list[str] = []
        _write(payload, out)
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode: {e}") from None


def _json_dumps_agrees(value: Any) -> bool:
    """Whether Python's sorted ``json.dumps`` writes ``value`` exactly as RFC 8785 does: dicts
    with ASCII keys (code point order is then UTF-16 order), integers a double holds exactly,
    and floats that are not whole, in [1e-4, 1e16) (where ``repr`` and ECMAScript agree)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str) or v is None or isinstance(v, bool):
            continue
        if isinstance(v, int):
            if abs(v) > MAX_SAFE_INTEGER:
                return False
        elif isinstance(v, float):
            if not (1e-4 <= abs(v) < 1e16) or v.is_integer():
                return False
        elif type(v) is dict:
            for k, item in v.items():
                if not (isinstance(k, str) and k.isascii()):
                    return False
                stack.append(item)
        elif isinstance(v, list | tuple):
            stack.extend(v)
        else:
            return False
    return True


def _write(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        if abs(value) <= MAX_SAFE_INTEGER:
            out.append(str(int(value)))
        else:
            try:
                out.append(number(float(value)))
            except OverflowError:
                raise ValueError(f"integer {value} is beyond a double's range") from None
    elif isinstance(value, float):
        out.append(number(value))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16)):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise TypeError(f"{type(value).__name__} has no JSON form")


def _string(text: str) -> str:
    # json.dumps escapes exactly what JCS does (", \, \b \f \n \r \t, other controls as
    # lowercase \u00xx) and, with ensure_ascii off, nothing else.
    return json.dumps(str(text), ensure_ascii=False)


def _utf16(key: str) -> bytes:
    # Big-endian UTF-16 bytes compare as UTF-16 code units do, the order RFC 8785 sorts by.
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode: {e}") from None


def number(x: float) -> str:
    """A double as ECMAScript's ``Number.prototype.toString`` writes it (RFC 8785, 3.2.2.3)."""
    if not math.isfinite(x):
        raise ValueError(f"{x} is not a JSON number")
    if x == 0:
        return "0"  # and -0
    if x < 0:
        return "-" + number(-x)
    # repr gives the shortest digits that read back to x, as ECMAScript requires.
    mantissa, _, exp = repr(x).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    point = len(whole) + (int(exp) if exp else 0) - (len(whole + frac) - len((whole + frac).lstrip("0")))
    digits = digits.rstrip("0")
    k, n = len(digits), point  # x = 0.<digits> * 10**n
    if k <= n <= 21:
        return digits + "0" * (n - k)
    if 0 < n <= 21:
        return digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return "0." + "0" * -n + digits
    e = n - 1
    sign = "+" if e >= 0 else "-"
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{head}e{sign}{abs(e)}"
