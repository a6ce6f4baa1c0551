"""The range-kernel template family.h is included twice per instruction set
(isa.h): every macro it defines, and the parameters it is given, must be
undefined at its end, so that none leaks into the next inclusion."""

import re
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "src" / "softmaxkit" / "kernels" / "csrc"
PARAMETERS = {"FT", "COMP", "FSUF"}

DEFINE = re.compile(r"^\s*#\s*define\s+(\w+)", re.MULTILINE)
UNDEF = re.compile(r"^\s*#\s*undef\s+(\w+)\s*$")


def closing_undefs(text: str) -> set[str]:
    """The names in the block of ``#undef`` lines that ends the text."""
    names = set()
    for line in reversed(text.rstrip().splitlines()):
        match = UNDEF.match(line)
        if match:
            names.add(match.group(1))
        elif line.strip():
            break
    return names


def leaked(text: str) -> set[str]:
    """Macros the text defines, and template parameters, not undefined at its end."""
    return (set(DEFINE.findall(text)) | PARAMETERS) - closing_undefs(text)


def test_family_undefines_everything_it_defines():
    assert leaked((CSRC / "family.h").read_text()) == set()


def test_isa_needs_no_undefs():
    assert not re.search(r"^\s*#\s*undef", (CSRC / "isa.h").read_text(), re.MULTILINE)


@pytest.mark.parametrize("name", sorted(set(DEFINE.findall((CSRC / "family.h").read_text())) | PARAMETERS))
def test_a_missing_undef_is_found(name):
    text = (CSRC / "family.h").read_text()
    without = re.sub(rf"^\s*#\s*undef\s+{name}\s*\n", "", text, flags=re.MULTILINE)
    assert without != text
    assert leaked(without) == {name}
