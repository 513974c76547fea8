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
            raise DataError(f"data file {path} does not exist; fix the path, or set {DATA_ENV} to a folder holding {relative}")
    if offline():
        raise DataError(f"{relative} not found and downloads are off; set {DATA_ENV} to a folder holding "
                        f"{relative} (source: {url}), or LSTM_BENCH_ONLINE=1 to download it")
    return verify(download(url, CACHE / relative), sha, url)


def verify(path: Path, sha: str, url: str) -> Path:
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty; replace it with the file from {url}")
    got = sha256(path)
    if sha and got != sha:
        raise DataError(f"data file {path} is corrupt (sha256 {got[:12]}… ≠ expected {sha[:12]}…); replace it with the file from {url}")
    return path


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
