"""Where MovieLens files come from: a directory (its format told by the files in it), a release
name (downloaded, checked against its md5 and cached) or the ML-100K copy inside the recbole wheel."""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import logging
import os
import re
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from armor.errors import DataError
from armor.io import atomic_path

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://files.grouplens.org/datasets/movielens"
DEFAULT_CACHE_DIR = Path.home() / ".cache" / "armor" / "movielens"

# None: verified against GroupLens' published `{url}.md5` sidecar at download time, because these
# releases are re-cut now and then and a pinned digest here would go stale.
KNOWN_DATASETS: dict[str, tuple[str, str | None]] = {
    "ml-100k": (f"{DEFAULT_BASE_URL}/ml-100k.zip", "0e33842e24a9c977be4e0107933c0723"),
    "ml-1m": (f"{DEFAULT_BASE_URL}/ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906"),
    "ml-20m": (f"{DEFAULT_BASE_URL}/ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3"),
    "ml-25m": (f"{DEFAULT_BASE_URL}/ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada"),
    "ml-32m": (f"{DEFAULT_BASE_URL}/ml-32m.zip", None),
    "ml-latest-small": (f"{DEFAULT_BASE_URL}/ml-latest-small.zip", None),
    "ml-latest": (f"{DEFAULT_BASE_URL}/ml-latest.zip", None),
}

EMBEDDED = "embedded"
FORMATS = ("ml-100k", "ml-100k-atomic", "ml-1m", "ml-latest")

# What each format needs, in the words of the error message. Detection tries them in this order.
_REQUIRED: dict[str, tuple[str, ...]] = {
    "ml-latest": ("ratings.csv", "movies.csv"),
    "ml-1m": ("ratings.dat", "movies.dat"),
    "ml-100k": ("u.data", "u.item"),
}
_NEEDS = {
    "ml-100k": "u.data + u.item",
    "ml-100k-atomic": "<name>.inter + <name>.item (RecBole atomic files)",
    "ml-1m": "ratings.dat + movies.dat (users.dat is not read)",
    "ml-latest": "ratings.csv + movies.csv (+ links.csv for IMDb/TMDB ids)",
}


class DownloadError(DataError):
    """The release could not be fetched (network, HTTP status, timeout): not a corrupt download."""


# --------------------------------------------------------------------------------------------
# Detection


def detect_format(directory: str | Path) -> str:
    """Return "ml-100k", "ml-100k-atomic", "ml-1m" or "ml-latest" from the files in ``directory``."""
    return detect_files(Path(directory))[0]


def detect_files(directory: Path) -> tuple[str, dict[str, Path]]:
    if not directory.is_dir():
        raise DataError("not a directory; expected a MovieLens directory (" + _needs_text() + ")", directory)
    names = {p.name for p in directory.iterdir() if p.is_file()}
    found: list[tuple[str, dict[str, Path]]] = []
    partial: list[tuple[str, list[str]]] = []
    for fmt, required in _REQUIRED.items():
        missing = [f for f in required if f not in names]
        if not missing:
            files = {"ratings": directory / required[0], "movies": directory / required[1]}
            if fmt == "ml-latest" and "links.csv" in names:
                files["links"] = directory / "links.csv"
            found.append((fmt, files))
        elif len(missing) < len(required):
            partial.append((fmt, missing))

    inter = {n[: -len(".inter")] for n in names if n.endswith(".inter")}
    item = {n[: -len(".item")] for n in names if n.endswith(".item")}
    pairs = sorted(inter & item)
    if pairs:
        stem = directory.name if directory.name in pairs else pairs[0]
        if len(pairs) > 1:
            log.warning("%s holds several atomic pairs %s; using %s", directory, pairs, stem)
        found.append(("ml-100k-atomic", {"ratings": directory / f"{stem}.inter",
                                         "movies": directory / f"{stem}.item"}))
    elif inter:
        # A lone .item is no evidence (ml-100k's u.item is one); a lone .inter is.
        partial.append(("ml-100k-atomic", [f"{sorted(inter)[0]}.item"]))

    if found:
        if len(found) > 1:
            log.warning("%s matches several MovieLens formats %s; using %s", directory,
                        [f for f, _ in found], found[0][0])
        return found[0]
    if partial:
        fmt, missing = partial[0]
        raise DataError(f"incomplete MovieLens directory: looks like {fmt} but {', '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} missing. Formats and the files they need: "
                        + _needs_text(), directory)
    hint = ""
    subdirs = [d for d in sorted(directory.iterdir()) if d.is_dir() and _quiet_detect(d)]
    if subdirs:
        hint = f" Did you mean the subdirectory {subdirs[0]}?"
    raise DataError("no MovieLens files found. Formats and the files they need: " + _needs_text() + "." + hint,
                    directory)


def _needs_text() -> str:
    return "; ".join(f"{fmt}: {needs}" for fmt, needs in _NEEDS.items())


def _quiet_detect(directory: Path) -> str | None:
    try:
        return detect_files(directory)[0]
    except DataError:
        return None


def find_data_dir(root: Path) -> Path:
    """``root`` itself or its one subdirectory holding a known format (release zips have a top folder)."""
    if _quiet_detect(root):
        return root
    for sub in sorted(root.iterdir()) if root.is_dir() else []:
        if sub.is_dir() and not sub.name.startswith((".", "__MACOSX")) and _quiet_detect(sub):
            return sub
    detect_files(root)  # raises the detailed message
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# The embedded copy, downloads and name resolution


def embedded_ml100k_dir() -> Path:
    """The ML-100K atomic files inside the installed recbole package (found without importing it)."""
    # Importing recbole would pull torch extensions and other heavy deps; find_spec only locates it.
    try:
        spec = importlib.util.find_spec("recbole")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        raise DataError("the embedded ML-100K ships inside the recbole wheel, which is not installed; run "
                        "`pip install --no-deps recbole==1.2.1`, or pass a MovieLens directory or release name")
    directory = Path(spec.origin).parent / "dataset_example" / "ml-100k"
    if not (directory / "ml-100k.inter").is_file() or not (directory / "ml-100k.item").is_file():
        raise DataError("the installed recbole has no dataset_example/ml-100k atomic files; reinstall it with "
                        "`pip install --no-deps --force-reinstall recbole==1.2.1`", directory)
    return directory


_NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException, TimeoutError)


def _network_error(url: str, exc: BaseException) -> DownloadError:
    reason = getattr(exc, "reason", None) or exc
    return DownloadError(f"could not download {url}: {reason}. Check the network, pass a mirror as base_url "
                         "(--base-url), or download and unzip the release yourself and pass its directory")


def _expected_md5(name: str, url: str, checksums: Mapping[str, str | None] | None, timeout: float) -> str:
    if checksums is not None and name in checksums:
        md5 = checksums[name]
    else:
        md5 = KNOWN_DATASETS[name][1]
    if md5 is not None:
        return md5.lower()
    sidecar = f"{url}.md5"
    try:
        with urllib.request.urlopen(sidecar, timeout=timeout) as resp:
            text = resp.read(4096).decode("ascii", errors="replace")
    except _NETWORK_ERRORS as exc:
        raise _network_error(sidecar, exc) from exc
    # GroupLens' sidecars hold the hex digest, possibly followed (or preceded, BSD style) by the file name.
    found = re.search(r"\b[0-9a-fA-F]{32}\b", text)
    if found is None:
        raise DataError(f"the checksum file {sidecar} holds no md5 digest: {text[:80]!r}")
    return found.group(0).lower()


def _safe_extract(zip_path: Path, target: Path, url: str) -> None:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            members = zf.infolist()
            for info in members:
                name = info.filename.replace("\\", "/")
                parts = PurePosixPath(name).parts
                if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
                    raise DataError(f"refusing to extract {url}: member {info.filename!r} would be written "
                                    "outside the target directory")
            zf.extractall(target, members)
    except zipfile.BadZipFile as exc:
        raise DataError(f"{url} is not a valid zip file: {exc}") from exc


def download_movielens(name: str, cache_dir: str | Path, *, base_url: str = DEFAULT_BASE_URL,
                       timeout: float = 30.0, checksums: Mapping[str, str | None] | None = None) -> Path:
    """Download release ``name``, verify its md5, extract it into ``cache_dir/name``; return the data directory.

    ``checksums`` overrides the expected md5 per name (None: use the ``.md5`` sidecar). Network failures
    raise DownloadError; a checksum mismatch or unsafe zip raises DataError. Either way nothing is left
    in the cache: the zip goes to a temporary name and the tree is renamed into place only when complete.
    """
    from tqdm import tqdm

    if name not in KNOWN_DATASETS:
        raise DataError(f"unknown MovieLens release {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    cache_dir = Path(cache_dir).expanduser()
    url = f"{base_url.rstrip('/')}/{name}.zip"
    expected = _expected_md5(name, url, checksums, timeout)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, part_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".zip.part", dir=cache_dir)
    part = Path(part_name)
    try:
        try:
            resp = urllib.request.urlopen(url, timeout=timeout)
        except _NETWORK_ERRORS as exc:
            raise _network_error(url, exc) from exc
        digest = hashlib.md5()
        received = 0
        with resp, os.fdopen(fd, "wb") as out:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                      disable=None) as bar:
                while True:
                    try:
                        chunk = resp.read(1 << 20)
                    except _NETWORK_ERRORS as exc:
                        raise _network_error(url, exc) from exc
                    if not chunk:
                        break
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"could not download {url}: connection closed after {received} of {total} bytes")
        actual = digest.hexdigest()
        if actual != expected:
            raise DataError(f"checksum mismatch for {url}: expected md5 {expected}, got {actual}. The download "
                            "is corrupt or the file changed upstream; retry, or check the mirror")
        log.info("downloaded %s (%d bytes, md5 %s)", url, received, actual)
        target = cache_dir / name
        with atomic_path(target) as tmp:
            tmp.mkdir()
            _safe_extract(part, tmp, url)
            relative = find_data_dir(tmp).relative_to(tmp)
        return target / relative
    finally:
        part.unlink(missing_ok=True)


def resolve_movielens(spec: str | Path, cache_dir: str | Path, *, base_url: str = DEFAULT_BASE_URL,
                      offline: bool = False, checksums: Mapping[str, str | None] | None = None) -> Path:
    """Turn a directory, a release name or "embedded" into a directory holding MovieLens files.

    A release already in ``cache_dir`` is used as is. ``ml-100k`` falls back to the embedded copy when
    offline or when the download fails for network reasons (never on a checksum mismatch).
    """
    text = str(spec)
    if text == EMBEDDED:
        return embedded_ml100k_dir()
    path = Path(text).expanduser()
    if path.is_dir():
        return find_data_dir(path)
    if text not in KNOWN_DATASETS:
        if "/" in text or os.sep in text or path.exists():
            raise DataError(f"no such directory (or not a directory): {path}. Pass a MovieLens directory, or a "
                            f"release name: {', '.join(KNOWN_DATASETS)}, or {EMBEDDED!r}")
        raise DataError(f"{text!r} is neither a directory nor a known MovieLens release; known releases: "
                        f"{', '.join(KNOWN_DATASETS)}, or {EMBEDDED!r} for the ML-100K copy in the recbole wheel")
    cached = Path(cache_dir).expanduser() / text
    if cached.is_dir():
        try:
            return find_data_dir(cached)
        except DataError:
            log.warning("cached %s at %s holds no MovieLens files; fetching it again", text, cached)
    if offline:
        if text == "ml-100k":
            directory = embedded_ml100k_dir()
            log.warning("offline and ml-100k is not cached in %s; using the embedded copy at %s", cache_dir,
                        directory)
            return directory
        raise DataError(f"offline and {text} is not in the cache {cached}; run once without --offline, or "
                        "download and unzip it yourself and pass its directory")
    try:
        return download_movielens(text, cache_dir, base_url=base_url, checksums=checksums)
    except DownloadError as exc:
        if text != "ml-100k":
            raise
        directory = embedded_ml100k_dir()
        log.warning("%s; using the embedded ML-100K at %s", exc, directory)
        return directory
