"""Transfer's filter languages: task lists, event lists, ``ls`` and transfer ``filter_rules``.

Syntax as globus-cli and globus-sdk send it:

* ``task_list?filter=status:ACTIVE,INACTIVE/type:TRANSFER/label:=a,!b`` -- clauses joined
  by ``/`` must all hold; a clause's comma-separated values are alternatives. Label values
  are ``=exact``, ``~pattern`` (``*`` wildcards, case-insensitive), ``!exact`` and
  ``!~pattern`` (negations, which must all hold); a bare value is exact. Time clauses are
  ``request_time:START,END`` with either end empty.
* ``event_list?filter=is_error:1``.
* ``operation/ls?filter=name:~*.txt/type:file``; several ``filter`` parameters are
  alternatives (globus-cli's recursive ls sends ``type:dir`` and ``name:...``). Name
  values take the same ``=``/``~``/``!``/``!~`` prefixes as labels.
* transfer ``filter_rules``: ``[{"method": "include"|"exclude", "name": glob, "type":
  "file"|"dir"|None}]`` applied to what a recursive item finds, first match wins,
  included by default.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Optional

from .common import parse_time
from .errors import ApiError

TASK_FILTER_FIELDS = frozenset(
    {"status", "type", "task_id", "label", "request_time", "completion_time"}
)
LS_FILTER_FIELDS = frozenset(
    {"name", "type", "size", "permissions", "user", "group", "last_modified"}
)


def _bad(clause: str) -> ApiError:
    return ApiError(400, "ClientError.BadRequest", f"Invalid filter clause '{clause}'")


def parse_filter(text: Optional[str], fields: frozenset[str]) -> dict[str, list[str]]:
    """``key:v1,v2/key2:v3`` into ``{key: [v1, v2], key2: [v3]}`` (unknown keys: 400)."""
    filters: dict[str, list[str]] = {}
    if not text:
        return filters
    for clause in text.split("/"):
        if not clause:
            continue
        key, sep, values = clause.partition(":")
        if not sep or key not in fields:
            raise _bad(clause)
        filters[key] = values.split(",")
    return filters


def _glob(pattern: str, value: str) -> bool:
    """``~`` matching: ``*`` wildcards, case-insensitive, anchored at both ends."""
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.IGNORECASE | re.DOTALL) is not None


def match_patterns(values: Sequence[str], value: str) -> bool:
    """Match ``value`` against ``=``/``~``/``!``/``!~`` terms: any positive term (if there
    are any) and every negative term must hold."""
    positive: list[bool] = []
    for term in values:
        if term.startswith("!~"):
            if _glob(term[2:], value):
                return False
        elif term.startswith("!"):
            if value == term[1:]:
                return False
        elif term.startswith("~"):
            positive.append(_glob(term[1:], value))
        else:
            positive.append(value == (term[1:] if term.startswith("=") else term))
    return not positive or any(positive)


def task_matches(task: Mapping[str, Any], filters: Mapping[str, list[str]]) -> bool:
    for key, values in filters.items():
        if key in ("status", "type", "task_id"):
            if str(task[key]) not in values and str(task[key]).upper() not in values:
                return False
        elif key == "label":
            if not match_patterns(values, task.get("label") or ""):
                return False
        else:
            value = task.get(key)
            if value is None:
                return False
            stamp = parse_time(value)
            start = parse_time(values[0]) if values and values[0] else None
            end = parse_time(values[1]) if len(values) > 1 and values[1] else None
            if (start is not None and stamp < start) or (end is not None and stamp > end):
                return False
    return True


def event_filter(text: Optional[str]) -> Optional[bool]:
    """``is_error:1`` -> True, ``is_error:0`` -> False, nothing -> None."""
    filters = parse_filter(text, frozenset({"is_error"}))
    if "is_error" not in filters:
        return None
    flag = filters["is_error"][0].lower()
    if flag not in ("0", "1", "true", "false"):
        raise _bad(f"is_error:{flag}")
    return flag in ("1", "true")


def ls_filters(texts: Iterable[str]) -> list[dict[str, list[str]]]:
    """The ``filter`` parameters of an ``ls``: alternatives, each an AND of clauses."""
    return [parse_filter(text, LS_FILTER_FIELDS) for text in texts if text]


def ls_entry_matches(
    doc: Mapping[str, Any], alternatives: Sequence[Mapping[str, list[str]]]
) -> bool:
    if not alternatives:
        return True
    return any(
        all(match_patterns(values, str(doc.get(key, ""))) for key, values in clauses.items())
        for clauses in alternatives
    )


def validate_filter_rules(rules: Any) -> list[dict[str, Any]]:
    """Check a transfer document's ``filter_rules`` (400 in Transfer's words otherwise)."""
    if rules is None:
        return []
    if not isinstance(rules, list):
        raise ApiError(400, "ClientError.BadRequest", "filter_rules must be a list")
    checked = []
    for rule in rules:
        if (
            not isinstance(rule, dict)
            or rule.get("method") not in ("include", "exclude")
            or not isinstance(rule.get("name"), str)
            or rule.get("type") not in (None, "file", "dir")
        ):
            raise ApiError(400, "ClientError.BadRequest", f"Invalid filter rule {rule!r}")
        checked.append(dict(rule))
    return checked


def included_by_rules(rules: Sequence[Mapping[str, Any]], name: str, kind: str) -> bool:
    """Whether a file or directory named ``name`` found by a recursive item is copied."""
    for rule in rules:
        if rule.get("type") not in (None, kind):
            continue
        if fnmatch.fnmatchcase(name, str(rule["name"])):
            return bool(rule["method"] == "include")
    return True
