"""The real-code corpus: third-party files that are linted, never collected as tests.

Layout: ``manifest.json`` lists each repository (name, url, commit, license,
files); its files sit unmodified under ``<name>/<path in the repository>``,
and ``judged.json`` holds the findings judged actionable (``expected``) and
not actionable (``rejected``) per file. ``tests/tools/lint/test_lint_realcode.py``
and ``benchmarks/bench_lint.py --corpus`` read them.
"""

collect_ignore_glob = ["*"]
