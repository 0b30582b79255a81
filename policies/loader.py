"""Load policy YAML files into a validated, compiled Policy; every error names file, line, field.

Several files merge in order: mapping sections (`plans`, `upstreams`) merge by key, `routes`
concatenate, anything else is replaced by the later file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies.schema import PolicyDocument

Loc = tuple[str | int, ...]
_MERGED_MAPPINGS = ("plans", "upstreams")
_CONCATENATED_LISTS = ("routes",)


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy: `file`, 1-based `line` (0 when unknown), dotted `field`."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field or '<root>'}: {self.message}"


class PolicyError(Exception):
    """Raised when policy files are unreadable or invalid; `issues` lists every problem."""

    def __init__(self, issues: Sequence[PolicyIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


def parse_documents(paths: Iterable[Path]) -> tuple[PolicyDocument, dict[Loc, tuple[str, int]]]:
    """Read, merge and validate the YAML `paths`.

    Returns the document and a map from each field location to (file, line) for later checks.
    Raises PolicyError naming file, line and field of every problem found.
    """
    files = [Path(p) for p in paths]
    data, origins, issues = read_documents(files)
    return validate_document(data, origins, files, issues), origins


def read_documents(
    files: Sequence[Path],
) -> tuple[dict[str, Any], dict[Loc, tuple[str, int]], list[PolicyIssue]]:
    """Read and merge the YAML `files` without validating them.

    Returns the merged plain data, the (file, line) of each location, and the problems that do
    not stop validation (duplicate keys: the later value is kept). Raises PolicyError when a
    file cannot be read or parsed, or is not a mapping (nothing sensible can be validated).
    """
    merged: dict[str, Any] = {}
    origins: dict[Loc, tuple[str, int]] = {}
    fatal: list[PolicyIssue] = []
    issues: list[PolicyIssue] = []
    if not files:
        raise PolicyError([PolicyIssue("<none>", 0, "", "no policy file given")])
    for path in files:
        try:
            data, lines = _read_yaml(path, issues)
        except PolicyError as exc:
            fatal.extend(exc.issues)
            continue
        _merge(merged, origins, data, lines, str(path))
    if fatal:
        raise PolicyError(fatal + issues)
    return merged, origins, issues


def validate_document(
    data: Mapping[str, Any],
    origins: Mapping[Loc, tuple[str, int]],
    files: Sequence[Path],
    issues: Sequence[PolicyIssue] = (),
) -> PolicyDocument:
    """Validate merged `data` against the schema. Raises PolicyError listing `issues` (found
    while reading) and every schema error, each with file, line and field."""
    try:
        doc = PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise PolicyError([*issues, *(_issue_from(err, origins, files)
                                      for err in _one_branch(exc.errors()))]) from None
    if issues:
        raise PolicyError(issues)
    return doc


def _read_yaml(
    path: Path, issues: list[PolicyIssue]
) -> tuple[dict[str, Any], dict[Loc, int]]:
    """Parse one file. Duplicate keys are appended to `issues`; unreadable or invalid YAML,
    or a document that is not a mapping, raises PolicyError."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([PolicyIssue(name, 0, "", f"cannot read: {exc.strerror}")]) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(exc, "problem", None) or str(exc)
        raise PolicyError([PolicyIssue(name, line, "", f"invalid YAML: {problem}")]) from None
    if node is None:
        return {}, {}
    lines: dict[Loc, int] = {}
    data = _construct(node, (), lines, issues, name)
    if not isinstance(data, dict):
        raise PolicyError([PolicyIssue(name, node.start_mark.line + 1, "", "must be a mapping")])
    return data, lines


def _construct(
    node: yaml.Node, loc: Loc, lines: dict[Loc, int], issues: list[PolicyIssue], name: str
) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _scalar(key_node)
            if key in out:
                issues.append(
                    PolicyIssue(name, key_node.start_mark.line + 1, dotted((*loc, key)),
                                "duplicate key")
                )
            out[key] = _construct(value_node, (*loc, key), lines, issues, name)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _construct(item, (*loc, i), lines, issues, name) for i, item in enumerate(node.value)
        ]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return yaml.SafeLoader("").construct_object(node)


def _merge(
    merged: dict[str, Any],
    origins: dict[Loc, tuple[str, int]],
    data: Mapping[str, Any],
    lines: Mapping[Loc, int],
    name: str,
) -> None:
    def relocate(src: Loc, dst: Loc) -> None:
        for stale in [loc for loc in origins if loc[: len(dst)] == dst]:
            del origins[stale]
        n = len(src)
        for loc, line in lines.items():
            if loc[:n] == src:
                origins[dst + loc[n:]] = (name, line)

    for key, value in data.items():
        if key in _MERGED_MAPPINGS and isinstance(value, dict) and isinstance(
            merged.get(key), dict
        ):
            for sub_key, sub_value in value.items():
                merged[key][sub_key] = sub_value
                relocate((key, sub_key), (key, sub_key))
        elif key in _CONCATENATED_LISTS and isinstance(value, list) and isinstance(
            merged.get(key), list
        ):
            offset = len(merged[key])
            merged[key].extend(value)
            for i in range(len(value)):
                relocate((key, i), (key, offset + i))
        else:
            merged[key] = value
            relocate((key,), (key,))
    origins.setdefault((), (name, 1))


def origin_of(
    loc: Loc, origins: Mapping[Loc, tuple[str, int]], default_file: str
) -> tuple[str, int]:
    """(file, line) of the deepest known prefix of `loc`."""
    for n in range(len(loc), -1, -1):
        hit = origins.get(tuple(loc[:n]))
        if hit is not None:
            return hit
    return default_file, 0


def _one_branch(errors: Sequence[Any]) -> list[Any]:
    """Errors of a value that fits no branch of a `mapping | 'keyword'` union (a meter's
    `prices: {...} | provider`): when the value is not a string, the keyword branch's
    "Input should be 'provider'" says nothing useful, so only the mapping's errors are kept."""
    return [e for e in errors
            if not (any(isinstance(p, str) and p.startswith("literal[") for p in e.get("loc", ()))
                    and not isinstance(e.get("input"), str))]


def _issue_from(
    err: Mapping[str, Any], origins: Mapping[Loc, tuple[str, int]], files: Sequence[Path]
) -> PolicyIssue:
    # pydantic puts the discriminated-union tag ("tokens", "fixed") into loc; drop such parts
    # when they are not real keys so the field path reads as the operator wrote it.
    loc = tuple(err.get("loc", ()))
    real: list[str | int] = []
    for part in loc:
        candidate = (*real, part)
        if any(k[: len(candidate)] == candidate for k in origins):
            real.append(part)
        elif isinstance(part, str) and (part in {"tokens", "duration", "fixed", "request",
                                                  "learned"} or part.startswith("dict[")):
            continue
        else:
            real.append(part)
    file, line = origin_of(tuple(real), origins, str(files[-1]))
    message = str(err.get("msg", "invalid"))
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
    return PolicyIssue(file, line, dotted(tuple(real)), message)


def dotted(loc: Loc) -> str:
    """`routes[0].meter.type` style path of a location."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
