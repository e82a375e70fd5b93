"""Recursive-descent parser from expression text to the positioned tree in `rulecrm.expr.ast`."""
from __future__ import annotations

from datetime import timedelta

from rulecrm.errors import ExpressionError
from rulecrm.expr.ast import (
    Arith,
    BoolOp,
    Call,
    Compare,
    Contains,
    Literal,
    Matches,
    Membership,
    Name,
    Neg,
    Not,
    Pos,
)
from rulecrm.expr.lexer import Lexer, Token, char_hint
from rulecrm.expr.regex import PatternError, check_pattern
from rulecrm.suggest import closest

ROOTS = ("event", "customer", "product", "cycle")
MAX_NESTING = 40
MAX_DEPTH = 100
_COMPARE_OPS = ("==", "!=", "<", "<=", ">", ">=")
_OPERATOR_WORDS = ("and", "or", "in", "not", "contains", "matches")
_LITERAL_WORDS = {"true": True, "false": False, "null": None}
_NAMES_EXPECTED = "event.<field>, customer.<field>, product.<field>, cycle, a literal or a function call"


def parse_expression(text: str, *, line: int = 1, column: int = 1):
    """Parse one expression; `line`/`column` locate its first character in the rule file.

    A YAML scalar that arrives as a bool or number (`when: true`, `when: 3`) is read as its spelling.
    """
    if isinstance(text, bool):
        text = "true" if text else "false"
    elif isinstance(text, (int, float)):
        text = repr(text)
    elif not isinstance(text, str):
        raise ExpressionError(
            "expected an expression", line=line, column=column, expected="an expression", found=type(text).__name__
        )
    parser = Parser(Lexer(text, line=line, column=column))
    try:
        node = parser.expression()
        parser.expect_end()
    except RecursionError:
        raise ExpressionError(
            "expression is nested too deeply", line=line, column=column, hint="split it into simpler parts"
        ) from None
    # Each node of the tree has a token of its own, and each token at least one character: a text of
    # MAX_DEPTH characters or fewer cannot be deeper than MAX_DEPTH (most rules' expressions are).
    if len(text) > MAX_DEPTH:
        check_depth(node)
    return node


def children(node) -> tuple:
    """The sub-expressions of a node, in source order."""
    if isinstance(node, (Compare, Arith)):
        return (node.left, node.right)
    if isinstance(node, Membership):
        return (node.item, node.container)
    if isinstance(node, Contains):
        return (node.container, node.item)
    if isinstance(node, Matches):
        return (node.subject,)
    if isinstance(node, (Not, Neg)):
        return (node.operand,)
    if isinstance(node, BoolOp):
        return tuple(node.operands)
    if isinstance(node, Call):
        return tuple(node.args)
    return ()


def walk(tree):
    """Every node of the tree, the tree itself first (depth first; iterative, as trees may be deep)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(children(node))


def start_pos(node) -> Pos:
    """Where the source text of a node begins (its leftmost operand)."""
    while isinstance(node, (Compare, Arith, Membership, Contains, Matches, BoolOp)):
        first = children(node)
        if not first:
            break
        node = first[0]
    return node.pos


def check_depth(node) -> None:
    """Refuse trees too deep to compile and evaluate without exhausting the Python stack."""
    stack = [(node, 1)]
    while stack:
        current, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExpressionError(
                f"expression is nested too deeply (more than {MAX_DEPTH} levels)",
                line=current.pos.line,
                column=current.pos.column,
                hint="split it into simpler parts",
            )
        stack.extend((child, depth + 1) for child in children(current))


class Parser:
    """Pulls tokens from a Lexer; also used by templates to read one name inside braces."""

    def __init__(self, lexer: Lexer):
        self.lexer = lexer
        self.tok = lexer.next()
        self.nesting = 0

    # -- helpers -------------------------------------------------------------------------------

    def advance(self) -> Token:
        token = self.tok
        self.tok = self.lexer.next()
        return token

    def at(self, kind: str, value=None) -> bool:
        return self.tok.kind == kind and (value is None or self.tok.value == value)

    def at_op(self, *ops: str) -> bool:
        return self.tok.kind == "op" and self.tok.value in ops

    def error(self, message: str, token: Token | None = None, *, expected=None, hint=None) -> ExpressionError:
        token = token or self.tok
        if hint is None and token.kind == "char":
            hint = char_hint(token.value)
        return ExpressionError(
            message, line=token.line, column=token.column, expected=expected, found=token.describe(), hint=hint
        )

    def expect_op(self, op: str, expected: str | None = None) -> Token:
        if not self.at_op(op):
            raise self.error(f"expected {op!r}, found {self.tok.describe()}", expected=expected or repr(op))
        return self.advance()

    def expect_end(self) -> None:
        if self.at("end"):
            return
        hint = None
        if self.tok.kind == "name":
            hint = _did_you_mean(self.tok.value, _OPERATOR_WORDS)
        raise self.error(
            f"expected an operator or the end of the expression, found {self.tok.describe()}",
            expected="an operator (and, or, ==, <, +, ...) or the end of the expression",
            hint=hint,
        )

    def nest(self, token: Token) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.error(
                f"expression is nested too deeply (more than {MAX_NESTING} levels)",
                token,
                hint="split it into simpler parts",
            )

    @staticmethod
    def pos(token: Token) -> Pos:
        return Pos(token.line, token.column)

    # -- grammar -------------------------------------------------------------------------------

    def expression(self):
        return self.or_expr()

    def or_expr(self):
        first = self.and_expr()
        if not self.at("keyword", "or"):
            return first
        op = self.tok
        operands = [first]
        while self.at("keyword", "or"):
            self.advance()
            operands.append(self.and_expr())
        return BoolOp("or", tuple(operands), self.pos(op))

    def and_expr(self):
        first = self.not_expr()
        if not self.at("keyword", "and"):
            return first
        op = self.tok
        operands = [first]
        while self.at("keyword", "and"):
            self.advance()
            operands.append(self.not_expr())
        return BoolOp("and", tuple(operands), self.pos(op))

    def not_expr(self):
        if self.at("keyword", "not"):
            token = self.advance()
            self.nest(token)
            operand = self.not_expr()
            self.nesting -= 1
            return Not(operand, self.pos(token))
        return self.comparison()

    def comparison(self):
        left = self.additive()
        node = self._comparison_tail(left)
        if node is not left and self._at_comparison():
            raise self.error(
                f"comparisons cannot be chained, found {self.tok.describe()}",
                expected="and, or or the end of the expression",
                hint="join them with 'and': a < b and b < c",
            )
        return node

    def _at_comparison(self) -> bool:
        return self.at_op(*_COMPARE_OPS) or (
            self.tok.kind == "keyword" and self.tok.value in ("in", "not", "contains", "matches")
        )

    def _comparison_tail(self, left):
        token = self.tok
        if self.at_op(*_COMPARE_OPS):
            self.advance()
            return Compare(token.value, left, self.additive(), self.pos(token))
        if token.kind != "keyword":
            return left
        if token.value == "in":
            self.advance()
            return Membership("in", left, self.additive(), self.pos(token))
        if token.value == "not":
            self.advance()
            if not self.at("keyword", "in"):
                raise self.error(
                    f"expected 'in' after 'not', found {self.tok.describe()}",
                    expected="'in'",
                    hint="write 'not' before a condition: not (a == b)",
                )
            self.advance()
            return Membership("not in", left, self.additive(), self.pos(token))
        if token.value == "contains":
            self.advance()
            return Contains(left, self.additive(), self.pos(token))
        if token.value == "matches":
            self.advance()
            pattern_token = self.tok
            return Matches(left, self._pattern(), self.pos(token), self.pos(pattern_token))
        return left

    def _pattern(self) -> str:
        token = self.tok
        if token.kind != "string":
            raise self.error(
                f"'matches' needs a quoted regular expression, found {token.describe()}",
                expected='a string literal such as "^vip"',
            )
        self.advance()
        try:
            check_pattern(token.value)
        except PatternError as exc:
            column = token.column
            raw = token.text[1:-1]
            # Point into the pattern when its text is exactly as written (no escapes, one line).
            if raw == token.value and "\n" not in raw and exc.offset is not None:
                column += 1 + exc.offset
            raise ExpressionError(
                f"invalid regular expression: {exc.message}",
                line=token.line,
                column=column,
                expected="a regular expression in RE2 syntax (see docs/rules.md)",
                found=token.describe(),
                hint=exc.hint,
            ) from None
        return token.value

    def additive(self):
        node = self.multiplicative()
        while self.at_op("+", "-"):
            token = self.advance()
            node = Arith(token.value, node, self.multiplicative(), self.pos(token))
        return node

    def multiplicative(self):
        node = self.unary()
        while self.at_op("*", "/"):
            token = self.advance()
            node = Arith(token.value, node, self.unary(), self.pos(token))
        return node

    def unary(self):
        if not self.at_op("-"):
            return self.primary()
        token = self.advance()
        self.nest(token)
        operand = self.unary()
        self.nesting -= 1
        if isinstance(operand, Literal) and _is_signed(operand.value):
            return Literal(self._negate(operand.value, token), self.pos(token))
        return Neg(operand, self.pos(token))

    def _negate(self, value, token: Token):
        try:
            return -value
        except OverflowError:
            raise self.error("duration is too large", token, expected="a smaller duration") from None

    def primary(self):
        token = self.tok
        kind = token.kind
        if kind in ("number", "string", "duration"):
            self.advance()
            return Literal(token.value, self.pos(token))
        if kind == "keyword" and token.value in _LITERAL_WORDS:
            self.advance()
            return Literal(_LITERAL_WORDS[token.value], self.pos(token))
        if kind == "name":
            return self.name_or_call()
        if self.at_op("("):
            self.advance()
            self.nest(token)
            node = self.expression()
            self.nesting -= 1
            self.expect_op(")", "')' or an operator")
            return node
        if self.at_op("["):
            return self.list_literal()
        if kind == "end":
            message = "expected an expression, found end of expression"
        else:
            message = f"expected a value, found {token.describe()}"
        raise self.error(message, expected=_NAMES_EXPECTED)

    def name_or_call(self):
        token = self.tok
        word = token.value
        if word in ROOTS:
            return self.name()
        self.advance()
        if self.at_op("("):
            return self.call(token)
        raise self.error(
            f"unknown name {word!r}",
            token,
            expected=_NAMES_EXPECTED,
            hint=_did_you_mean(word, (*ROOTS, *_LITERAL_WORDS, "not"))
            or "a name is event.<field>, customer.<field>, product.<field> or cycle",
        )

    def name(self) -> Name:
        """root ( .field | ["key"] )* — the name syntax shared with templates."""
        token = self.tok
        if token.kind != "name" or token.value not in ROOTS:
            hint = None
            if token.kind == "name":
                hint = _did_you_mean(token.value, ROOTS)
            message = (f"unknown name {token.value!r}" if token.kind == "name"
                       else f"expected a name, found {token.describe()}")
            raise self.error(
                message,
                expected="event.<field>, customer.<field>, product.<field> or cycle",
                hint=hint or "a name is event.<field>, customer.<field>, product.<field> or cycle",
            )
        self.advance()
        root = token.value
        path = []
        while self.at_op(".", "["):
            if root == "cycle":
                raise self.error(
                    "'cycle' is a duration and has no fields", expected="an operator or the end of the expression"
                )
            if self.advance().value == ".":
                if self.tok.kind not in ("name", "keyword"):
                    raise self.error(f"expected a field name after '.', found {self.tok.describe()}",
                                     expected="a field name")
                path.append(self.advance().value)
            else:
                if self.tok.kind != "string":
                    raise self.error(
                        f"expected a quoted key inside [ ], found {self.tok.describe()}",
                        expected='a string such as ["tea-xqg"]',
                        hint="names reach into mappings by key only",
                    )
                path.append(self.advance().value)
                self.expect_op("]")
        if root != "cycle" and not path:
            raise self.error(
                f"expected '.' and a field after {root!r}, found {self.tok.describe()}",
                expected=f"{root}.<field>",
            )
        return Name(root, tuple(path), self.pos(token))

    def call(self, name_token: Token) -> Call:
        self.nest(self.advance())
        args = []
        if not self.at_op(")"):
            args.append(self.expression())
            while self.at_op(","):
                self.advance()
                args.append(self.expression())
        self.expect_op(")", "',' or ')'")
        self.nesting -= 1
        return Call(name_token.value, tuple(args), self.pos(name_token))

    def list_literal(self) -> Literal:
        start = self.advance()
        values = []
        while not self.at_op("]"):
            if values:
                self.expect_op(",", "',' or ']'")
            values.append(self._list_item())
        self.advance()
        return Literal(tuple(values), self.pos(start))

    def _list_item(self):
        token = self.tok
        negative = False
        if self.at_op("-"):
            negative = True
            self.advance()
            token = self.tok
            if token.kind not in ("number", "duration"):
                raise self.error(f"expected a number after '-', found {token.describe()}", expected="a number")
        if token.kind in ("number", "string", "duration"):
            self.advance()
            return self._negate(token.value, token) if negative else token.value
        if token.kind == "keyword" and token.value in _LITERAL_WORDS:
            self.advance()
            return _LITERAL_WORDS[token.value]
        raise self.error(
            f"lists hold literals only, found {token.describe()}",
            expected="a number, string, duration, true, false or null",
            hint="to test several fields, join comparisons with 'or'",
        )


def _is_signed(value) -> bool:
    return isinstance(value, (int, float, timedelta)) and not isinstance(value, bool)


def _did_you_mean(word: str, candidates) -> str | None:
    lowered = word.lower()
    for candidate in candidates:
        if candidate == lowered:
            return f"did you mean {candidate!r}?"
    match = closest(lowered, candidates)
    return f"did you mean {match!r}?" if match else None
