"""Reading a job file into plain data: safe YAML (data, never code), with the traps of YAML closed:
duplicate keys (the last would silently win), documents too large or too deeply nested to be a job,
alias bombs and self-referencing aliases. ``--set KEY=VALUE`` overrides are parsed the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from orchestrator.job.spec import JobSpecError

MAX_BYTES = 1_000_000
MAX_DEPTH = 32
MAX_NODES = 100_000
MERGE_TAG = "tag:yaml.org,2002:merge"


class _JobLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping naming one key twice."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(None, None, "a mapping key must be a plain value",
                                                        key_node.start_mark) from None
            if key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {first_line[key] + 1}); keep one",
                    key_node.start_mark)
            first_line[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> plain data, or ``JobSpecError`` saying what is wrong and where."""
    try:
        data = yaml.load(text, Loader=_JobLoader)
    except yaml.YAMLError as err:
        raise JobSpecError(source, [f"(syntax): {err}"]) from None
    except RecursionError:
        raise JobSpecError(source, [(f"(syntax): nested more than {MAX_DEPTH} levels deep; a job file is a few "
                                    f"levels of mappings and lists")]) from None
    _check_shape(data, source)
    return data


def _check_shape(data: Any, source: str) -> None:
    """Refuse data nested too deeply, too large (alias bombs expand here) or referring to itself."""
    stack: list[tuple[Any, int, frozenset[int]]] = [(data, 1, frozenset())]
    nodes = 0
    while stack:
        node, depth, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise JobSpecError(source, [(f"(size): more than {MAX_NODES} values (are aliases expanding?); a job "
                                        f"file is far smaller")])
        if depth > MAX_DEPTH:
            raise JobSpecError(source, [f"(syntax): nested more than {MAX_DEPTH} levels deep"])
        if isinstance(node, (dict, list)):
            if id(node) in path:
                raise JobSpecError(source, ["(syntax): an alias refers to the mapping or list that contains it"])
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, depth + 1, path | {id(node)}) for child in children)


def read_yaml(path: str | Path) -> Any:
    """Read a job file as plain data; a missing file, a folder, binary or non-UTF-8 content, or a
    file too large to be a job is a ``JobSpecError``."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise JobSpecError(source, [f"(file): {path} does not exist"])
    if not path.is_file():
        raise JobSpecError(source, [f"(file): {path} is not a file; give the job's .yaml file"])
    if path.stat().st_size > MAX_BYTES:
        raise JobSpecError(source, [(f"(file): {path} is {path.stat().st_size:,} bytes; a job file is under "
                                    f"{MAX_BYTES:,}")])
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise JobSpecError(source, [f"(file): cannot read {path}: {err.strerror or err}"]) from None
    if b"\0" in raw:
        raise JobSpecError(source, [f"(file): {path} is binary, not a YAML job file"])
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise JobSpecError(source, [f"(file): {path} is not UTF-8 text (byte {err.start}); save it as UTF-8"]) from None
    return parse_yaml(text, source)


def apply_overrides(raw: Any, overrides: list[str], source: str = "<job>") -> Any:
    """Apply ``key.sub=value`` overrides (``value`` parsed as YAML; list items by index, e.g.
    ``scenarios.0.fraction=0.2``) to the raw job mapping. Every bad override is reported."""
    if not overrides:
        return raw
    if not isinstance(raw, dict):
        raise JobSpecError(source, ["(top level): the job file must be a YAML mapping"])
    errors = []
    for item in overrides:
        problem = _apply_one(raw, item)
        if problem:
            errors.append(f"--set {item[:80]}: {problem}")
    if errors:
        raise JobSpecError(source, errors)
    return raw


def _apply_one(raw: dict, item: str) -> str | None:
    key, sep, text = item.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        return "use KEY=VALUE with a dotted key, e.g. --set dataset.root=/data/mnist"
    try:
        value = parse_yaml(text, "--set")
    except JobSpecError as err:
        return f"the value is not valid YAML ({err.errors[0].split(': ', 1)[-1]}); quote it, e.g. --set {key}='\"...\"'"
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return f"{'.'.join(parts[:i]) or 'the job'} is a list of {len(node)}; index it with 0..{len(node) - 1}"
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            return f"{'.'.join(parts[:i])} is a single value, not a mapping"
        if last:
            node[part] = value
            continue
        if node.get(part) is None:
            node[part] = {}
        node = node[part]
    return None
