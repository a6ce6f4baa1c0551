"""Jupyter notebooks: their JSON, and IPython syntax blanked out of code cells."""

from __future__ import annotations

import json
import re

# Cell magics whose body is still Python.
_PYTHON_CELL_MAGICS = frozenset({"time", "timeit", "capture", "prun", "debug"})
_MAGIC_ASSIGNMENT = re.compile(r"^(\s*[\w.,\s\[\]]+?=\s*)[!%]")
_HELP_LINE = re.compile(r"^\s*[\w.]+\?{1,2}\s*$")


class InvalidNotebook(Exception):
    """A notebook file that is not JSON or not shaped like a notebook."""


def load(raw: bytes) -> dict:
    """The notebook's JSON; raises ``InvalidNotebook`` saying what is wrong with it."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InvalidNotebook(str(error)) from None
    except RecursionError:
        raise InvalidNotebook("its JSON is nested too deeply") from None
    problem = _problem(data)
    if problem is not None:
        raise InvalidNotebook(problem)
    return data


def _problem(data: object) -> str | None:
    """What is wrong with the notebook's outer structure, if anything."""
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        return "no list of cells"
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        return "its metadata is not an object"
    if not isinstance(metadata.get("language_info", {}), dict):
        return "its metadata.language_info is not an object"
    return None


def language(data: dict) -> str:
    """The kernel's language (``python`` when the notebook does not say)."""
    return data.get("metadata", {}).get("language_info", {}).get("name", "python")


def cell_lines(source: str) -> list[str] | None:
    """The cell's lines with IPython syntax blanked out; None for a non-Python cell."""
    lines = source.split("\n")
    first = lines[0].strip() if lines else ""
    if first.startswith("%%"):
        words = first[2:].split()
        if not words or words[0] not in _PYTHON_CELL_MAGICS:
            return None
        lines[0] = ""
    cleaned = []
    for line in lines:
        stripped = line.lstrip()
        indent = line[: len(line) - len(stripped)]
        if stripped.startswith(("%", "!")) or _HELP_LINE.match(line):
            # ``pass`` keeps an indented block valid and the line numbers unchanged.
            cleaned.append(indent + "pass")
        else:
            match = _MAGIC_ASSIGNMENT.match(line)
            cleaned.append(match.group(1) + "None" if match else line)
    return cleaned
