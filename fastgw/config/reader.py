"""Read nginx-syntax files into a tree of :class:`Node`, resolving ``include``.

Tokenising (quotes, escapes, comments, ``${var}``) is crossplane's lexer; the
grammar on top is ours because crossplane's parser accepts a directive whose
``;`` is missing before ``}`` and, when it combines included files, labels
directives with the wrong file. nginx rejects the first and names the right
file, so we do too.
"""

import glob
import os
from dataclasses import dataclass, field

import crossplane.errors
import crossplane.lexer

from .errors import ConfigError

# A pattern that includes itself would recurse for ever; nginx has no limit but
# the stack, we stop at a depth no real configuration reaches.
MAX_INCLUDE_DEPTH = 32


@dataclass
class Node:
    """One directive as written: ``name args... ;`` or ``name args... { block }``.

    ``block`` is None for a simple directive and a list of Node for a block.
    """

    name: str
    args: list
    file: str
    line: int
    block: list = None
    quoted: list = field(default_factory=list)

    def error(self, message):
        """A ConfigError located at this directive."""
        return ConfigError(message, self.file, self.line)


_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "t": "\t", "r": "\r", "n": "\n"}


def unescape(token):
    """nginx's escapes in a token (ngx_conf_read_token): ``\\" \\' \\\\ \\t \\r \\n``.

    Any other backslash is kept, so regexes such as ``\\.php$`` keep theirs.
    """
    if "\\" not in token:
        return token
    out, i = [], 0
    while i < len(token):
        c = token[i]
        if c == "\\" and i + 1 < len(token) and token[i + 1] in _ESCAPES:
            out.append(_ESCAPES[token[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _tokens(path):
    try:
        for token, line, quoted in crossplane.lexer.lex(path):
            if not quoted and token.startswith("#"):
                continue
            yield unescape(token), line, quoted
    except crossplane.errors.NgxParserSyntaxError as exc:
        raise ConfigError(exc.strerror, path, exc.lineno) from None
    except OSError as exc:
        raise ConfigError(f'open() "{path}" failed ({exc.errno}: {exc.strerror})') from None


def read_file(path, prefix_dir=None, _depth=0, files=None):
    """Parse ``path`` and the files it includes into a list of top-level Node.

    Relative include patterns resolve against ``prefix_dir`` (nginx's conf
    prefix: the directory of the main file). ``files`` collects every file read
    in order, for ``-T``. Raises ConfigError (file:line) on syntax errors, an
    unreadable file or an include pattern without a wildcard that matches
    nothing.
    """
    if files is None:
        files = []
    path = os.path.abspath(path)
    if prefix_dir is None:
        prefix_dir = os.path.dirname(path)
    files.append(path)
    tokens = _tokens(path)
    nodes = _parse_block(tokens, path, prefix_dir, _depth, files, top=True)
    return nodes


def read_string(text, label, prefix_dir, files=None):
    """Parse directives given as a string (``-g``); errors name ``label`` as the file."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as fh:
        fh.write(text)
        tmp = fh.name
    try:
        try:
            nodes = _parse_block(_tokens(tmp), tmp, prefix_dir, 0, files if files is not None else [], top=True)
        except ConfigError as exc:
            if exc.file == tmp:
                exc.file, exc.line = label, None
            raise
        # nginx names no line for -g: "... in command line".
        for node in _walk(nodes):
            if node.file == tmp:
                node.file, node.line = label, None
        return nodes
    finally:
        os.unlink(tmp)


def _walk(nodes):
    for node in nodes:
        yield node
        if node.block:
            yield from _walk(node.block)


def _parse_block(tokens, path, prefix_dir, depth, files, top):
    nodes = []
    args, quoted, start_line = [], [], None
    last_line = 1
    for token, line, is_quoted in tokens:
        last_line = line
        if not is_quoted and token in (";", "{", "}"):
            if token == "}":
                if args:
                    raise ConfigError('unexpected "}"', path, line)
                if top:
                    raise ConfigError('unexpected "}"', path, line)
                return nodes
            if not args:
                raise ConfigError(f'unexpected "{token}"', path, line)
            node = Node(args[0], args[1:], path, start_line, quoted=quoted[1:])
            if token == "{":
                node.block = _parse_block(tokens, path, prefix_dir, depth, files, top=False)
            if node.name == "include" and node.block is None:
                nodes.extend(_include(node, prefix_dir, depth, files))
            else:
                nodes.append(node)
            args, quoted = [], []
            continue
        if not args:
            start_line = line
        args.append(token)
        quoted.append(is_quoted)
    if args:
        raise ConfigError('unexpected end of file, expecting ";" or "}"', path, last_line)
    if not top:
        raise ConfigError('unexpected end of file, expecting "}"', path, last_line)
    return nodes


def _include(node, prefix_dir, depth, files):
    if len(node.args) != 1:
        raise node.error('invalid number of arguments in "include" directive')
    if depth >= MAX_INCLUDE_DEPTH:
        raise node.error("too deep includes (an include cycle?)")
    pattern = node.args[0]
    if not os.path.isabs(pattern):
        pattern = os.path.join(prefix_dir, pattern)
    if glob.has_magic(pattern):
        # nginx includes glob matches in sorted order and accepts zero matches.
        matches = sorted(glob.glob(pattern))
    else:
        if not os.path.exists(pattern):
            raise node.error(f'open() "{pattern}" failed (2: No such file or directory)')
        matches = [pattern]
    out = []
    for match in matches:
        if os.path.isdir(match):
            continue
        out.extend(read_file(match, prefix_dir, depth + 1, files))
    return out
