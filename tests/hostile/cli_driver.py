"""Runs `starter.main([command, spec])` for each spec given, in one process, and prints one JSON line each.

One process for the whole corpus keeps the test quick (the CLI takes seconds to start); a case whose
exception escapes `main` is reported as a traceback, which is what a user would have seen.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback

import starter

MARK = "@@hostile@@ "  # the CLI may print to the real stdout too (default arguments bound at import)


def main() -> None:
    command, paths = sys.argv[1], sys.argv[2:]
    for path in paths:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = starter.main([command, path])
        except BaseException as exc:  # exactly what must never happen
            code, text = -1, f"Traceback: {type(exc).__name__}: {str(exc)[:200]}\n{traceback.format_exc()[-2000:]}"
        else:
            text = err.getvalue()
        print(MARK + json.dumps({"path": path, "code": code, "stderr": text}), flush=True)


if __name__ == "__main__":
    main()
