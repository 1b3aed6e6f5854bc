"""kerchunk v1 ``templates`` and ``gen``, evaluated safely (no jinja).

Templates: ``{{name}}`` in a list value's URL is replaced by ``templates[name]``; any other
``{{...}}`` construct is an error. ``gen`` expressions may use dimension names, template names,
integer literals, ``+ - * // %`` and parentheses -- enough for every known producer.
"""

from __future__ import annotations

import ast
import itertools
import math
import operator
import re
from typing import Iterator

from refmount.errors import RefmountError

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}
MAX_GENERATED = 5_000_000  # about 1.8 GB at the peak of loading; larger sets belong in Parquet


def fill_url(url: str, templates: dict[str, str], where: str) -> str:
    """Simple-mode template substitution, as kerchunk producers expect it."""
    if not templates or "{{" not in url:
        return url

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if not _NAME.match(name):
            raise RefmountError(f"{where}: unsupported template expression {{{{{name}}}}} in {url!r}")
        if name not in templates:
            raise RefmountError(f"{where}: unknown template {name!r} in {url!r}")
        return templates[name]

    return _PLACEHOLDER.sub(sub, url)


def _evaluate(node: ast.AST, names: dict, where: str):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, names, where)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, str)) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise RefmountError(f"{where}: unknown name {node.id!r}")
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        left, right = _evaluate(node.left, names, where), _evaluate(node.right, names, where)
        if not (isinstance(left, int) and isinstance(right, int)):
            raise RefmountError(f"{where}: arithmetic needs integers")
        try:
            return _OPS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise RefmountError(f"{where}: division by zero") from None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand, names, where)
        if not isinstance(value, int):
            raise RefmountError(f"{where}: arithmetic needs integers")
        return -value if isinstance(node.op, ast.USub) else value
    raise RefmountError(f"{where}: unsupported expression {ast.unparse(node)!r}")


def _compile(text: str, where: str) -> list:
    """Split a template string into literal parts and compiled expressions."""
    parts: list = []
    pos = 0
    for match in _PLACEHOLDER.finditer(text):
        parts.append(text[pos : match.start()])
        try:
            parts.append(ast.parse(match.group(1).strip(), mode="eval"))
        except SyntaxError:
            raise RefmountError(f"{where}: cannot parse {match.group(0)!r}") from None
        pos = match.end()
    parts.append(text[pos:])
    return parts


def _render(parts: list, names: dict, where: str) -> str:
    return "".join(p if isinstance(p, str) else str(_evaluate(p, names, where)) for p in parts)


def _dimension(name: str, spec, where: str) -> list:
    if isinstance(spec, list):
        return spec
    if isinstance(spec, dict):
        try:
            args = [spec.get("start", 0), spec["stop"], spec.get("step", 1)]
        except KeyError:
            raise RefmountError(f"{where}: dimension {name!r} has no 'stop'") from None
        if not all(isinstance(a, int) and not isinstance(a, bool) for a in args) or args[2] == 0:
            raise RefmountError(f"{where}: dimension {name!r} needs integer start/stop/step")
        return range(*args)
    raise RefmountError(f"{where}: dimension {name!r} must be a list or a range object")


def expand_gen(gen, templates: dict[str, str], where: str) -> Iterator[tuple[str, list]]:
    """Yield ``(key, [url] | [url, offset, length])`` for every generated reference."""
    if not isinstance(gen, list):
        raise RefmountError(f"{where}: 'gen' must be a list")
    total = 0
    for n, item in enumerate(gen):
        here = f"{where}: gen[{n}]"
        if not isinstance(item, dict) or not isinstance(item.get("key"), str) or not isinstance(item.get("url"), str):
            raise RefmountError(f"{here}: needs string 'key' and 'url'")
        if ("offset" in item) != ("length" in item):
            raise RefmountError(f"{here}: 'offset' and 'length' go together")
        dims = item.get("dimensions")
        if not isinstance(dims, dict):
            raise RefmountError(f"{here}: needs a 'dimensions' object")
        axes = [_dimension(name, spec, here) for name, spec in dims.items()]
        total += math.prod(len(a) for a in axes)
        if total > MAX_GENERATED:
            raise RefmountError(f"{here}: expands to more than {MAX_GENERATED} references")
        key_t = _compile(item["key"], here)
        url_t = _compile(item["url"], here)
        off_t = _compile(str(item["offset"]), here) if "offset" in item else None
        len_t = _compile(str(item["length"]), here) if "length" in item else None
        for combo in itertools.product(*axes):
            names = dict(templates)
            names.update(zip(dims, combo))
            url = _render(url_t, names, here)
            if off_t is None:
                yield _render(key_t, names, here), [url]
                continue
            try:
                offset, length = int(_render(off_t, names, here)), int(_render(len_t, names, here))
            except ValueError:
                raise RefmountError(f"{here}: offset/length do not render as integers") from None
            yield _render(key_t, names, here), [url, offset, length]
