"""Reading the variables that bash configuration fragments set, without executing anything.

CernVM-FS configuration files are sourced by bash. This reader understands the part of bash they use --
assignments (also after ``export``/``readonly``), quoting, ``$VAR``/``${VAR}``/``${VAR:-word}``/``${VAR:=word}``
expansion, comments, line continuations, ``;`` and ``. FILE``/``source FILE`` -- and skips everything else with a
warning naming file:line: control flow (``if``/``case``/loops/functions, skipped as whole blocks), ``&&``/``||``,
pipes, redirections, command and arithmetic substitution, other commands. Nothing is ever run.

Each logical line (physical lines joined by a trailing backslash) is read on its own, so a quote left open at the
end of a line makes that line malformed: it is skipped with a warning and the rest of the file still loads.
Warnings never contain values, which may be secrets.
"""

import collections
import posixpath
import re

MAX_INCLUDE_DEPTH = 10

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ASSIGNMENT_START = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")
NAME_CHARS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
REFERENCE_OPERATORS = (":-", ":=", "-", "=")  # longest first
SPECIAL_PARAMETERS = "0123456789@*#?$!-"
OPERATORS = ("&&", "||", ";;", ">>", "<<", ";", "&", "|", "(", ")", "<", ">")  # longest first
OPERATOR_CHARS = ";&|()<>"
BLANKS = " \t"
LIST_SEPARATORS = (";", ";;", "&")

BLOCK_OPENERS = {"if": "fi", "case": "esac", "for": "done", "while": "done", "until": "done", "select": "done",
                 "{": "}"}  # keyword -> the keyword that closes its block
BLOCK_NAMES = {"if": "`if` block", "case": "`case` block", "for": "`for` loop", "while": "`while` loop",
               "until": "`until` loop", "select": "`select` loop", "{": "`{ ... }` group"}
BLOCK_MIDDLES = ("then", "elif", "else", "do")


class Origin(collections.namedtuple("Origin", "path line")):
    """Where a value was set; shown as ``path:line``."""

    __slots__ = ()

    def __str__(self):
        return "{}:{}".format(self.path, self.line)


Setting = collections.namedtuple("Setting", "value origin")  # origin: an Origin, or a label such as "-o"

# The pieces a word is made of. ``quoted`` literals cannot start an assignment, a keyword or a tilde expansion.
Literal = collections.namedtuple("Literal", "text quoted")
Reference = collections.namedtuple("Reference", "name operator word")  # word: pieces of ${NAME<operator>word}
Unsupported = collections.namedtuple("Unsupported", "what")  # a construct that would run something
Word = collections.namedtuple("Word", "pieces text")  # text: as written, for warnings


class Operator(str):
    """A shell control or redirection operator such as ``;`` or ``&&``."""


class MalformedLine(Exception):
    """A logical line that cannot be split into words, such as one with an unterminated quote."""

    def __init__(self, reason, line):
        Exception.__init__(self, reason)
        self.reason = reason
        self.line = line


def plain_text(word):
    """The text of a word written without quotes, escapes or expansions (keywords, command names), else None."""
    if all(isinstance(piece, Literal) and not piece.quoted for piece in word.pieces):
        return "".join(piece.text for piece in word.pieces)
    return None


def split_assignment(word):
    """``(name, value pieces)`` if the word is ``NAME=value`` (the name and ``=`` unquoted), else None."""
    if not word.pieces or not isinstance(word.pieces[0], Literal) or word.pieces[0].quoted:
        return None
    match = ASSIGNMENT_START.match(word.pieces[0].text)
    if not match:
        return None
    rest = word.pieces[0].text[match.end():]
    value = ([Literal(rest, False)] if rest else []) + list(word.pieces[1:])
    return match.group(1), value


def unsupported_construct(pieces):
    """What in these pieces cannot be evaluated without running something or guessing, or None."""
    if pieces and isinstance(pieces[0], Literal) and not pieces[0].quoted and pieces[0].text.startswith("~"):
        return "tilde expansion"
    for piece in pieces:
        if isinstance(piece, Unsupported):
            return piece.what
        if isinstance(piece, Reference) and piece.word:
            inner = unsupported_construct(piece.word)
            if inner:
                return inner
    return None


class LineLexer(object):
    """Splits fragment text into logical lines of words and operators."""

    def __init__(self, text):
        self.text = text
        self.pos = 0
        self.line = 1

    def logical_lines(self):
        """Yield ``(line number, tokens, None)`` per logical line, or ``(line number, None, reason)`` for a
        malformed one, which is skipped up to the end of the physical line where the problem was found."""
        while self.pos < len(self.text):
            first_line = self.line
            try:
                tokens = self._tokens()
            except MalformedLine as malformed:
                self._skip_rest_of_line()
                yield malformed.line, None, malformed.reason
                continue
            yield first_line, tokens, None

    def _peek(self, offset=0):
        index = self.pos + offset
        return self.text[index] if index < len(self.text) else ""

    def _advance(self, count=1):
        self.line += self.text.count("\n", self.pos, self.pos + count)
        self.pos += count

    def _skip_rest_of_line(self):
        end = self.text.find("\n", self.pos)
        self._advance((len(self.text) if end < 0 else end + 1) - self.pos)

    def _tokens(self):
        tokens = []
        while True:
            while self._peek() and self._peek() in BLANKS or self.text.startswith("\\\n", self.pos):
                self._advance(2 if self._peek() == "\\" else 1)
            char = self._peek()
            if char in ("", "\n"):
                self._advance(len(char))
                return tokens
            if char == "#":
                end = self.text.find("\n", self.pos)
                self._advance((len(self.text) if end < 0 else end) - self.pos)
            elif char in OPERATOR_CHARS:
                operator = next(op for op in OPERATORS if self.text.startswith(op, self.pos))
                self._advance(len(operator))
                tokens.append(Operator(operator))
            else:
                start = self.pos
                pieces = self._pieces(stop=BLANKS + "\n" + OPERATOR_CHARS, in_double_quotes=False)
                tokens.append(Word(pieces, self.text[start:self.pos]))

    def _pieces(self, stop, in_double_quotes):
        """Pieces up to an unquoted character in ``stop`` (not consumed) or the end of the text."""
        pieces = []
        literal = []

        def flush():
            if literal:
                pieces.append(Literal("".join(literal), False))
                del literal[:]

        while self._peek() and self._peek() not in stop:
            char = self._peek()
            if char == "\\":
                following = self._peek(1)
                if following == "\n":
                    self._advance(2)
                    continue
                flush()
                pieces.append(Literal(following or "\\", True))
                self._advance(1 + len(following))
            elif char == "'" and not in_double_quotes:
                flush()
                pieces.append(Literal(self._single_quoted(), True))
            elif char == '"':
                flush()
                pieces.extend(self._double_quoted())
            elif char == "$":
                flush()
                pieces.append(self._dollar(in_double_quotes))
            elif char == "`":
                flush()
                pieces.append(self._backticks())
            elif char == "\n":  # only ${...} words leave the newline out of stop
                raise MalformedLine("unterminated ${...}", self.line)
            else:
                literal.append(char)
                self._advance()
        flush()
        return pieces

    def _single_quoted(self):
        start_line = self.line
        end = self.text.find("'", self.pos + 1)
        newline = self.text.find("\n", self.pos + 1)
        if end < 0 or 0 <= newline < end:
            raise MalformedLine("unterminated single quote", start_line)
        content = self.text[self.pos + 1:end]
        self._advance(end + 1 - self.pos)
        return content

    def _double_quoted(self):
        start_line = self.line
        self._advance()
        pieces = []
        literal = []
        while True:
            char = self._peek()
            if char in ("", "\n"):
                raise MalformedLine("unterminated double quote", start_line)
            if char == '"':
                self._advance()
                break
            if char == "\\" and self._peek(1) == "\n":
                self._advance(2)
            elif char == "\\" and self._peek(1) in '$`"\\':
                literal.append(self._peek(1))
                self._advance(2)
            elif char in "$`":
                pieces.append(Literal("".join(literal), True))
                literal = []
                pieces.append(self._dollar(True) if char == "$" else self._backticks())
            else:
                literal.append(char)
                self._advance()
        pieces.append(Literal("".join(literal), True))
        return pieces

    def _dollar(self, in_double_quotes):
        following = self._peek(1)
        if following == "{":
            return self._braced(in_double_quotes)
        if following == "(":
            what = "arithmetic expansion $((...))" if self._peek(2) == "(" else "command substitution $(...)"
            self._advance()
            self._skip_balanced("(", ")", what)
            return Unsupported(what)
        name = NAME_CHARS.match(self.text, self.pos + 1)
        if name:
            self._advance(1 + len(name.group()))
            return Reference(name.group(), None, None)
        if following and following in SPECIAL_PARAMETERS:
            self._advance(2)
            return Unsupported("the special parameter $" + following)
        if following == "'" and not in_double_quotes:
            self._advance()
            return Unsupported("$'...' quoting")
        self._advance()
        return Literal("$", in_double_quotes)

    def _braced(self, in_double_quotes):
        name = NAME_CHARS.match(self.text, self.pos + 2)
        operator = name and next((op for op in ("}",) + REFERENCE_OPERATORS
                                  if self.text.startswith(op, name.end())), None)
        if not operator:
            self._advance()
            self._skip_balanced("{", "}", "${...}")
            return Unsupported("this ${...} form (only ${VAR}, ${VAR:-word} and ${VAR:=word} are supported)")
        self._advance(name.end() + len(operator) - self.pos)
        if operator == "}":
            return Reference(name.group(), None, None)
        word = self._pieces(stop="}", in_double_quotes=in_double_quotes)
        if self._peek() != "}":
            raise MalformedLine("unterminated ${...}", self.line)
        self._advance()
        return Reference(name.group(), operator, word)

    def _backticks(self):
        start_line = self.line
        self._advance()
        while self._peek() not in ("`", "", "\n"):
            self._advance(2 if self._peek() == "\\" and self._peek(1) not in ("", "\n") else 1)
        if self._peek() != "`":
            raise MalformedLine("unterminated backtick command substitution", start_line)
        self._advance()
        return Unsupported("command substitution `...`")

    def _skip_balanced(self, opening, closing, what):
        """Skip from ``opening`` at the current position past its matching ``closing``, passing over quotes."""
        start_line = self.line
        depth = 0
        while True:
            char = self._peek()
            if char in ("", "\n"):
                raise MalformedLine("unterminated " + what, start_line)
            if char == "'" or char == '"':
                end = self.text.find(char, self.pos + 1)
                newline = self.text.find("\n", self.pos + 1)
                if end < 0 or 0 <= newline < end:
                    raise MalformedLine("unterminated " + what, start_line)
                self._advance(end + 1 - self.pos)
                continue
            if char == "\\":
                self._advance(1 if self._peek(1) in ("", "\n") else 2)
                continue
            depth += {opening: 1, closing: -1}.get(char, 0)
            self._advance()
            if depth == 0:
                return


def list_items(tokens):
    """Split a line's tokens into the items of a bash list: ``(tokens, terminator)`` per ``;``/``;;``/``&``."""
    item = []
    for token in tokens:
        if isinstance(token, Operator) and token in LIST_SEPARATORS:
            yield item, token
            item = []
        else:
            item.append(token)
    if item:
        yield item, None


def segments(item):
    """The runs of words in an item between operators: each starts at a command position."""
    words = []
    for token in item:
        if isinstance(token, Operator):
            yield words
            words = []
        else:
            words.append(token)
    yield words


class CompoundTracker(object):
    """Follows ``if``/``case``/loop/function nesting in one file, so that whole blocks are skipped, with one
    warning per outermost block once it closes."""

    Block = collections.namedtuple("Block", "closer name origin silent")  # silent: a function body

    def __init__(self, warn):
        self.warn = warn
        self.blocks = []
        self.function_body_expected = False  # after `f()` alone on a line, its `{` may come on the next

    def track(self, item, origin):
        """Update the nesting for one list item; True if the item is compound syntax or inside a block."""
        body_expected = self.function_body_expected
        self.function_body_expected = False
        header = len(item) >= 3 and isinstance(item[0], Word) and item[1:3] == ["(", ")"]
        if header:
            self._function_header(item[0], origin)
            body_expected = True
        touched = header
        for words in segments(item):
            index = 0
            while index < len(words):
                keyword = plain_text(words[index])
                if keyword in BLOCK_OPENERS:
                    self.blocks.append(self.Block(BLOCK_OPENERS[keyword], BLOCK_NAMES[keyword], origin,
                                                  body_expected and not self.blocks))
                    body_expected = False
                elif keyword in BLOCK_OPENERS.values():
                    self._close(keyword, origin)
                elif keyword in BLOCK_MIDDLES:
                    if not self.blocks:
                        self.warn(origin, "unexpected `{}` outside any block; ignored".format(keyword))
                elif keyword == "function" and index + 1 < len(words):
                    index += 1
                    self._function_header(words[index], origin)
                    header = body_expected = True
                else:
                    break
                touched = True
                index += 1
        self.function_body_expected = header and body_expected
        return touched or bool(self.blocks)

    def _function_header(self, name_word, origin):
        self.warn(origin, "skipped the definition of function `{}`: functions are never run".format(
            name_word.text))

    def _close(self, keyword, origin):
        if not self.blocks:
            self.warn(origin, "unexpected `{}` without an open block; ignored".format(keyword))
            return
        block = self.blocks.pop()
        if not self.blocks and not block.silent:
            lines = "line {}".format(origin.line) if origin.line == block.origin.line else "lines {}-{}".format(
                block.origin.line, origin.line)
            self.warn(block.origin, "skipped the {} ({}): shell control flow is never evaluated, so settings "
                                    "inside it are ignored; set them unconditionally if they are needed".format(
                                        block.name, lines))

    def end_of_file(self):
        if self.blocks and not self.blocks[0].silent:
            outer = self.blocks[0]
            self.warn(outer.origin, "the {} is never closed; skipped lines {} to the end of the file".format(
                outer.name, outer.origin.line))
        self.blocks = []


class ShellVariables(object):
    """The variables set by the fragments sourced so far: the source of truth for ``$VAR``.

    ``$VAR`` is looked up in these variables, then in ``environ`` (a dict). Subclasses may route file reads
    (:meth:`read_file`) and refuse assignments (:meth:`refusal`).
    """

    def __init__(self, environ):
        self.environ = environ
        self.settings = {}  # name -> Setting
        self.readonly = {}  # name -> Origin of the readonly declaration
        self.warnings = []
        self._include_depth = 0

    def warn(self, where, message):
        self.warnings.append("{}: {}".format(where, message))

    def lookup(self, name):
        if name in self.settings:
            return self.settings[name].value
        return self.environ.get(name)

    def refusal(self, name, value, origin):
        """Why an assignment must be ignored (a warning text without the value), or None to accept it."""
        return None

    def assign(self, name, value, origin):
        """Set name, unless it is readonly or :meth:`refusal` objects (a warning); True if it was set."""
        if name in self.readonly:
            self.warn(origin, "{} is readonly since {}; this assignment is ignored".format(
                name, self.readonly[name]))
            return False
        reason = self.refusal(name, value, origin)
        if reason:
            self.warn(origin, reason)
            return False
        self.settings[name] = Setting(value, origin)
        return True

    def read_file(self, path):
        """The bytes of the file at ``path``, or None if there is none. Raises OSError if it cannot be read."""
        try:
            with open(path, "rb") as stream:
                return stream.read()
        except (FileNotFoundError, NotADirectoryError):
            return None

    def source(self, path, included_from=None):
        """Read the fragment at ``path`` into these variables. False if it does not exist or cannot be read
        (a warning, except for a missing file that is not an include: most files of the chain are optional)."""
        try:
            data = self.read_file(path)
        except OSError as error:
            self.warn(included_from or path, "cannot read {}: {}; fix its permissions or remove it".format(
                path, error.strerror or error))
            return False
        if data is None:
            if included_from is not None:
                self.warn(included_from, "the included file {} does not exist; skipped".format(path))
            return False
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.warn(path, "is not UTF-8 text; undecodable bytes were replaced")
            text = data.decode("utf-8", "replace")
        self._interpret(path, text)
        return True

    def _interpret(self, path, text):
        compound = CompoundTracker(self.warn)
        for line, tokens, malformed in LineLexer(text).logical_lines():
            origin = Origin(path, line)
            if malformed:
                self.warn(origin, "malformed line skipped: {}".format(malformed))
                continue
            for item, terminator in list_items(tokens):
                if compound.track(item, origin) or not item:
                    continue
                operators = [token for token in item if isinstance(token, Operator)]
                if operators or terminator == "&":
                    self.warn(origin, "skipped a command with `{}`: only plain assignments are read, shell "
                                      "operators are never evaluated; set the variables unconditionally".format(
                                          operators[0] if operators else "&"))
                    continue
                self._run(item, origin)
        compound.end_of_file()

    def _run(self, words, origin):
        """Run one simple command: assignments, ``export``/``readonly``, ``.``/``source``; warn about others."""
        assignments = [split_assignment(word) for word in words]
        for word, assignment in zip(words, assignments):
            unsupported = unsupported_construct(assignment[1] if assignment else word.pieces)
            if unsupported:
                subject = "{} not set".format(assignment[0]) if assignment else "skipped `{}`".format(
                    words[0].text)
                self.warn(origin, "{}: {} is never evaluated; write the value literally".format(
                    subject, unsupported))
                return
        command = plain_text(words[0])
        if assignments[0]:
            if not all(assignments):
                self.warn(origin, "{} not set: the assignment is followed by a command, so it would apply only "
                                  "to that command, which is never run; quote the value if it contains spaces"
                          .format(assignments[0][0]))
                return
            for name, value in assignments:
                self.assign(name, self._expand(value, origin), origin)
        elif command in ("export", "readonly"):
            self._declare(command, words[1:], origin)
        elif command in (".", "source"):
            self._include(words[1:], origin)
        else:
            self.warn(origin, "skipped the command `{}`: commands are never run (only assignments, export, "
                              "readonly and . / source are read)".format(words[0].text))

    def _declare(self, keyword, words, origin):
        """``export`` (no effect beyond its assignments) or ``readonly`` (later assignments are ignored)."""
        declared = []
        for word in words:
            assignment = split_assignment(word)
            name = assignment[0] if assignment else plain_text(word)
            if not name or not NAME.match(name):
                self.warn(origin, "skipped `{} ...`: only variable names and NAME=value are supported, no "
                                  "options".format(keyword))
                return
            declared.append((name, assignment))
        for name, assignment in declared:
            accepted = not assignment or self.assign(name, self._expand(assignment[1], origin), origin)
            if keyword == "readonly" and accepted:
                self.readonly.setdefault(name, origin)

    def _include(self, words, origin):
        if len(words) != 1:
            self.warn(origin, "skipped an include: `.` and `source` need exactly one file name (arguments to "
                              "included files are not supported)")
            return
        path = self._expand(words[0].pieces, origin)
        if not path:
            self.warn(origin, "skipped an include whose file name is empty")
            return
        path = posixpath.normpath(posixpath.join(posixpath.dirname(origin.path), path))
        if self._include_depth >= MAX_INCLUDE_DEPTH:
            self.warn(origin, "skipped the include of {}: includes nest deeper than {} (does a file include "
                              "itself?)".format(path, MAX_INCLUDE_DEPTH))
            return
        self._include_depth += 1
        try:
            self.source(path, included_from=origin)
        finally:
            self._include_depth -= 1

    def _expand(self, pieces, origin):
        """The text of pieces with references replaced; ``${NAME:=word}`` also assigns NAME (at origin)."""
        parts = []
        for piece in pieces:
            if isinstance(piece, Literal):
                parts.append(piece.text)
                continue
            value = self.lookup(piece.name)
            if piece.operator is None:
                parts.append(value or "")
                continue
            missing = value is None or (piece.operator.startswith(":") and value == "")
            if not missing:
                parts.append(value)
                continue
            value = self._expand(piece.word, origin)
            if piece.operator.endswith("="):
                self.assign(piece.name, value, origin)
            parts.append(value)
        return "".join(parts)
