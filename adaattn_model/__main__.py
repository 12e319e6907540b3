"""``python -m adaattn_model``: the command line (:mod:`adaattn_model.tools.cli`).

Two costs of a one-shot command are skipped here, neither does work for the user: the garbage
collector scanning the million objects that importing torch creates (they live as long as the
process: collected never, so frozen), and the interpreter's teardown after the command has
written and closed its outputs (unloading torch takes about half a second).
"""

import gc
import os
import sys

gc.disable()
import torch  # noqa: E402,F401  (every command imports it; imported here so its objects are frozen)

from .tools.cli import main  # noqa: E402

gc.freeze()
gc.enable()

code = main()
try:
    sys.stdout.flush()
    sys.stderr.flush()
finally:
    os._exit(code)
