"""Input errors: one clear line naming the problem and the fix, instead of a page of traceback.

Every check of user input (paths, data folders, checkpoints, config values) raises `InputError`
(a `ValueError`), or `MissingInputError` (also a `FileNotFoundError`) for a path that is not
there. The commands' entry points run through `run_command`, which prints such an error as one
line and exits with status 2; `ALTERNET_DEBUG=1` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
from collections.abc import Callable
from typing import Any, NoReturn, get_args

__all__ = [
    "DEBUG_ENV",
    "CommandFailed",
    "InputError",
    "Interrupted",
    "MissingInputError",
    "OneLineArgumentParser",
    "TrainingStopped",
    "check_choice",
    "debug_enabled",
    "environment_error",
    "run_command",
]

#: set to 1 to see the full traceback of an input error
DEBUG_ENV = "ALTERNET_DEBUG"


class InputError(ValueError):
    """Bad user input (a path, a file, a config value): the message says what is wrong and the fix."""


class MissingInputError(InputError, FileNotFoundError):
    """A file or folder the input names does not exist (or lacks a part it needs)."""


class CommandFailed(RuntimeError):
    """The command could not finish its work; the message says why and how to go on (exit status 3)."""


class Interrupted(CommandFailed):
    """Stopped by the user (Ctrl-C); the message says what was kept and how to go on (exit status 2)."""


#: OSError numbers that say the machine, not the program, is in the way (exit 2, one line)
ENVIRONMENT_ERRNOS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a file stands where a folder is needed",
}


def environment_error(err: BaseException) -> str | None:
    """One line for an `OSError` the machine caused (full disk, read-only or forbidden folder), found
    in `err` or the exceptions it was raised from; None for any other error."""
    seen, visited = err, set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, OSError) and seen.errno in ENVIRONMENT_ERRNOS:
            where = f" writing {seen.filename}" if seen.filename else ""
            return (
                f"{ENVIRONMENT_ERRNOS[seen.errno]}{where}; free space or pick a writable folder "
                "(e.g. --runs_dir / --out), then run the command again"
            )
        seen = seen.__cause__ or seen.__context__
    return None


class OneLineArgumentParser(argparse.ArgumentParser):
    """`argparse.ArgumentParser` whose errors are an `InputError` (one line, exit 2 through
    `run_command`) instead of a usage block."""

    def error(self, message: str) -> NoReturn:
        raise InputError(f"{message}; see --help")


class TrainingStopped(CommandFailed):
    """Training was stopped on purpose (e.g. a non-finite loss); the message says how to go on."""


def check_choice(owner: str, name: str, value: Any, choices: Any) -> None:
    """Raise `InputError` naming `owner.name` unless `value` is one of `choices` (a Literal or a tuple)."""
    allowed = get_args(choices) or tuple(choices)
    if value not in allowed:
        raise InputError(f"{owner}: {name}={value!r} not understood; choose one of {list(allowed)}")


def debug_enabled() -> bool:
    """True when `ALTERNET_DEBUG` asks for full tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def config_error_line(err: argparse.ArgumentError) -> str:
    """jsonargparse's multi-line parse error as one line: the key, the value given, what it expects."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return "invalid arguments; see --help for the options and their types"
    key = re.match(r'Parser key "([^"]+)"', lines[0])
    problem = _class_problem(str(err), key.group(1) if key else "")
    if key and problem:  # a class_path entry (an analysis, a data module): jsonargparse's own words
        return f"{key.group(1)}: {problem}; see --help for the options and their types"
    given = re.findall(r"(?:Given|Got) value: (.+)$", str(err), re.M)
    expected = [m for line in lines for m in re.findall(r"Expected a <class '([\w.]+)'>", line)]
    expected += [
        f"one of [{m}]" for line in lines for m in re.findall(r"Expected a typing\.Literal\[(.+?)\]", line)
    ]
    if key and given:
        name, value = key.group(1), given[-1]
        nested = re.search(r"NestedArg\(key='([^']+)', val='([^']*)'\)", value)
        if nested:  # a subclass's init arg (e.g. --data.init_args.batch_size)
            name, value = f"{name}.init_args.{nested.group(1)}", nested.group(2)
        wants = " or ".join(dict.fromkeys(t for t in expected if t != "NoneType")) or "another type"
        return f"{name}={value!r} is not valid: expected {wants}; see --help for its type"
    return f"{lines[0]}; see --help for the options and their types"


def _class_problem(text: str, key: str) -> str | None:
    """What jsonargparse says is wrong inside a `class_path` entry, on one line: an option the class
    does not take, a value of the wrong type, or a class that does not exist (with the registered
    analysis class closest to it when `key` is `analyses`). None when the error is about no such entry."""
    pattern = r"Problem with given class_path '([^']+)':\n(.*?)(?=\n    - |\n  Given value|\Z)"
    found = re.search(pattern, text, re.S)
    unknown = re.search(r"Expected a dot import path string: (\S+)", text)
    if found and "has no attribute" not in found.group(2):
        owner, detail = found.group(1).rpartition(".")[2], " ".join(found.group(2).split())
        typed = re.match(r'Parser key "([^"]+)": Expected a <class \'([\w.]+)\'>\. Got value: (.*)$', detail)
        if typed and "NestedArg(" in text:
            return None  # a flag's wrong-typed value: the caller names its full key
        if typed:
            detail = f"{typed.group(1)}={typed.group(3)!r} is not valid: expected {typed.group(2)}"
        return f"{owner}: {detail}"
    path = found.group(1) if found else unknown.group(1) if unknown else None
    if path is None:
        return None
    hint = ""
    if key == "analyses":
        from alternet_pl.registry import ANALYSES, closest  # plain data, no torch

        near = closest(path.rpartition(".")[2], [entry.class_name for entry in ANALYSES.values()])
        callback = next((e.callback for e in ANALYSES.values() if e.class_name == near), None)
        hint = f" (did you mean {callback!r}?)" if callback else ""
    return f"no class {path!r}{hint}"


def run_command(main: Callable[..., Any], argv: list[str] | None = None) -> Any:
    """Call `main(argv)`; an `InputError` or `CommandFailed` ends the process with its one line.

    Returns what `main` returns. Raises `SystemExit(2)` on an input error and `SystemExit(3)` when
    training was stopped (the traceback is printed only under `ALTERNET_DEBUG=1`). A full disk, a
    read-only or forbidden folder and Ctrl-C are one line and exit status 2 too; any other exception
    propagates unchanged (a bug: full traceback).
    """
    try:
        return main(argv)
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print("interrupted (Ctrl-C); run the command again to redo it", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except argparse.ArgumentError as err:  # a config / flag the parser rejects (unknown key, wrong type)
        if debug_enabled():
            raise
        print(f"error: {config_error_line(err)}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except (InputError, CommandFailed) as err:
        if debug_enabled():
            raise
        kind = (
            "error"
            if isinstance(err, InputError)
            else "stopped"
            if isinstance(err, TrainingStopped)
            else "interrupted"
            if isinstance(err, Interrupted)
            else "failed"
        )
        print(f"{kind}: {err}  [{DEBUG_ENV}=1 shows the traceback]", file=sys.stderr, flush=True)
        raise SystemExit(2 if isinstance(err, InputError | Interrupted) else 3) from None
    except Exception as err:
        line = environment_error(err)
        if line is None or debug_enabled():
            raise
        print(f"error: {line}  [{DEBUG_ENV}=1 shows the traceback]", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
