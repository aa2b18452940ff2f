"""`wan22 ARGS` run in the test's own process: the console script's own function (`wan_core.cli.main`), so each call
costs the command's work, not seconds of interpreter start-up and imports. Tests that need a process of their own
(signals, an environment, bit-for-bit comparison with another process) keep a subprocess."""
import contextlib
import io
import os
import types


def run_wan22(*args, cwd=None):
    """A CompletedProcess-like result: returncode, stdout, stderr."""
    from wan_core.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd or os.getcwd()), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in args])
        except SystemExit as exc:  # argparse's own exits (--help, a bad argument)
            status = exc.code if isinstance(exc.code, int) else 2
    return types.SimpleNamespace(returncode=status, stdout=out.getvalue(), stderr=err.getvalue())
