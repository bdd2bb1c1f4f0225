"""Short, clear messages for the mistakes users make in configs, instead of deep tracebacks."""

from __future__ import annotations

import difflib
import re
from typing import Final, NoReturn

from jsonargparse import ArgumentParser
from lightning.pytorch.cli import LightningArgumentParser
from typing_extensions import override

from matsci.contract import import_class

_UNION_NOISE: Final = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "Given value type:",
    "Given value:",
    "- Expected a <class 'NoneType'>",
    "Expected a <class 'NoneType'>",
)
_CLASS_PATH_PROBLEM: Final = re.compile(r"Problem with given class_path '([^']+)':")
_GIVEN_CLASS_PATH: Final = re.compile(r"'class_path': '([^']+)'")
_CALLABLE_NOTE: Final = re.compile(r"\s*Type .+? expects a function or a callable class:.*")
_NOT_ACCEPTED: Final = re.compile(r"Key '([^']+)' is not expected|Option '([^']+)' is not accepted")


class ConfigError(Exception):
    """A mistake in the user's configuration or data, reported as one line without traceback.

    Parameters
    ----------
    message
        What is wrong and, where possible, what is allowed.

    Examples
    --------
    >>> str(ConfigError("data: no such file 'x.db'"))
    "data: no such file 'x.db'"
    """


def shorten(message: str) -> str:
    """Reduce a jsonargparse validation message to the lines that say what is wrong.

    jsonargparse lists every alternative of a ``Union`` it tried and echoes the whole value it
    was given; for a class path that does not exist, an argument name that is misspelled or a
    constructor that refused its arguments, only one line of that matters.

    Parameters
    ----------
    message
        The message of a jsonargparse error (or any other error).

    Returns
    -------
    str
        The message without the lists of tried types and the echoed value, as one or a few
        lines.

    Examples
    --------
    >>> shorten('''Parser key "model":
    ...   Does not validate against any of the Union subtypes
    ...   Subtypes: [<class 'LightningModule'>, <class 'NoneType'>]
    ...   Errors:
    ...     - Problem with given class_path 'matsci.tasks.Nope':
    ...         module 'matsci.tasks' has no attribute 'Nope'
    ...     - Expected a <class 'NoneType'>
    ...   Given value type: <class 'dict'>
    ...   Given value: {'class_path': 'matsci.tasks.Nope'}''')
    "model: cannot use class_path 'matsci.tasks.Nope': module ... has no attribute 'Nope'"
    """
    lines = [line.strip() for line in message.strip().splitlines()]
    key = ""
    first = re.fullmatch(r'Parser key "([^"]+)":?(.*)', lines[0]) if lines else None
    if first is not None:
        key = first.group(1)
        lines = [first.group(2).strip(), *lines[1:]]
    kept: list[str] = []
    for line in lines:
        if not line or line.startswith(_UNION_NOISE):
            continue
        line = line.removeprefix("- ").strip()
        problem = _CLASS_PATH_PROBLEM.match(line)
        if problem is not None:
            line = f"cannot use class_path {problem.group(1)!r}:"
        if line.startswith('Parser key "'):  # nested keys: keep only the innermost reason
            continue
        if line not in kept:
            kept.append(line)
    text = " ".join(kept).replace(": :", ":").strip() or message.strip()
    text = _CALLABLE_NOTE.sub("", text).split(" Got value:", 1)[0].strip()
    problem = _CLASS_PATH_PROBLEM.search(message) or _GIVEN_CLASS_PATH.search(message)
    option = _NOT_ACCEPTED.search(text)
    suggested = "did you mean" in text or "; accepted:" in text
    if problem is not None and option is not None and not suggested:
        text += _suggestion(problem.group(1), option.group(1) or option.group(2))
    return f"{key}: {text}" if key else text


def _suggestion(path: str, option: str) -> str:
    """``"; did you mean 'lr'?"`` from the arguments the class at ``path`` accepts, or ``""``."""
    try:
        cls = import_class(path, object, argument="class_path")
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, fail_untyped=False)
    except Exception:  # a suggestion is a courtesy: never fail while building it
        return ""
    return _close_names(option, _accepted(parser))


def _accepted(parser: ArgumentParser) -> list[str]:
    """The top-level option names of a parser (a class's arguments, for a nested one)."""
    try:
        names = list(parser.get_defaults().keys())  # a Namespace iterates over its values
    except Exception:  # a suggestion is a courtesy: never fail while building it
        return []
    return sorted(name for name in names if "." not in name)


def _close_names(option: str, accepted: list[str]) -> str:
    if not accepted:
        return ""
    close = difflib.get_close_matches(option.removeprefix("init_args."), accepted, n=3)
    if close:
        return f"; did you mean {' or '.join(repr(c) for c in close)}?"
    return f"; accepted: {', '.join(accepted)}"


class ShortErrorParser(LightningArgumentParser):
    """The LightningCLI parser, reporting a bad config in one short message without usage text.

    Raises :class:`ConfigError`, which :func:`matsci.cli.main` prints as one line; the full
    usage stays available with ``--help``.
    """

    @override
    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        """Raise :class:`ConfigError` with the shortened message.

        Parameters
        ----------
        message
            jsonargparse's message.
        ex
            The exception behind it, if any.

        Raises
        ------
        ConfigError
            Always.
        """
        text = shorten(message)
        option = _NOT_ACCEPTED.search(text)
        if option is not None and "did you mean" not in text and "; accepted:" not in text:
            text += _close_names(option.group(1) or option.group(2), _accepted(self))
        raise ConfigError(text) from ex
