"""The real-code corpus: third-party files that are linted, never collected as tests.

Layout: ``manifest.json`` lists each repository (name, url, commit, license,
files); its files sit unmodified under ``<name>/<path in the repository>``
(kept out of the repository: ``benchmarks/bench_lint.py --restore-corpus``
writes them), and ``judged.json`` holds, per file, the findings judged
actionable (``expected``) and not actionable (``rejected``), each with a
one-line reason, by the rule ``JUDGING`` of ``benchmarks/bench_lint.py``.
``tests/tools/lint/test_lint_realcode.py`` and ``bench_lint.py --corpus`` read them.
"""

collect_ignore_glob = ["*"]
