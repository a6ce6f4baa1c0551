import textwrap

from softmaxkit.tools.lint import lint_source


def codes(source, **options):
    """The codes found in ``source`` (dedented), in order."""
    return [f.code for f in lint_source(textwrap.dedent(source), **options)]
