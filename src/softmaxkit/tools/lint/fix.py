"""Applying fixes with LibCST, which keeps every byte outside the rewritten nodes."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import stat
import tempfile
from pathlib import Path

from softmaxkit.tools.lint.rule import Fix

MISSING_LIBCST = "--fix and --diff need LibCST: pip install 'softmaxkit[lint]'"


def libcst_available() -> bool:
    return importlib.util.find_spec("libcst") is not None


def apply_fixes(source: str, fixes: list[Fix]) -> tuple[str, list[Fix]]:
    """Applies the fixes that do not overlap; returns the new source and the fixes applied.

    A fix nested inside another is left for the next round, after the outer
    one has been applied to the re-linted source.
    """
    import libcst as cst
    from libcst.metadata import PositionProvider

    chosen: dict[tuple, Fix] = {}
    last_end = (0, 0)
    for fix in sorted(fixes, key=lambda f: (f.start, f.end)):
        if fix.start >= last_end:
            chosen[(fix.start, fix.end)] = fix
            last_end = fix.end

    class Rewriter(cst.CSTTransformer):
        METADATA_DEPENDENCIES = (PositionProvider,)

        def __init__(self, default_indent: str) -> None:
            super().__init__()
            self.applied: list[Fix] = []
            self.default_indent = default_indent
            self.indents: list[str] = []

        def visit_IndentedBlock(self, node) -> None:
            self.indents.append(node.indent if node.indent is not None else self.default_indent)

        def leave_IndentedBlock(self, original_node, updated_node):
            self.indents.pop()
            return updated_node

        def on_leave(self, original_node, updated_node):
            if isinstance(original_node, cst.BaseExpression):
                span = self.get_metadata(PositionProvider, original_node, None)
                if span is not None:
                    key = ((span.start.line, span.start.column + 1), (span.end.line, span.end.column + 1))
                    fix = chosen.pop(key, None)
                    if fix is not None:
                        self.applied.append(fix)
                        replacement = cst.parse_expression(_dedent(fix.content, "".join(self.indents)))
                        return replacement.with_changes(lpar=updated_node.lpar, rpar=updated_node.rpar)
            return updated_node

    try:
        module = cst.parse_module(source)
    except cst.ParserSyntaxError:
        # Syntax newer than the installed LibCST understands: leave the file as it is.
        return source, []
    wrapper = cst.MetadataWrapper(module)
    rewriter = Rewriter(module.default_indent)
    new_module = wrapper.visit(rewriter)
    return new_module.code, rewriter.applied


def _dedent(content: str, block_indent: str) -> str:
    """Removes the enclosing block's indentation from continuation lines.

    LibCST adds the block's indentation back to each continuation line of a
    node when it prints it, so text taken from the file must lose it first.
    """
    first, *rest = content.split("\n")
    return "\n".join([first, *(line[len(block_indent) :] if line.startswith(block_indent) else line for line in rest)])


def write_refusal(path: Path, roots: list[Path]) -> str | None:
    """Why ``--fix`` must not write ``path``, or None when it may.

    ``roots`` are the real paths of the files and directories named on the
    command line. A symbolic link is never written through (its target may
    belong to another project), and neither is a file whose real path lies
    outside every root, which only a folder replaced by a link while the run
    went on could produce.
    """
    if path.is_symlink():
        return "it is a symbolic link (fix its target instead)"
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError) as error:
        return f"its real path cannot be found: {error}"
    if not any(real == root or root in real.parents for root in roots):
        return f"its real path {real} is outside the paths given"
    return None


def write_atomic(path: Path, data: bytes) -> None:
    """Replaces the file's content in one step, keeping its permission bits.

    The new content goes to a temporary file in the same folder, which is then
    renamed over the old one, so an interrupted run leaves either the old file
    or the new one, never part of either. Owner and group are kept where the
    process may set them (it runs as root, or they are already its own).
    """
    info = path.stat()
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with open(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, stat.S_IMODE(info.st_mode))
        if hasattr(os, "chown"):
            with contextlib.suppress(OSError):
                os.chown(temporary, info.st_uid, info.st_gid)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
