"""The package's public names: each is what the docs say it is, never a submodule."""

import inspect
import subprocess
import sys
from pathlib import Path

import adaattn_model


def test_every_export_is_a_function_class_or_constant_not_a_module():
    for name in adaattn_model.__all__:
        value = getattr(adaattn_model, name)
        assert not inspect.ismodule(value), f"adaattn_model.{name} is a module"


def test_convert_and_fetch_are_the_functions_even_after_their_modules_are_imported():
    code = (
        "import inspect, adaattn_model.tools.convert, adaattn_model.tools.fetch\n"
        "from adaattn_model import convert, fetch\n"
        "assert inspect.isfunction(convert) and convert.__module__ == 'adaattn_model.tools.convert', convert\n"
        "assert inspect.isfunction(fetch) and fetch.__module__ == 'adaattn_model.tools.fetch', fetch\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_engine_never_imports_the_tools():
    # __init__ names the tools' functions lazily and __main__ starts the CLI; nothing else may reach up.
    engine = Path(adaattn_model.__file__).parent
    for path in engine.glob("*.py"):
        if path.name not in ("__init__.py", "__main__.py"):
            assert "from .tools" not in path.read_text(), f"{path.name} imports the tools"
