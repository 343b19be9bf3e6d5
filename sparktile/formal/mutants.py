"""Deliberately broken copies of the RTL, so that every proof is shown able to fail.

:func:`mutate` loads a module's source, replaces one exact piece of it (which must occur
exactly once, so a refactor of the RTL that removes the piece fails loudly instead of
silently testing the unbroken design) and executes the result as a new module in the same
package. The proofs' mutants are built from it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import types

__all__ = ["mutate", "MutationError"]


class MutationError(RuntimeError):
    """The piece to replace is not in the source exactly once."""


def mutate(module_name: str, old: str, new: str, *, tag: str) -> types.ModuleType:
    """A copy of module ``module_name`` with ``old`` replaced by ``new``.

    Raises
    ------
    MutationError
        When ``old`` occurs zero or several times in the module's source.
    """
    original = importlib.import_module(module_name)
    source = inspect.getsource(original)
    n = source.count(old)
    if n != 1:
        raise MutationError(f"mutant {tag!r}: {old!r} occurs {n} times in {module_name} "
                            f"(must be exactly once)")
    name = f"{module_name}__mutant_{tag}"
    module = types.ModuleType(name)
    module.__package__ = original.__package__
    module.__file__ = original.__file__
    sys.modules[name] = module   # dataclasses and enums look their module up by name
    exec(compile(source.replace(old, new), f"{original.__file__} (mutant {tag})", "exec"),
         module.__dict__)
    return module
