"""lme4-style model formulas: ``y ~ x1 + x2 + (1 + genre_* | user) + (1 + age + gender_* | item)``.

The left side names the response column. The fixed part (outside parentheses) becomes the fixed coordinate
``global``; every random term ``(terms | entity_column)`` becomes a random coordinate ``per_<entity_column>``
(``per_<entity_column>_2``, ... when one entity column has several random terms). Terms:

- a column name (numeric columns go to ``features``, ``list<struct<name, value>>`` columns to
  ``feature_bags``; any other type is an error); a name with odd characters can be back-quoted: ```my col```
- a glob wildcard (``genre_*``, ``x?``, ``f[ab]``; ``fnmatch`` rules, case-sensitive), expanded to the
  sorted matching columns; wildcards never match the response, weight, offset, uid or entity columns
- ``1`` (intercept; the default), ``0`` or ``-1`` (no intercept), in the fixed part and in random terms alike
- ``- name`` / ``- pattern`` removes columns added before it (e.g. ``num_* - num_id``)

Not supported (each raises ``SpecError`` naming the term and its position): interactions (``a:b``, ``a*b``),
function calls (``log(x)``), ``||``, nested random terms, grouping by several columns.

The formula needs the data's columns (to expand wildcards and to tell feature bags from numeric columns),
so it is resolved into a ``GLMixSpec`` against a ``pyarrow`` schema or table::

    spec = spec_from_formula("y ~ x1 + (1 + genre_* | user)", table, task="logistic",
                             l2={"global": 0.1, "user": 10}, max_iterations=20)

A YAML spec may hold ``formula:`` plus the same options instead of ``coordinates``; ``read_spec`` returns a
``GLMixSpec`` for a plain spec and a ``FormulaSpec`` (resolve it with ``.resolve(table)``) for a formula.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from .spec import CoordinateSpec, GLMixSpec, SpecError, read_spec_mapping

FIXED_NAME = "global"
# GLMixSpec fields a formula spec may set directly (task, response and coordinates come from the formula)
SPEC_OPTIONS = ("weight", "offset", "max_iterations", "tolerance", "uid", "variance", "sparsity_threshold",
                "evaluators")
# CoordinateSpec fields settable per coordinate through ``coordinate_options`` (the rest come from the formula)
COORDINATE_OPTIONS = tuple(sorted(set(CoordinateSpec.__dataclass_fields__)
                                  - {"name", "type", "entity", "features", "feature_bags", "intercept", "l2"}))
_GLOB_CHARS = set("*?[")


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Term:
    """One column term: ``text`` (a name or glob pattern), its character position, whether it was
    back-quoted (then it is a literal name, never a pattern) and whether it is removed (``- term``)."""

    text: str
    pos: int
    quoted: bool = False
    remove: bool = False

    @property
    def is_pattern(self) -> bool:
        return not self.quoted and bool(_GLOB_CHARS & set(self.text))


@dataclass(frozen=True)
class TermSet:
    """The terms of the fixed part or of one random term, and whether it has an intercept."""

    intercept: bool
    terms: tuple[Term, ...]


@dataclass(frozen=True)
class RandomTerm:
    """``(terms | entity)``."""

    terms: TermSet
    entity: str
    pos: int


@dataclass(frozen=True)
class Formula:
    """A parsed formula (no data needed yet)."""

    text: str
    response: str
    fixed: TermSet
    random: tuple[RandomTerm, ...]

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class _Token:
    kind: str  # NAME, NUMBER, OP, END
    value: str
    pos: int
    quoted: bool = False


_NAME_START = re.compile(r"[^\W\d]|[.*?\[]")
_NAME_CHAR = re.compile(r"[\w.*?\[]")


def _error(text: str, pos: int, message: str) -> SpecError:
    return SpecError(f"formula {text!r} at position {pos}: {message}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch == "|" and text.startswith("||", i):
            raise _error(text, i, "'||' (uncorrelated random terms) is not supported; use '(terms | entity)'")
        elif ch in "~+-()|":
            tokens.append(_Token("OP", ch, i))
            i += 1
        elif ch in ":^/":
            raise _error(text, i, f"operator {ch!r} is not supported (no interactions or nesting); add the "
                                  f"product column to the data and name it")
        elif ch == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise _error(text, i, "unclosed back-quote")
            if end == i + 1:
                raise _error(text, i, "empty back-quoted name")
            tokens.append(_Token("NAME", text[i + 1:end], i, quoted=True))
            i = end + 1
        elif ch.isdigit():
            m = re.compile(r"\d+(\.\d*)?").match(text, i)
            tokens.append(_Token("NUMBER", m.group(0), i))
            i = m.end()
        elif _NAME_START.match(ch):
            start = i
            while i < n and _NAME_CHAR.match(text[i]):
                if text[i] == "[":  # glob character class: up to the closing bracket
                    end = text.find("]", i + 1)
                    if end < 0:
                        raise _error(text, i, "unclosed '[' in a wildcard")
                    i = end + 1
                else:
                    i += 1
            tokens.append(_Token("NAME", text[start:i], start))
        else:
            raise _error(text, i, f"unexpected character {ch!r}")
    tokens.append(_Token("END", "", n))
    return tokens


class _Parser:
    """Recursive descent over: formula := NAME '~' terms END; terms := ['-'] term (('+'|'-') term)*;
    term := NUMBER | NAME | '(' terms '|' NAME ')'."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, tok: _Token, expected: str) -> SpecError:
        found = "the end" if tok.kind == "END" else repr(tok.value)
        return _error(self.text, tok.pos, f"expected {expected}, found {found}")

    def formula(self) -> Formula:
        tok = self.take()
        if tok.kind != "NAME":
            raise self.fail(tok, "the response column name before '~'")
        if not tok.quoted and _GLOB_CHARS & set(tok.value):
            raise _error(self.text, tok.pos, f"the response {tok.value!r} cannot be a wildcard")
        response = tok.value
        tilde = self.take()
        if tilde.kind != "OP" or tilde.value != "~":
            raise self.fail(tilde, "'~' after the response")
        fixed, random = self.terms(inside=False)
        end = self.peek()
        if end.kind != "END":
            raise self.fail(end, "'+', '-' or the end of the formula")
        if not fixed.terms and not fixed.intercept and not random:
            raise _error(self.text, tilde.pos, "the formula has no terms (only '0'/'-1')")
        return Formula(self.text, response, fixed, tuple(random))

    def terms(self, inside: bool) -> tuple[TermSet, list[RandomTerm]]:
        intercept, terms, random = True, [], []
        sign = "+"
        tok = self.peek()
        if tok.kind == "OP" and tok.value == "-":
            self.take()
            sign = "-"
        while True:
            tok = self.take()
            if tok.kind == "NUMBER":
                if tok.value not in ("0", "1"):
                    raise _error(self.text, tok.pos, f"number {tok.value} is not a term; only 1 (intercept) "
                                                      f"and 0 or -1 (no intercept) are")
                if sign == "-" and tok.value == "0":
                    raise _error(self.text, tok.pos, "'- 0' is not allowed; write '1' for an intercept")
                intercept = tok.value == "1" and sign == "+"
            elif tok.kind == "NAME":
                nxt = self.peek()
                if nxt.kind == "OP" and nxt.value == "(" and not tok.quoted:
                    raise _error(self.text, tok.pos, f"function calls like {tok.value}(...) are not supported; "
                                                      f"add the transformed column to the data")
                terms.append(Term(tok.value, tok.pos, tok.quoted, remove=sign == "-"))
            elif tok.kind == "OP" and tok.value == "(":
                if inside:
                    raise _error(self.text, tok.pos, "parentheses inside a random term are not supported")
                if sign == "-":
                    raise _error(self.text, tok.pos, "a random term cannot be removed with '-'")
                random.append(self.random_term(tok))
            else:
                raise self.fail(tok, "a column name, a wildcard, 1, 0 or '(terms | entity)'")
            nxt = self.peek()
            if nxt.kind == "OP" and nxt.value in "+-":
                sign = self.take().value
                continue
            if nxt.kind == "NAME" or nxt.kind == "NUMBER" or (nxt.kind == "OP" and nxt.value == "("):
                raise self.fail(nxt, "'+' or '-' between terms")
            return TermSet(intercept, tuple(terms)), random

    def random_term(self, open_tok: _Token) -> RandomTerm:
        inner, _ = self.terms(inside=True)
        bar = self.take()
        if bar.kind != "OP" or bar.value != "|":
            if bar.kind == "OP" and bar.value == ")":
                raise _error(self.text, open_tok.pos, "a parenthesised term needs '| entity_column', e.g. "
                                                       "'(1 + x | user)'")
            raise self.fail(bar, "'|' and the entity column")
        entity = self.take()
        if entity.kind != "NAME":
            raise self.fail(entity, "the entity column after '|'")
        if not entity.quoted and _GLOB_CHARS & set(entity.value):
            raise _error(self.text, entity.pos, f"the entity column {entity.value!r} cannot be a wildcard")
        close = self.take()
        if close.kind != "OP" or close.value != ")":
            if close.kind == "OP" and close.value in "+-":
                raise _error(self.text, close.pos, "grouping by several columns is not supported; use one "
                                                    "entity column per random term")
            raise self.fail(close, "')' closing the random term")
        if not inner.terms and not inner.intercept:
            raise _error(self.text, open_tok.pos, "random term has no terms (only '0'/'-1')")
        return RandomTerm(inner, entity.value, entity.pos)


def parse_formula(text: str) -> Formula:
    """Parse ``text`` (no data needed). Raises SpecError naming the problem and its character position."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError(f"a formula must be a non-empty string like 'y ~ x1 + (1 | user)'; got {text!r}")
    return _Parser(text).formula()


def looks_like_formula(text: str) -> bool:
    """True for ``'y ~ ...'`` (a response name, then '~'); False for a path or YAML text."""
    return isinstance(text, str) and re.match(r"\s*(`[^`]+`|[\w.]+)\s*~", text) is not None


# ---------------------------------------------------------------------------------------------- resolving


def _column_kinds(columns: pa.Schema | pa.Table | Sequence[str], bags: Sequence[str]) -> dict[str, pa.DataType | None]:
    if isinstance(columns, pa.Table):
        columns = columns.schema
    if isinstance(columns, pa.Schema):
        return {f.name: f.type for f in columns}
    if isinstance(columns, str | bytes) or not hasattr(columns, "__iter__"):
        raise SpecError(f"columns must be a pyarrow Schema, a pyarrow Table or a list of names; "
                        f"got {type(columns).__name__}")
    bag_type = pa.list_(pa.struct([("name", pa.string()), ("value", pa.float64())]))
    kinds: dict[str, pa.DataType | None] = {str(c): None for c in columns}
    for b in bags:
        kinds[str(b)] = bag_type
    return kinds


def is_feature_bag(dtype: pa.DataType) -> bool:
    """True for ``list<struct<name, value, ...>>`` (also large_list)."""
    if not (pa.types.is_list(dtype) or pa.types.is_large_list(dtype)) or not pa.types.is_struct(dtype.value_type):
        return False
    names = {dtype.value_type.field(i).name for i in range(dtype.value_type.num_fields)}
    return {"name", "value"} <= names


def _is_numeric(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_boolean(dtype)


def _close(name: str, columns: Sequence[str]) -> str:
    literal = "".join(ch for ch in name if ch not in "*?[]")
    prefix = re.split(r"[*?\[]", name)[0]
    close = [c for c in columns if prefix and c.startswith(prefix)][:5]
    close += [c for c in difflib.get_close_matches(literal or name, columns, n=5, cutoff=0.5) if c not in close]
    return f"; close columns: {close[:6]}" if close else f"; columns: {sorted(columns)[:20]}"


@dataclass(frozen=True)
class FormulaSpec:
    """A parsed formula plus its options, waiting for the data's columns: ``resolve(table_or_schema)``."""

    formula: Formula
    task: str = "logistic"
    l2: float | Mapping[str, float] | None = None
    coordinate_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, formula: str | Formula, *, task: str = "logistic",
              l2: float | Mapping[str, float] | None = None,
              coordinate_options: Mapping[str, Mapping[str, Any]] | None = None, **options: Any) -> FormulaSpec:
        """Parse ``formula`` and check the option names (values are checked at ``resolve``).

        ``l2``: one number for every coordinate, or a dict keyed by coordinate name (``global``,
        ``per_user``) or entity column (``user``); unnamed coordinates keep the default 1.0.
        ``coordinate_options``: per coordinate (same keys) a dict of other CoordinateSpec fields
        (``COORDINATE_OPTIONS``, e.g. ``l1``, ``max_samples``, ``normalization``). ``options``: GLMixSpec
        fields (``SPEC_OPTIONS``: weight, offset, max_iterations, tolerance, uid, variance, ...).
        """
        parsed = formula if isinstance(formula, Formula) else parse_formula(formula)
        bad = sorted(set(options) - set(SPEC_OPTIONS))
        if bad:
            hint = ""
            if set(bad) & set(COORDINATE_OPTIONS):
                hint = " (coordinate fields go in coordinate_options={coordinate: {field: value}})"
            raise SpecError(f"unknown formula spec option(s) {bad}{hint}; allowed: task, l2, coordinate_options, "
                            f"{', '.join(SPEC_OPTIONS)}")
        coordinate_options = dict(coordinate_options or {})
        for key, value in coordinate_options.items():
            if not isinstance(value, Mapping):
                raise SpecError(f"coordinate_options[{key!r}] must be a mapping of coordinate fields; got {value!r}")
            wrong = sorted(set(value) - set(COORDINATE_OPTIONS))
            if wrong:
                raise SpecError(f"coordinate_options[{key!r}]: field(s) {wrong} cannot be set here (features, "
                                f"entity and intercept come from the formula, l2 from 'l2'); allowed: "
                                f"{list(COORDINATE_OPTIONS)}")
        if l2 is not None and not isinstance(l2, Mapping):
            l2 = _number(l2, "l2")
        return cls(parsed, task, l2, coordinate_options, dict(options))

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> FormulaSpec:
        """From the YAML form: ``{"formula": "y ~ ...", "task": ..., "l2": ..., ...}``."""
        raw = dict(raw)
        text = raw.pop("formula")
        if "coordinates" in raw or "response" in raw:
            raise SpecError("a spec with 'formula' takes no 'coordinates' or 'response' (the formula gives them); "
                            "per-coordinate settings go in 'coordinate_options'")
        return cls.parse(text, **raw)

    def resolve(self, columns: pa.Schema | pa.Table | Sequence[str], *, bags: Sequence[str] = ()) -> GLMixSpec:
        """The ``GLMixSpec`` for data with these columns (a schema or table; a list of names treats every
        column as numeric except the ``bags`` named). Raises SpecError naming the term that does not fit."""
        f = self.formula
        kinds = _column_kinds(columns, bags)
        names = list(kinds)
        if f.response not in kinds:
            raise SpecError(f"formula {f.text!r}: response column {f.response!r} is not in the data"
                            f"{_close(f.response, names)}")
        rtype = kinds[f.response]
        if rtype is not None and not _is_numeric(rtype):
            raise SpecError(f"formula {f.text!r}: response column {f.response!r} must be numeric; it has type {rtype}")
        for rt in f.random:
            if rt.entity not in kinds:
                raise SpecError(f"formula {f.text!r}: entity column {rt.entity!r} (position {rt.pos}) is not in "
                                f"the data{_close(rt.entity, names)}")
            etype = kinds[rt.entity]
            if etype is not None and not (pa.types.is_integer(etype) or pa.types.is_string(etype)
                                          or pa.types.is_large_string(etype) or pa.types.is_dictionary(etype)):
                raise SpecError(f"formula {f.text!r}: entity column {rt.entity!r} must hold integer or string IDs; "
                                f"it has type {etype}")
        reserved = {f.response, *(rt.entity for rt in f.random)}
        reserved |= {self.options.get(k) for k in ("weight", "offset", "uid")} - {None}

        coords: list[dict[str, Any]] = []
        if f.fixed.terms or f.fixed.intercept:
            feats, bag_cols = self._expand(f.fixed, kinds, reserved)
            coords.append({"name": FIXED_NAME, "type": "fixed", "features": feats, "feature_bags": bag_cols,
                           "intercept": f.fixed.intercept})
        taken = {FIXED_NAME} if coords else set()
        for rt in f.random:
            feats, bag_cols = self._expand(rt.terms, kinds, reserved)
            name, k = f"per_{rt.entity}", 2
            while name in taken:
                name, k = f"per_{rt.entity}_{k}", k + 1
            taken.add(name)
            coords.append({"name": name, "type": "random", "entity": rt.entity, "features": feats,
                           "feature_bags": bag_cols, "intercept": rt.terms.intercept})
        self._apply_l2(coords)
        for key, values in self.coordinate_options.items():
            for c in _targets(coords, key, "coordinate_options"):
                c.update(values)
        raw = {"task": self.task, "response": f.response, "coordinates": coords, **self.options}
        return GLMixSpec.from_dict(raw)

    def _apply_l2(self, coords: list[dict[str, Any]]) -> None:
        if self.l2 is None:
            return
        if not isinstance(self.l2, Mapping):
            for c in coords:
                c["l2"] = self.l2
            return
        for key, value in self.l2.items():
            for c in _targets(coords, key, "l2"):
                c["l2"] = _number(value, f"l2[{key!r}]")

    def _expand(self, ts: TermSet, kinds: dict[str, pa.DataType | None],
                reserved: set[str]) -> tuple[list[str], list[str]]:
        text = self.formula.text
        names = list(kinds)
        chosen: list[str] = []
        for term in ts.terms:
            if term.is_pattern:
                matches = sorted(c for c in names if c not in reserved and fnmatch.fnmatchcase(c, term.text))
                if not matches:
                    raise SpecError(f"formula {text!r}: wildcard {term.text!r} (position {term.pos}) matches no "
                                    f"column{_close(term.text, names)}")
            else:
                if term.text not in kinds:
                    raise SpecError(f"formula {text!r}: column {term.text!r} (position {term.pos}) is not in the "
                                    f"data{_close(term.text, names)}")
                if term.text == self.formula.response:
                    raise SpecError(f"formula {text!r}: the response {term.text!r} cannot also be a feature "
                                    f"(position {term.pos})")
                matches = [term.text]
            if term.remove:
                chosen = [c for c in chosen if c not in matches]
            else:
                chosen += [c for c in matches if c not in chosen]
        features, bag_cols = [], []
        for name in chosen:
            dtype = kinds[name]
            if dtype is None or _is_numeric(dtype):
                features.append(name)
            elif is_feature_bag(dtype):
                bag_cols.append(name)
            else:
                via = next((t for t in ts.terms if not t.remove and t.is_pattern
                            and fnmatch.fnmatchcase(name, t.text)), None)
                how = f" (matched by {via.text!r}; exclude it with '- {name}')" if via else ""
                raise SpecError(f"formula {text!r}: column {name!r}{how} has type {dtype}; a feature must be "
                                f"numeric or a feature bag list<struct<name: string, value: double>>")
        return features, bag_cols

    def describe(self) -> str:
        """One line: the formula and the task."""
        return f"{self.formula.text!r}, task={self.task!r}"


def _targets(coords: list[dict[str, Any]], key: str, what: str) -> list[dict[str, Any]]:
    hits = [c for c in coords if c["name"] == key or c.get("entity") == key]
    if not hits:
        raise SpecError(f"{what}: no coordinate or entity column named {key!r}; coordinates: "
                        f"{[c['name'] for c in coords]}, entity columns: "
                        f"{[c['entity'] for c in coords if c.get('entity')]}")
    return hits


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool):
        raise SpecError(f"{what} must be a number; got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be a number; got {value!r}") from None


def spec_from_formula(formula: str, columns: pa.Schema | pa.Table | Sequence[str], *, task: str = "logistic",
                      l2: float | Mapping[str, float] | None = None,
                      coordinate_options: Mapping[str, Mapping[str, Any]] | None = None,
                      bags: Sequence[str] = (), **options: Any) -> GLMixSpec:
    """Turn ``formula`` into a validated ``GLMixSpec`` for data with ``columns``.

    ``columns``: a pyarrow Schema or Table (types tell numeric columns from feature bags), or a list of
    column names (every column numeric except those in ``bags``). ``l2``: a number for every coordinate or
    a dict keyed by coordinate name or entity column (default 1.0 each). ``coordinate_options``: per
    coordinate a dict of other CoordinateSpec fields. ``options``: GLMixSpec fields (weight, offset,
    max_iterations, tolerance, uid, variance, sparsity_threshold, evaluators). Raises SpecError.
    """
    return FormulaSpec.parse(formula, task=task, l2=l2, coordinate_options=coordinate_options,
                             **options).resolve(columns, bags=bags)


def spec_source(source: GLMixSpec | FormulaSpec | Mapping[str, Any] | str | Path,
                **options: Any) -> GLMixSpec | FormulaSpec:
    """Normalise a spec source: a GLMixSpec, a FormulaSpec, a dict (with ``coordinates`` or ``formula``), a
    formula string, a YAML/JSON path or YAML text. Returns a GLMixSpec, or a FormulaSpec when the spec is a
    formula (it needs the data's columns). ``options`` (task, l2, coordinate_options, GLMixSpec fields)
    apply on top; for a spec with explicit coordinates ``l2`` and ``coordinate_options`` are keyed by
    coordinate name or entity column as for formulas."""
    if isinstance(source, FormulaSpec):
        if options:
            merged = {"task": source.task, "l2": source.l2, "coordinate_options": dict(source.coordinate_options),
                      **source.options, **options}
            return FormulaSpec.parse(source.formula, **merged)
        return source
    if isinstance(source, str) and looks_like_formula(source):
        return FormulaSpec.parse(source, **options)
    if isinstance(source, GLMixSpec):
        return _with_options(source.to_dict(), options) if options else source
    if isinstance(source, str | Path):
        raw = read_spec_dict(source)
    elif isinstance(source, Mapping):
        raw = dict(source)
    else:
        raise SpecError(f"a spec must be a GLMixSpec, a dict, a YAML path or a formula string; "
                        f"got {type(source).__name__}")
    if "formula" in raw:
        return FormulaSpec.from_dict({**raw, **options})
    return _with_options(raw, options)


def read_spec(path_or_text: str | Path) -> GLMixSpec | FormulaSpec:
    """Read a YAML/JSON spec file (or YAML text): a GLMixSpec, or a FormulaSpec when it holds ``formula``."""
    return spec_source(Path(path_or_text) if isinstance(path_or_text, Path) else str(path_or_text))


def read_spec_dict(path_or_text: str | Path) -> dict[str, Any]:
    """The raw mapping of a YAML/JSON spec file path or YAML text (same rules as ``GLMixSpec.from_yaml``)."""
    raw = read_spec_mapping(path_or_text)
    if not isinstance(raw, dict):
        raise SpecError(f"a spec must be a mapping; got {type(raw).__name__} (a path that does not end in "
                        f".yaml/.yml/.json is read as YAML text)")
    return raw


def _with_options(raw: dict[str, Any], options: Mapping[str, Any]) -> GLMixSpec:
    options = dict(options)
    l2 = options.pop("l2", None)
    coordinate_options = options.pop("coordinate_options", None) or {}
    raw = dict(raw)
    raw.update(options)  # task and GLMixSpec fields; from_dict rejects unknown names
    coords = [dict(c) for c in raw.get("coordinates") or []]
    if l2 is not None and coords:
        if isinstance(l2, Mapping):
            for key, value in l2.items():
                for c in _targets(coords, key, "l2"):
                    c["l2"] = _number(value, f"l2[{key!r}]")
        else:
            for c in coords:
                c["l2"] = _number(l2, "l2")
    for key, values in coordinate_options.items():
        for c in _targets(coords, key, "coordinate_options"):
            c.update(values)
    if coords:
        raw["coordinates"] = coords
    return GLMixSpec.from_dict(raw)


def schema_of(path: str | Path) -> pa.Schema:
    """The schema of the data at ``path`` (Parquet file, folder of Parquet files, or CSV) without reading
    the Parquet rows; the same files ``load_table`` reads."""
    import pyarrow.parquet as pq

    from .data import DataError, load_table

    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if not p.name.startswith((".", "_")))
        if not files:
            raise DataError(f"folder {path} holds no .parquet files")
        return pa.unify_schemas([pq.read_schema(f) for f in files])
    if path.is_file() and path.suffix.lower() in (".parquet", ".pq"):
        return pq.read_schema(path)
    return load_table(path).schema


def parse_l2_option(values: Sequence[str]) -> float | dict[str, float] | None:
    """The CLI's ``--l2`` values: one number (every coordinate) or ``name=number`` items (coordinate name or
    entity column); None when empty."""
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return _number(values[0], "--l2")
    out: dict[str, float] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SpecError(f"--l2: give one number or name=number items; got {item!r}")
        out[key] = _number(value, f"--l2 {key}")
    return out
