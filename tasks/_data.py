"""Finding data files that are not ours: a path, an environment variable, or a checked download."""

from __future__ import annotations

import hashlib
import os
import urllib.request
from pathlib import Path

from suite.errors import DataError

DATA_ENV = "LSTM_BENCH_DATA_DIR"
CACHE = Path(os.environ.get("LSTM_BENCH_CACHE", Path.home() / ".cache" / "lstm-bench" / "data"))


def offline() -> bool:
    """Downloads are off unless LSTM_BENCH_ONLINE=1 (see suite/__init__.py)."""
    return os.environ.get("LSTM_BENCH_ONLINE") != "1"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve(relative: str, sha: str, url: str, explicit: str | None = None) -> Path:
    """explicit path > $LSTM_BENCH_DATA_DIR/relative > download cache (verified by SHA-256)."""
    candidates = [Path(explicit)] if explicit else []
    if os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]) / relative)
    candidates.append(CACHE / relative)
    for path in candidates:
        if path.is_file():
            return verify(path, sha, url)
        if explicit and path == candidates[0]:
            raise DataError(
                f"data file {path} does not exist; fix the path, or set {DATA_ENV} to a folder holding "
                f"{relative}"
            )
    if offline():
        raise DataError(
            f"{relative} not found and downloads are off; set {DATA_ENV} to a folder holding "
            f"{relative} (source: {url}), or LSTM_BENCH_ONLINE=1 to download it"
        )
    return verify(download(url, CACHE / relative), sha, url)


def verify(path: Path, sha: str, url: str) -> Path:
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty; replace it with the file from {url}")
    got = sha256(path)
    if sha and got != sha:
        raise DataError(
            f"data file {path} is corrupt (sha256 {got[:12]}… ≠ expected {sha[:12]}…); replace it with the "
            f"file from {url}"
        )
    return path


def read_text_file(path, fix: str) -> str:
    """A text file the user names, checked before any use: it exists, holds something, is not
    binary, and is UTF-8 (a BOM is dropped). `fix` ends each error: what the user should do."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; {fix}")
    data = path.read_bytes()
    if not data.strip():
        raise DataError(f"data file {path} is empty; {fix}")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise DataError(
            f"data file {path} is UTF-16 text; convert it to UTF-8 (iconv -f UTF-16 -t UTF-8) or {fix}"
        )
    if b"\x00" in data:
        raise DataError(f"data file {path} is binary (it holds NUL bytes), not text; {fix}")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data file {path} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}); convert it (e.g. iconv -f latin1 -t UTF-8) or {fix}"
        ) from None


def load_hf_dataset(name: str, config: str | None, instead: str):
    """A Hugging Face DatasetDict from the hub (LSTM_BENCH_ONLINE=1), the local `datasets` cache, or
    a local folder; any failure is one line that says what to do (`instead`: the way around)."""
    from datasets import load_dataset
    from datasets.utils.logging import disable_progress_bar, set_verbosity_error

    disable_progress_bar()
    set_verbosity_error()
    where = f"Hugging Face dataset {name!r}" + (f" (config {config!r})" if config else "")
    try:
        return load_dataset(name, config)
    except Exception as exc:  # datasets raises many kinds: offline, unknown name, bad config, bad files
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        if offline() and not Path(name).exists():
            raise DataError(
                f"{where} is not in the local datasets cache and downloads are off ({reason}); "
                f"run once with LSTM_BENCH_ONLINE=1 to cache it, or {instead}"
            ) from None
        raise DataError(
            f"{where} could not be loaded ({reason}); check its name and config, or {instead}"
        ) from None


def download(url: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(dest.suffix + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as resp, open(tmp, "wb") as out:
            out.write(resp.read())
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"could not download {url} ({exc}); download it by hand and set {DATA_ENV}") from None
    os.replace(tmp, dest)
    return dest
