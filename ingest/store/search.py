"""MLflow's search filter and order_by grammar, compiled to PostgreSQL.

A filter is comparisons joined by AND (case-insensitive)::

    metrics.loss < 0.5 AND params.optimizer = 'adam' AND tags.`my tag` IS NULL

An order_by entry is one identifier and an optional ASC or DESC::

    metrics.`val loss` DESC

:func:`runs_query` and :func:`experiments_query` parse both with a small
hand-written tokenizer and parser and return one statement whose user values
all travel as asyncpg ``$n`` arguments, never in the SQL text. Bad input
raises InvalidParameter naming the clause and the token at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runstream.ingest.errors import InvalidParameter

_NUMERIC_OPS = ("=", "!=", "<", "<=", ">", ">=")
_STRING_OPS = ("=", "!=", "LIKE", "ILIKE")
_NULL_OPS = ("IS NULL", "IS NOT NULL")
_LIST_OPS = ("IN", "NOT IN")
_MAX_BIGINT = 2**63 - 1
_DATASET_CONTEXT = "mlflow.data.context"

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
    | (?P<word>[A-Za-z_]\w*(?:\.\w+)*)
    | (?P<string>'(?:[^']|'')*'|"(?:[^"]|"")*")
    | (?P<backtick>`[^`]+`)
    | (?P<op>[<>=!]+)
    | (?P<punct>[(),.])
    """,
    re.VERBOSE,
)

# The identifier types MLflow accepts before the dot, and its attribute aliases.
_PREFIXES = (
    dict.fromkeys(("metric", "metrics"), "metrics")
    | dict.fromkeys(("param", "params", "parameter", "parameters"), "params")
    | dict.fromkeys(("tag", "tags"), "tags")
    | dict.fromkeys(("attribute", "attributes", "attr", "run"), "attributes")
    | dict.fromkeys(("dataset", "datasets"), "datasets")
)
_ALIASES = dict.fromkeys(("created", "Created"), "start_time") | dict.fromkeys(
    ("run name", "Run name", "Run Name"), "run_name"
)


@dataclass(frozen=True)
class SqlQuery:
    """One parameterised statement: ``sql`` with ``$n`` placeholders for ``args``."""

    sql: str
    args: list[object]


_Value = str | int | float


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    value: _Value
    pos: int


@dataclass(frozen=True)
class _Comparison:
    prefix: str | None
    key: str
    op: str
    value: _Value | tuple[_Value, ...] | None
    text: str

    def values(self) -> tuple[_Value | None, ...]:
        return self.value if isinstance(self.value, tuple) else (self.value,)


@dataclass(frozen=True)
class _Ordering:
    prefix: str | None
    key: str
    ascending: bool
    text: str


@dataclass(frozen=True)
class _Field:
    """A searchable attribute: its column, whether numeric, whether IN applies."""

    column: str
    numeric: bool = False
    lists: bool = False


_RUN_FIELDS = {
    "run_id": _Field("r.run_uuid", lists=True),
    "run_name": _Field("r.name"),
    "status": _Field("r.status"),
    "user_id": _Field("r.user_id"),
    "artifact_uri": _Field("r.artifact_uri"),
    "start_time": _Field("r.start_time", numeric=True),
    "end_time": _Field("r.end_time", numeric=True),
}
_EXPERIMENT_FIELDS = {
    "name": _Field("e.name"),
    "experiment_id": _Field("e.experiment_id", numeric=True, lists=True),
    "creation_time": _Field("e.creation_time", numeric=True),
    "last_update_time": _Field("e.last_update_time", numeric=True),
}
_LIFECYCLE = {
    "ACTIVE_ONLY": "lifecycle_stage = 'active'",
    "DELETED_ONLY": "lifecycle_stage = 'deleted'",
    "ALL": None,
}


def _fail(what: str, text: str, problem: str) -> InvalidParameter:
    shown = text if len(text) <= 120 else text[:117] + "..."
    return InvalidParameter(f'{what} "{shown}": {problem}')


def _tokenize(what: str, text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            rest = text[pos : pos + 20]
            problem = "unterminated quote" if rest[0] in "'\"`" else "unexpected text"
            raise _fail(what, text, f"{problem} at '{rest}'")
        kind, raw = match.lastgroup or "", match.group()
        pos = match.end()
        if kind == "space":
            continue
        value: _Value = raw
        if kind == "number":
            value = float(raw) if any(c in raw for c in ".eE") else int(raw)
        elif kind == "string":
            value = raw[1:-1].replace(raw[0] * 2, raw[0])
        elif kind == "backtick":
            value = raw[1:-1]
        tokens.append(_Token(kind, raw, value, match.start()))
    return tokens


class _Parser:
    """Recursive descent over one filter or one order_by entry."""

    def __init__(self, what: str, text: str) -> None:
        self.what = what
        self.text = text
        self.tokens = _tokenize(what, text)
        self.index = 0
        self.clause_pos = 0

    def peek(self, offset: int = 0) -> _Token | None:
        at = self.index + offset
        return self.tokens[at] if at < len(self.tokens) else None

    def at(self, kind: str, text: str, offset: int = 0) -> bool:
        token = self.peek(offset)
        return token is not None and token.kind == kind and token.text.upper() == text

    def error(self, problem: str) -> InvalidParameter:
        # Quote only the clause at fault: from its start to the next AND.
        end = len(self.text)
        for later in self.tokens:
            if later.pos > self.clause_pos and later.text.upper() == "AND":
                end = later.pos
                break
        clause = self.text[self.clause_pos : end].strip()
        return _fail(self.what, clause, problem)

    def expected(self, what: str) -> InvalidParameter:
        token = self.peek()
        where = "end of input" if token is None else f"'{token.text}'"
        return self.error(f"expected {what} at {where}")

    def parse_filter(self) -> list[_Comparison]:
        clauses: list[_Comparison] = []
        while self.peek() is not None:
            if clauses:
                if not self.at("word", "AND"):
                    raise self.expected("AND")
                self.index += 1
            clauses.append(self.comparison())
        return clauses

    def parse_ordering(self) -> _Ordering:
        prefix, key = self.identifier()
        ascending = not self.at("word", "DESC")
        if self.at("word", "ASC") or self.at("word", "DESC"):
            self.index += 1
        if self.peek() is not None:
            raise self.expected("ASC or DESC")
        return _Ordering(prefix, key, ascending, self.text.strip())

    def identifier(self) -> tuple[str | None, str]:
        token = self.peek()
        kinds = ("word", "backtick")
        if token is None or token.kind not in kinds or self.at("word", "AND"):
            raise self.expected("an identifier")
        self.index += 1
        if self.at("punct", "."):
            self.index += 1
            key = self.peek()
            if key is None or key.kind not in ("word", "backtick", "string"):
                raise self.expected("a key")
            self.index += 1
            return str(token.value), str(key.value)
        if token.kind == "word" and "." in token.text:
            prefix, _, name = token.text.partition(".")
            return prefix, name
        return None, str(token.value)

    def comparison(self) -> _Comparison:
        start = self.index
        if start < len(self.tokens):
            self.clause_pos = self.tokens[start].pos
        prefix, key = self.identifier()
        op = self.operator()
        value: _Value | tuple[_Value, ...] | None = None
        if op in _LIST_OPS:
            value = self.value_list()
        elif op not in _NULL_OPS:
            value = self.value()
        last = self.tokens[self.index - 1]
        text = self.text[self.tokens[start].pos : last.pos + len(last.text)]
        return _Comparison(prefix, key, op, value, text)

    def operator(self) -> str:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text in _NUMERIC_OPS:
            self.index += 1
            return token.text
        for words in (("IS", "NOT", "NULL"), ("IS", "NULL"), ("NOT", "IN")):
            if all(self.at("word", word, n) for n, word in enumerate(words)):
                self.index += len(words)
                return " ".join(words)
        for word in ("LIKE", "ILIKE", "IN"):
            if self.at("word", word):
                self.index += 1
                return word
        raise self.expected("a comparator")

    def value(self) -> _Value:
        token = self.peek()
        if token is None or token.kind not in ("string", "number"):
            raise self.expected("a quoted string or a number")
        self.index += 1
        return token.value

    def value_list(self) -> tuple[_Value, ...]:
        if not self.at("punct", "("):
            raise self.expected("'('")
        self.index += 1
        values = [self.value()]
        while self.at("punct", ","):
            self.index += 1
            values.append(self.value())
        if not self.at("punct", ")"):
            raise self.expected("',' or ')'")
        self.index += 1
        return tuple(values)


class _Args:
    """The statement's arguments; ``add`` returns the placeholder of a value."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def add(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def number(self, value: float) -> str:
        # A bigint column compared with an integer keeps its index usable.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and abs(value) <= _MAX_BIGINT:
            return f"{self.add(value)}::bigint"
        return f"{self.add(float(value))}::float8"


def _kind(what: str, prefix: str | None, text: str, allowed: tuple[str, ...]) -> str:
    kind = "attributes" if prefix is None else _PREFIXES.get(prefix, "")
    if kind not in allowed:
        problem = f"unknown identifier type '{prefix}', expected one of"
        raise _fail(what, text, f"{problem} {', '.join(allowed)}")
    return kind


def _field(what: str, fields: dict[str, _Field], key: str, text: str) -> _Field:
    field = fields.get(_ALIASES.get(key, key))
    if field is None:
        problem = f"unknown attribute '{key}', expected one of {', '.join(fields)}"
        raise _fail(what, text, problem)
    return field


def _check(clause: _Comparison, allowed: tuple[str, ...], subject: str) -> None:
    if clause.op not in allowed:
        problem = f"comparator {clause.op} is not valid for {subject}, expected one of"
        raise _fail("filter", clause.text, f"{problem} {', '.join(allowed)}")


def _string(clause: _Comparison, value: _Value | None) -> str:
    if not isinstance(value, str):
        raise _fail("filter", clause.text, f"expected a quoted string, got {value!r}")
    return value


def _number(clause: _Comparison, value: _Value | None) -> int | float:
    if not isinstance(value, (int, float)):
        raise _fail("filter", clause.text, f"expected a number, got {value!r}")
    return value


def _string_test(column: str, clause: _Comparison, args: _Args) -> str:
    """``column <op> value`` for a text column, lists included."""
    if clause.op in _LIST_OPS:
        values = [_string(clause, value) for value in clause.values()]
        test = "= ANY" if clause.op == "IN" else "<> ALL"
        return f"{column} {test}({args.add(values)}::text[])"
    return f"{column} {clause.op} {args.add(_string(clause, clause.values()[0]))}"


def _number_test(column: str, clause: _Comparison, args: _Args) -> str:
    """``column <op> value`` for a bigint column; MLflow clients quote ids."""
    numbers = []
    for value in clause.values():
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
            value = int(value)
        numbers.append(_number(clause, value))
    if clause.op in _LIST_OPS:
        if not all(isinstance(n, int) and abs(n) <= _MAX_BIGINT for n in numbers):
            raise _fail("filter", clause.text, f"expected integers, got {numbers}")
        test = "= ANY" if clause.op == "IN" else "<> ALL"
        return f"{column} {test}({args.add(numbers)}::bigint[])"
    return f"{column} {clause.op} {args.number(numbers[0])}"


def _keyed_test(
    table: str, owner: tuple[str, str], clause: _Comparison, args: _Args
) -> str:
    """A test on an (owner, key, value) table such as params or experiment_tags."""
    column, outer = owner
    exists = f"SELECT 1 FROM {table} x WHERE x.{column} = {outer} AND x.key = "
    exists += args.add(clause.key)
    if clause.op == "IS NULL":
        return f"NOT EXISTS ({exists})"
    if clause.op == "IS NOT NULL":
        return f"EXISTS ({exists})"
    return f"EXISTS ({exists} AND {_string_test('x.value', clause, args)})"


def _metric_test(clause: _Comparison, args: _Args) -> str:
    _check(clause, _NUMERIC_OPS, "metrics")
    value = args.add(float(_number(clause, clause.values()[0])))
    # PostgreSQL orders NaN above every number; MLflow lets NaN match only !=.
    nan = "" if clause.op == "!=" else " AND m.value <> 'NaN'"
    return (
        "EXISTS (SELECT 1 FROM latest_metrics m"
        " JOIN metric_keys k ON k.key_id = m.key_id"
        f" WHERE m.run_num = r.run_num AND k.key = {args.add(clause.key)}"
        f" AND m.value {clause.op} {value}::float8{nan})"
    )


def _dataset_test(clause: _Comparison, args: _Args) -> str:
    _check(clause, _STRING_OPS + _LIST_OPS, "datasets")
    if clause.key == "context":
        # run_inputs.tags is a JSON list of {"key": ..., "value": ...}.
        test = _string_test("t.tag->>'value'", clause, args)
        return (
            "EXISTS (SELECT 1 FROM run_inputs i,"
            " jsonb_array_elements(i.tags) AS t(tag)"
            f" WHERE i.run_num = r.run_num AND t.tag->>'key' = '{_DATASET_CONTEXT}'"
            f" AND {test})"
        )
    if clause.key not in ("name", "digest"):
        problem = f"unknown dataset field '{clause.key}', expected one of"
        raise _fail("filter", clause.text, f"{problem} name, digest, context")
    test = _string_test(f"d.{clause.key}", clause, args)
    return (
        "EXISTS (SELECT 1 FROM run_inputs i"
        " JOIN datasets d ON d.dataset_uuid = i.dataset_uuid"
        f" WHERE i.run_num = r.run_num AND {test})"
    )


def _attribute_test(clause: _Comparison, fields: dict[str, _Field], args: _Args) -> str:
    field = _field("filter", fields, clause.key, clause.text)
    if field.numeric:
        _check(clause, _NUMERIC_OPS + (_LIST_OPS if field.lists else ()), clause.key)
        return _number_test(field.column, clause, args)
    _check(clause, _STRING_OPS + (_LIST_OPS if field.lists else ()), clause.key)
    return _string_test(field.column, clause, args)


def _run_test(clause: _Comparison, args: _Args) -> str:
    allowed = ("metrics", "params", "tags", "attributes", "datasets")
    kind = _kind("filter", clause.prefix, clause.text, allowed)
    if kind == "metrics":
        return _metric_test(clause, args)
    if kind in ("params", "tags"):
        _check(clause, _STRING_OPS + _NULL_OPS, kind)
        return _keyed_test(kind, ("run_num", "r.run_num"), clause, args)
    if kind == "datasets":
        return _dataset_test(clause, args)
    return _attribute_test(clause, _RUN_FIELDS, args)


def _experiment_test(clause: _Comparison, args: _Args) -> str:
    kind = _kind("filter", clause.prefix, clause.text, ("attributes", "tags"))
    if kind == "tags":
        _check(clause, _STRING_OPS + _NULL_OPS, kind)
        owner = ("experiment_id", "e.experiment_id")
        return _keyed_test("experiment_tags", owner, clause, args)
    return _attribute_test(clause, _EXPERIMENT_FIELDS, args)


def _orderings(order_by: list[str]) -> list[_Ordering]:
    orderings = [_Parser("order_by", entry).parse_ordering() for entry in order_by]
    seen: set[tuple[str | None, str]] = set()
    for ordering in orderings:
        kind = _PREFIXES.get(ordering.prefix or "attributes")
        name = (kind, _ALIASES.get(ordering.key, ordering.key))
        if name in seen:
            raise _fail("order_by", ordering.text, "orders by the same field twice")
        seen.add(name)
    return orderings


def _sort(expression: str, ordering: _Ordering, *, text: bool) -> str:
    # Byte order, as MLflow's other stores sort; missing values always last.
    collate = ' COLLATE "C"' if text else ""
    direction = "ASC" if ordering.ascending else "DESC"
    return f"{expression}{collate} {direction} NULLS LAST"


def _run_ordering(
    ordering: _Ordering, n: int, args: _Args
) -> tuple[str | None, str, str | None]:
    """The join, the ORDER BY terms and the attribute an order_by entry uses."""
    allowed = ("metrics", "params", "tags", "attributes")
    kind = _kind("order_by", ordering.prefix, ordering.text, allowed)
    alias = f"o{n}"
    if kind == "attributes":
        key = _ALIASES.get(ordering.key, ordering.key)
        field = _field("order_by", _RUN_FIELDS, ordering.key, ordering.text)
        return None, _sort(field.column, ordering, text=not field.numeric), key
    key = args.add(ordering.key)
    if kind != "metrics":
        join = f"LEFT JOIN {kind} {alias} ON {alias}.run_num = r.run_num"
        join += f" AND {alias}.key = {key}"
        return join, _sort(f"{alias}.value", ordering, text=True), None
    join = (
        f"LEFT JOIN latest_metrics {alias} ON {alias}.run_num = r.run_num"
        f" AND {alias}.key_id = (SELECT key_id FROM metric_keys WHERE key = {key})"
    )
    # MLflow puts NaN after every number and before missing values.
    rank = f"CASE WHEN {alias}.value IS NULL THEN 2"
    rank += f" WHEN {alias}.value = 'NaN' THEN 1 ELSE 0 END"
    return join, f"{rank}, {_sort(f'{alias}.value', ordering, text=False)}", None


def _check_page(view_type: str, limit: int, offset: int) -> str | None:
    if view_type not in _LIFECYCLE:
        raise InvalidParameter(
            f"view_type {view_type!r} is not one of {', '.join(_LIFECYCLE)}"
        )
    if limit < 0:
        raise InvalidParameter(f"limit is {limit}, expected zero or more")
    if offset < 0:
        raise InvalidParameter(f"offset is {offset}, expected zero or more")
    return _LIFECYCLE[view_type]


def runs_query(
    *,
    filter_string: str,
    order_by: list[str],
    experiment_ids: list[int],
    view_type: str,
    limit: int,
    offset: int,
) -> SqlQuery:
    """The run_num of each run matching a SearchRuns request, in MLflow's order.

    ``view_type`` is ACTIVE_ONLY, DELETED_ONLY or ALL. Runs lacking an ordered
    metric, param or tag sort last in either direction; ``start_time DESC``
    and the run id break ties, so that pages by offset are stable. Raises
    InvalidParameter for a filter or order_by outside MLflow's grammar.
    """
    lifecycle = _check_page(view_type, limit, offset)
    args = _Args()
    where = [f"r.experiment_id = ANY({args.add(list(experiment_ids))}::bigint[])"]
    if lifecycle is not None:
        where.append(f"r.{lifecycle}")
    clauses = _Parser("filter", filter_string).parse_filter()
    where += [_run_test(clause, args) for clause in clauses]

    joins, terms, attributes = [], [], set()
    for n, ordering in enumerate(_orderings(order_by), start=1):
        join, term, attribute = _run_ordering(ordering, n, args)
        joins += [join] if join else []
        terms.append(term)
        attributes.add(attribute)
    if "start_time" not in attributes:
        terms.append("r.start_time DESC NULLS LAST")
    terms.append("r.run_uuid")

    sql = " ".join(
        ["SELECT r.run_num FROM runs r", *joins, "WHERE", " AND ".join(where)]
    )
    sql += f" ORDER BY {', '.join(terms)}"
    sql += f" LIMIT {args.add(limit)} OFFSET {args.add(offset)}"
    return SqlQuery(sql, args.values)


def experiments_query(
    *,
    filter_string: str,
    order_by: list[str],
    view_type: str,
    limit: int,
    offset: int,
) -> SqlQuery:
    """The experiment_id of each experiment matching a SearchExperiments request.

    Without ``order_by`` the order is MLflow's ``creation_time DESC,
    experiment_id ASC``; otherwise ``experiment_id DESC`` breaks ties, as
    MLflow does. Raises InvalidParameter for input outside MLflow's grammar.
    """
    lifecycle = _check_page(view_type, limit, offset)
    args = _Args()
    where = [f"e.{lifecycle}"] if lifecycle is not None else []
    clauses = _Parser("filter", filter_string).parse_filter()
    where += [_experiment_test(clause, args) for clause in clauses]

    terms = ["e.creation_time DESC", "e.experiment_id ASC"]
    if order_by:
        terms = []
        for ordering in _orderings(order_by):
            _kind("order_by", ordering.prefix, ordering.text, ("attributes",))
            field = _field("order_by", _EXPERIMENT_FIELDS, ordering.key, ordering.text)
            terms.append(_sort(field.column, ordering, text=not field.numeric))
        if not any(term.startswith("e.experiment_id ") for term in terms):
            terms.append("e.experiment_id DESC")

    sql = "SELECT e.experiment_id FROM experiments e"
    sql += f" WHERE {' AND '.join(where)}" if where else ""
    sql += f" ORDER BY {', '.join(terms)}"
    sql += f" LIMIT {args.add(limit)} OFFSET {args.add(offset)}"
    return SqlQuery(sql, args.values)
