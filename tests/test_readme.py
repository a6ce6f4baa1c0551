"""The README's tour runs as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_the_tour_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    namespace: dict = {}
    exec(blocks[0], namespace)  # the first block is the self-contained tour
    assert namespace["loss"] > 0


def test_the_setup_commands_open_the_readme():
    first = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1).strip().splitlines()
    assert first == ["pip install . && softmaxkit demo", 'pip install "torch==2.13.0" "triton==3.9.0" ".[test]" && python -m pytest']
    ci = (README.parent / ".ci" / "run").read_text()
    assert first[1] in ci
