"""Importing the module --impl names, with its own directory first on sys.path (checks/worker.py runs it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from gradcheck_cli.errors import InputError


class Target(NamedTuple):
    """What --impl names: a module (dotted name, or a file path) and the function in it."""

    spec: str
    module: str
    function: str
    path: Path | None  # for path/to/file.py:FUNCTION

    @property
    def directory(self) -> Path:
        """Where the module's own imports are looked for first: its file's directory, or the current one."""
        return (self.path.parent if self.path is not None else Path.cwd()).resolve()


def import_function(target: Target, keep_path: bool) -> Callable[..., Any]:
    """Import the module with its own directory first on sys.path (removed again unless `keep_path`)."""
    directory = str(target.directory)
    sys.path.insert(0, directory)
    try:
        module = _import_module(target)
    finally:
        if not keep_path and directory in sys.path:
            sys.path.remove(directory)
    function = getattr(module, target.function, None)
    if function is None:
        raise InputError(f"--impl {target.spec}: {target.module} has no attribute {target.function!r}")
    if not callable(function):
        raise InputError(f"--impl {target.spec}: {target.module}.{target.function} is not callable")
    return function


def _import_module(target: Target) -> Any:
    import importlib
    import importlib.util

    cannot = f"--impl {target.spec}: cannot import {target.module}"
    name = target.path.stem if target.path is not None else target.module
    try:
        if target.path is None:
            return importlib.import_module(target.module)
        module_spec = importlib.util.spec_from_file_location(name, target.path)
        if module_spec is None or module_spec.loader is None:
            raise InputError(f"{cannot}: not a Python source file")
        module = importlib.util.module_from_spec(module_spec)
        # Registered while it runs (a dataclass looks its module up there), under its name unless taken.
        registered = name not in sys.modules
        if registered:
            sys.modules[name] = module
        try:
            module_spec.loader.exec_module(module)
        finally:
            if registered:
                del sys.modules[name]
        return module
    except InputError:
        raise
    except SystemExit as error:
        raise InputError(f"{cannot}: it called sys.exit({error.code!r}) while being imported") from None
    except Exception as error:  # noqa: BLE001 - any failure to import the user's code is their input error
        raise InputError(f"{cannot}: {type(error).__name__}: {error}") from None
