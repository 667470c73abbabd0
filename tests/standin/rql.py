"""A parser for the RQL subset the stand-in serves, and predicate/sort evaluation over documents."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple

from tests.standin.clock import format_ticks, parse_date_ticks
from tests.standin.errors import RavenError, invalid_query
from tests.standin.storage import ALL_DOCS, ID_FIELD, LAST_MODIFIED_FIELD

KEYWORDS = {
    "from", "where", "order", "by", "asc", "desc", "ascending", "descending", "and", "or", "not", "limit",
    "offset", "as", "select", "include", "load", "update", "group", "in", "between", "index", "declare", "filter",
}  # fmt: skip
UNSUPPORTED_CLAUSES = {"select", "include", "load", "update", "group", "filter"}

_TOKEN = re.compile(
    r"""\s+|//[^\n]*|/\*.*?\*/
    |(?P<string>'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.|"")*")
    |(?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    |(?P<param>\$[A-Za-z0-9_]+)
    |(?P<ident>[A-Za-z_@][A-Za-z0-9_@-]*)
    |(?P<op>==|!=|<>|<=|>=|<|>|=|\(|\)|,|\.)""",
    re.VERBOSE | re.DOTALL,
)


class Token(NamedTuple):
    """A lexical token: kind (string/number/param/ident/op/end), text and position."""

    kind: str
    text: str
    pos: int


class Literal(NamedTuple):
    """A constant in the query."""

    value: Any


class Param(NamedTuple):
    """A $name reference to QueryParameters."""

    name: str


Value = Literal | Param


class Compare(NamedTuple):
    """field <op> value."""

    field: str
    op: str
    value: Value


class In(NamedTuple):
    """field in (values...)."""

    field: str
    values: tuple[Value, ...]


class Between(NamedTuple):
    """field between low and high."""

    field: str
    low: Value
    high: Value


class BoolOp(NamedTuple):
    """and / or of two expressions."""

    op: str
    left: Expr
    right: Expr


class Not(NamedTuple):
    """not expression."""

    expr: Expr


class TrueExpr(NamedTuple):
    """The literal `true` as a where clause."""


Expr = Compare | In | Between | BoolOp | Not | TrueExpr


class OrderKey(NamedTuple):
    """One ORDER BY key."""

    field: str
    descending: bool
    sort_as: str | None


@dataclass
class Query:
    """A parsed query."""

    text: str
    collection: str
    where: Expr | None
    order_by: list[OrderKey]
    limit: Value | None
    offset: Value | None

    @property
    def is_collection_query(self) -> bool:
        """Served from storage (no index): no ORDER BY, and no WHERE except id() equality/IN."""
        if self.order_by:
            return False
        if self.where is None:
            return True
        return _only_id_equality(self.where)

    @property
    def index_fields(self) -> tuple[str, ...]:
        """Fields an auto index must map (id() is never a map field)."""
        found: list[str] = []
        _collect_fields(self.where, found)
        found.extend(k.field for k in self.order_by)
        return tuple(sorted({f for f in found if f != ID_FIELD}))


def _only_id_equality(expr: Expr) -> bool:
    if isinstance(expr, Compare):
        return expr.field == ID_FIELD and expr.op == "="
    if isinstance(expr, In):
        return expr.field == ID_FIELD
    if isinstance(expr, BoolOp) and expr.op == "or":
        return _only_id_equality(expr.left) and _only_id_equality(expr.right)
    return False


def _collect_fields(expr: Expr | None, out: list[str]) -> None:
    if isinstance(expr, (Compare, In, Between)):
        out.append(expr.field)
    elif isinstance(expr, BoolOp):
        _collect_fields(expr.left, out)
        _collect_fields(expr.right, out)
    elif isinstance(expr, Not):
        _collect_fields(expr.expr, out)


def tokenize(text: str) -> list[Token]:
    """Split RQL into tokens; unknown characters are a query error."""
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise invalid_query(f"Unexpected character '{text[pos]}' at position {pos}", text)
        kind = match.lastgroup
        if kind is not None:
            tokens.append(Token(kind, match.group(kind), pos))
        pos = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _unquote(text: str) -> str:
    quote = text[0]
    body = text[1:-1].replace(quote * 2, quote)
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "r": "\r"}.get(m.group(1), m.group(1)), body)


class Parser:
    """Recursive-descent parser for: from … [as a] [where …] [order by …] [limit …] [offset …]."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.alias: str | None = None

    def error(self, message: str) -> RavenError:
        """A query error at the current token."""
        tok = self.peek()
        return invalid_query(f"{message} at position {tok.pos} (near '{tok.text or 'end of query'}')", self.text)

    def peek(self, ahead: int = 0) -> Token:
        """The token `ahead` positions away."""
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        """Consume one token."""
        tok = self.peek()
        self.i += 1
        return tok

    def at_keyword(self, *words: str) -> bool:
        """Whether the current token is one of these keywords."""
        tok = self.peek()
        return tok.kind == "ident" and tok.text.lower() in words

    def accept_keyword(self, *words: str) -> bool:
        """Consume a keyword if present."""
        if self.at_keyword(*words):
            self.i += 1
            return True
        return False

    def expect_keyword(self, word: str) -> None:
        """Consume a required keyword."""
        if not self.accept_keyword(word):
            raise self.error(f"Expected '{word.upper()}'")

    def accept_op(self, op: str) -> bool:
        """Consume an operator token if present."""
        tok = self.peek()
        if tok.kind == "op" and tok.text == op:
            self.i += 1
            return True
        return False

    def parse(self) -> Query:
        """Parse the whole query."""
        if self.at_keyword("declare"):
            raise self.error("DECLARE FUNCTION is not supported by the stand-in")
        self.expect_keyword("from")
        collection = self.parse_source()
        self.parse_alias()
        where = self.parse_expr() if self.accept_keyword("where") else None
        order_by = self.parse_order_by() if self.accept_keyword("order") else []
        if self.at_keyword(*UNSUPPORTED_CLAUSES):
            raise self.error(f"{self.peek().text.upper()} is not supported by the stand-in (whole documents only)")
        limit, offset = self.parse_paging()
        if self.peek().kind != "end":
            raise self.error("Expected end of query")
        return Query(self.text, collection, where, order_by, limit, offset)

    def parse_source(self) -> str:
        """Collection name: identifier, quoted string or @all_docs."""
        if self.at_keyword("index"):
            raise self.error("Static index queries ('from index') are not supported by the stand-in")
        tok = self.next()
        if tok.kind == "string":
            return _unquote(tok.text)
        if tok.kind == "ident" and tok.text.lower() not in KEYWORDS:
            return ALL_DOCS if tok.text.lower() == ALL_DOCS else tok.text
        raise invalid_query(f"Expected collection name at position {tok.pos}", self.text)

    def parse_alias(self) -> None:
        """Optional `as alias` or bare alias."""
        if self.accept_keyword("as"):
            tok = self.next()
            if tok.kind != "ident":
                raise invalid_query(f"Expected alias at position {tok.pos}", self.text)
            self.alias = tok.text
        elif self.peek().kind == "ident" and self.peek().text.lower() not in KEYWORDS:
            self.alias = self.next().text

    def parse_expr(self) -> Expr:
        """or-expression."""
        left = self.parse_and()
        while self.accept_keyword("or"):
            left = BoolOp("or", left, self.parse_and())
        return left

    def parse_and(self) -> Expr:
        """and-expression."""
        left = self.parse_unary()
        while self.accept_keyword("and"):
            left = BoolOp("and", left, self.parse_unary())
        return left

    def parse_unary(self) -> Expr:
        """not / parenthesised / true / comparison."""
        if self.accept_keyword("not"):
            return Not(self.parse_unary())
        if self.accept_op("("):
            inner = self.parse_expr()
            if not self.accept_op(")"):
                raise self.error("Expected ')'")
            return inner
        if self.at_keyword("true") and self.peek(1).kind != "op":
            self.next()
            return TrueExpr()
        return self.parse_comparison()

    def parse_comparison(self) -> Expr:
        """field op value | field in (…) | field between a and b."""
        field = self.parse_field()
        tok = self.peek()
        if tok.kind == "op" and tok.text in ("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            self.next()
            op = {"==": "=", "<>": "!="}.get(tok.text, tok.text)
            return Compare(field, op, self.parse_value())
        if self.accept_keyword("in"):
            return In(field, self.parse_value_list())
        if self.accept_keyword("between"):
            low = self.parse_value()
            self.expect_keyword("and")
            return Between(field, low, self.parse_value())
        if self.at_keyword("all"):
            raise self.error("ALL IN is not supported by the stand-in")
        raise self.error("Expected an operator (=, !=, <, <=, >, >=, in, between)")

    def parse_value_list(self) -> tuple[Value, ...]:
        """( value, value, … )."""
        if not self.accept_op("("):
            raise self.error("Expected '('")
        values = [self.parse_value()]
        while self.accept_op(","):
            values.append(self.parse_value())
        if not self.accept_op(")"):
            raise self.error("Expected ')'")
        return tuple(values)

    def parse_field(self) -> str:
        """id() / id(alias) or a dotted path of identifiers and quoted segments, alias stripped."""
        tok = self.next()
        if tok.kind not in ("ident", "string"):
            raise invalid_query(f"Expected field name at position {tok.pos}", self.text)
        if tok.kind == "ident" and self.peek().kind == "op" and self.peek().text == "(":
            return self.parse_method(tok)
        segments = [_unquote(tok.text) if tok.kind == "string" else tok.text]
        while self.accept_op("."):
            seg = self.next()
            if seg.kind not in ("ident", "string"):
                raise invalid_query(f"Expected field name after '.' at position {seg.pos}", self.text)
            segments.append(_unquote(seg.text) if seg.kind == "string" else seg.text)
        if self.alias and len(segments) > 1 and segments[0] == self.alias:
            segments = segments[1:]
        return ".".join(segments)

    def parse_method(self, name: Token) -> str:
        """Only id() (optionally id(alias)) is supported."""
        if name.text.lower() != "id":
            raise invalid_query(
                f"Method '{name.text}()' at position {name.pos} is not supported by the stand-in", self.text
            )
        self.next()
        if self.peek().kind == "ident" and self.peek().text == self.alias:
            self.next()
        if not self.accept_op(")"):
            raise self.error("Expected ')'")
        return ID_FIELD

    def parse_value(self) -> Value:
        """A literal or a $parameter."""
        tok = self.next()
        if tok.kind == "param":
            return Param(tok.text[1:])
        if tok.kind == "string":
            return Literal(_unquote(tok.text))
        if tok.kind == "number":
            is_int = re.fullmatch(r"-?\d+", tok.text) is not None
            return Literal(int(tok.text) if is_int else float(tok.text))
        if tok.kind == "ident" and tok.text.lower() in ("true", "false", "null"):
            return Literal({"true": True, "false": False, "null": None}[tok.text.lower()])
        raise invalid_query(f"Expected a value at position {tok.pos} (near '{tok.text}')", self.text)

    def parse_order_by(self) -> list[OrderKey]:
        """by key [as type] [asc|desc], …"""
        self.expect_keyword("by")
        keys = [self.parse_order_key()]
        while self.accept_op(","):
            keys.append(self.parse_order_key())
        return keys

    def parse_order_key(self) -> OrderKey:
        """One ORDER BY key."""
        field = self.parse_field()
        sort_as = None
        if self.accept_keyword("as"):
            kind = self.next().text.lower()
            if kind not in ("string", "long", "double", "alphanumeric"):
                raise self.error(f"Unknown sort type '{kind}'")
            sort_as = kind
        descending = False
        if self.accept_keyword("desc", "descending"):
            descending = True
        else:
            self.accept_keyword("asc", "ascending")
        return OrderKey(field, descending, sort_as)

    def parse_paging(self) -> tuple[Value | None, Value | None]:
        """limit N [offset M] | limit M, N | offset M."""
        limit = offset = None
        if self.accept_keyword("limit"):
            limit = self.parse_value()
            if self.accept_op(","):
                offset, limit = limit, self.parse_value()
            elif self.accept_keyword("offset"):
                offset = self.parse_value()
        elif self.accept_keyword("offset"):
            offset = self.parse_value()
            if self.accept_keyword("limit"):
                limit = self.parse_value()
        return limit, offset


def parse(text: str) -> Query:
    """Parse RQL text into a Query (InvalidQueryException on anything outside the subset)."""
    if not isinstance(text, str) or not text.strip():
        raise invalid_query("Query text is empty", str(text))
    return Parser(text).parse()


def resolve(value: Value, params: dict[str, Any], query: str) -> Any:
    """The value of a literal or parameter (missing parameter = query error)."""
    if isinstance(value, Literal):
        return value.value
    if value.name not in params:
        raise invalid_query(f"Query parameter '{value.name}' was not provided", query)
    return params[value.name]


def _norm(value: Any) -> tuple[int, Any]:
    """Comparable form: (type rank, value); strings compare lower-cased, as the auto-index analyzer stores them."""
    if value is None:
        return (0, None)
    if isinstance(value, bool):
        return (1, value)
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, str):
        return (3, value.lower())
    return (4, repr(value))


def _compare_one(left: Any, op: str, right: Any) -> bool:
    a, b = _norm(left), _norm(right)
    if op == "=":
        return a == b
    if a[0] != b[0] or a[0] in (0, 1, 4):
        return False
    if op == "<":
        return a[1] < b[1]
    if op == "<=":
        return a[1] <= b[1]
    if op == ">":
        return a[1] > b[1]
    return a[1] >= b[1]


def _coerce(field: str, right: Any) -> Any:
    """For @last-modified a date string becomes ticks (chronological comparison); else unchanged."""
    if field == LAST_MODIFIED_FIELD and isinstance(right, str):
        ticks = parse_date_ticks(right)
        return ticks if ticks is not None else right
    return right


def _lm_values(values: list[Any], right: Any) -> list[Any]:
    """@last-modified compares as ticks against dates, as its string against anything else."""
    if isinstance(right, int) and not isinstance(right, bool):
        return values
    return [format_ticks(v) if isinstance(v, int) else v for v in values]


class Evaluator:
    """Evaluates a WHERE expression against a value getter (field -> list of values)."""

    def __init__(self, query: Query, params: dict[str, Any]) -> None:
        self.query = query
        self.params = params or {}

    def value(self, v: Value, field: str) -> Any:
        """Resolved, field-coerced right-hand value."""
        return _coerce(field, resolve(v, self.params, self.query.text))

    def matches(self, expr: Expr | None, get: Any) -> bool:
        """Whether a document (through `get(field)`) satisfies expr."""
        if expr is None or isinstance(expr, TrueExpr):
            return True
        if isinstance(expr, BoolOp):
            if expr.op == "and":
                return self.matches(expr.left, get) and self.matches(expr.right, get)
            return self.matches(expr.left, get) or self.matches(expr.right, get)
        if isinstance(expr, Not):
            return not self.matches(expr.expr, get)
        if isinstance(expr, Compare):
            return self._compare(expr, get)
        if isinstance(expr, In):
            return any(self._compare(Compare(expr.field, "=", v), get) for v in expr.values)
        low = Compare(expr.field, ">=", expr.low)
        high = Compare(expr.field, "<=", expr.high)
        return self._compare(low, get) and self._compare(high, get)

    def _compare(self, expr: Compare, get: Any) -> bool:
        right = self.value(expr.value, expr.field)
        values = get(expr.field)
        if expr.field == LAST_MODIFIED_FIELD:
            values = _lm_values(values, right)
        if expr.op == "!=":
            return not any(_compare_one(v, "=", right) for v in values)
        return any(_compare_one(v, expr.op, right) for v in values)


def sort_key(values: list[Any], sort_as: str | None) -> tuple[int, Any]:
    """Sort key of a (possibly multi-valued) field: nulls first, then numbers, then strings (lower-cased)."""
    value = values[0] if values else None
    if sort_as in ("long", "double"):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                value = None
        return (0, 0) if not isinstance(value, (int, float)) or isinstance(value, bool) else (1, value)
    if sort_as in ("string", "alphanumeric") and value is not None and not isinstance(value, str):
        value = str(value)
    rank, norm = _norm(value)
    if rank == 1:
        return (3, str(norm).lower())
    return (rank if rank != 4 else 5, norm if norm is not None else 0)
