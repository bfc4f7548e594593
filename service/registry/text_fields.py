"""The top-level fields of a protobuf text-format document, found and blanked without parsing it into a message.

Triton's config.pbtxt may hold fields our ModelConfig message reserves (triton_config.py refuses or notes them): the
parser cannot read those, so they are located first with protobuf's own tokenizer, their values skipped the way its
parser skips an unknown field, then overwritten with spaces so that the line and column of any later parse error
are still the file's.
"""

from __future__ import annotations

from google.protobuf import text_format


def located(err: text_format.ParseError) -> str:
    """protobuf's 'L:C : message' as words."""
    line, column = err.GetLine(), err.GetColumn()
    message = str(err).split(" : ", 1)[-1] if line is not None else str(err)
    return f"line {line}, column {column}: {message}" if line is not None else message


Position = tuple[int, int]  # (line, column), from 0


def top_level(lines: list[str]) -> list[tuple[str, Position, Position | None, bool]]:
    """Each top-level field of the text: (name, where its name starts, where the next one starts (None: at the end),
    whether it is empty: `[]` or `{}`). Values are skipped the way protobuf's parser skips an unknown field."""
    tokenizer = text_format.Tokenizer(lines)
    fields: list[tuple[str, Position, Position | None, bool]] = []
    start = _here(tokenizer)
    while not tokenizer.AtEnd():
        name = tokenizer.ConsumeIdentifierOrNumber()
        empty = _skip_value(tokenizer)
        if not tokenizer.TryConsume(","):
            tokenizer.TryConsume(";")
        end = None if tokenizer.AtEnd() else _here(tokenizer)
        fields.append((name, start, end, empty))
        if end is not None:
            start = end
    return fields


def _here(tokenizer: text_format.Tokenizer) -> Position:
    error = _error(tokenizer, "")  # the tokenizer's public word on where its current token starts
    return (error.GetLine() or 1) - 1, (error.GetColumn() or 1) - 1


def _skip_value(tokenizer: text_format.Tokenizer) -> bool:
    """Skips `: scalar`, `[list]` or `{message}` (the colon optional before the last two); True when it is `[]` or
    `{}`."""
    colon = tokenizer.TryConsume(":")
    if tokenizer.TryConsume("["):
        if tokenizer.TryConsume("]"):
            return True
        while True:
            if tokenizer.LookingAt("{") or tokenizer.LookingAt("<"):
                _skip_message(tokenizer)
            else:
                _skip_scalar(tokenizer)
            if tokenizer.TryConsume("]"):
                return False
            tokenizer.Consume(",")
    if tokenizer.LookingAt("{") or tokenizer.LookingAt("<"):
        return _skip_message(tokenizer)
    if not colon:
        raise _error(tokenizer, 'Expected ":".')
    _skip_scalar(tokenizer)
    return False


def _skip_message(tokenizer: text_format.Tokenizer) -> bool:
    """Skips `{...}` or `<...>`; True when it holds no field."""
    close = ">" if tokenizer.TryConsume("<") else "}"
    if close == "}":
        tokenizer.Consume("{")
    if tokenizer.TryConsume(close):
        return True
    while not tokenizer.TryConsume(close):
        if tokenizer.AtEnd():
            raise _error(tokenizer, f'Expected "{close}".')
        tokenizer.ConsumeIdentifierOrNumber()
        _skip_value(tokenizer)
        if not tokenizer.TryConsume(","):
            tokenizer.TryConsume(";")
    return False


def _skip_scalar(tokenizer: text_format.Tokenizer) -> None:
    if not (
        tokenizer.TryConsumeByteString()
        or tokenizer.TryConsumeIdentifier()
        or tokenizer.TryConsumeInteger()
        or tokenizer.TryConsumeFloat()
    ):
        raise _error(tokenizer, f"Invalid field value: {tokenizer.token}")


def _error(tokenizer: text_format.Tokenizer, message: str) -> text_format.ParseError:
    """A ParseError at the current token (types-protobuf types its text as a Message)."""
    return tokenizer.ParseError(message)  # type: ignore[arg-type]


def blank(lines: list[str], start: Position, end: Position | None) -> None:
    """Spaces over a field's text, so the parser's line and column numbers stay the file's."""
    (first, column), (last, stop) = start, end or (len(lines) - 1, len(lines[-1]))
    for index in range(first, last + 1):
        line = lines[index]
        begin, finish = (column if index == first else 0), (stop if index == last else len(line))
        lines[index] = line[:begin] + " " * (finish - begin) + line[finish:]
