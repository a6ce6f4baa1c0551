"""Which rules run: ``--select``, ``--ignore`` and the configuration's ``select`` and ``ignore``."""

from __future__ import annotations

from softmaxkit.tools.lint.rule import Rule
from softmaxkit.tools.lint.rules import RULES
from softmaxkit.tools.lint.settings import Config, UsageError


def parse_selectors(values: list[str] | str | None, origin: str) -> list[str] | None:
    """Rule codes or prefixes (``SMK1``, ``ALL``) from a list or a comma-separated string."""
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    prefixes = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip().upper()
            if not part:
                continue
            prefix = "" if part == "ALL" else part
            if not any(rule.code.startswith(prefix) for rule in RULES):
                raise UsageError(f"{origin}: {part!r} matches no rule code (see `softmaxkit lint --list-rules`)")
            prefixes.append(prefix)
    return prefixes


def _longest(code: str, prefixes: list[str]) -> int:
    return max((len(p) for p in prefixes if code.startswith(p)), default=-1)


def enabled_rules(
    config: Config, select: list[str] | None = None, ignore: list[str] | None = None
) -> list[Rule]:
    """The rules to run: the configuration's selection, then the command line's.

    Within one layer the more specific selector wins, so ``select = ["SMK1"]``
    with ``ignore = ["SMK"]`` keeps SMK1xx. A command-line ``--select``
    replaces the configuration's selection; ``--ignore`` removes from it.
    """

    def layer(codes: list[str], chosen: list[str], dropped: list[str]) -> list[str]:
        return [c for c in codes if _longest(c, chosen) > _longest(c, dropped)]

    codes = [rule.code for rule in RULES]
    if select is not None:
        codes = layer(codes, select, ignore or [])
    else:
        codes = layer(codes, config.select if config.select is not None else ["SMK"], config.ignore)
        codes = layer(codes, [""], ignore or [])
    return [rule for rule in RULES if rule.code in codes]
