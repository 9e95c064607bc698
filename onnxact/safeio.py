"""Writing files without losing the user's: atomic writes, no links followed, never over an input.

Why one module: every writer (reports, pictures, saved activations, ``check --json``) had its
own ``write_text`` / ``np.savez`` straight onto the final name, so an interrupted or failing run
(Ctrl-C, SIGTERM, a full disk) left a truncated file behind, a symlink planted at an output
name was followed and its target overwritten, and ``-o`` pointing at the input overwrote it.
Here:

* :func:`atomic_file` / :func:`write_bytes` / :func:`write_text` write to a fresh temporary
  name in the destination folder (``O_EXCL | O_NOFOLLOW``) and ``os.replace`` it onto the final
  name: readers see the old file or the whole new one, never a part, and an existing file's
  contents (or a hard link to an input) are never written into. A final name that is a
  symbolic link or a folder is refused, not followed.
* :func:`check_outputs` refuses, before any work, an output that is (or would replace) an input.
* :func:`output_folder` is the report-folder policy of ``inspect``: everything is written into a
  staging folder and moved into place only when the run succeeds; an existing non-empty folder
  that onnxact did not make is refused unless ``force``; an earlier onnxact report (known by
  its ``onnxact-report.json`` manifest) is replaced as a whole, keeping files the user added.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO

from .errors import OutputError

__all__ = ["atomic_file", "write_bytes", "write_text", "check_outputs", "output_folder", "REPORT_MANIFEST"]

#: The manifest that marks a folder as an onnxact report (and lists the files it wrote).
REPORT_MANIFEST = "onnxact-report.json"
_REPORT_FORMAT = "onnxact.report"
_STAGING_PREFIX = ".onnxact-partial-"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_BINARY = getattr(os, "O_BINARY", 0)
#: POSIX: every step is relative to an open folder descriptor, so no path is re-resolved between
#: the check and the write (a link swapped in meanwhile cannot redirect it).
_DIR_FD = os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd and bool(_DIRECTORY)


def _why(e: OSError) -> str:
    return e.strerror or str(e)


def _refuse_existing(st: os.stat_result | None, path: Path) -> None:
    if st is None:
        return
    if stat.S_ISLNK(st.st_mode):
        raise OutputError(f"{path} is a symbolic link; onnxact never writes through links: remove it or "
                          "choose another output path")
    if stat.S_ISDIR(st.st_mode):
        raise OutputError(f"{path} is a folder; give a file name for this output")


def _lstat(name: str, dir_fd: int | None) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file object whose contents replace ``path`` atomically when the block succeeds.

    The data goes to ``.NAME.RANDOM.tmp`` beside ``path``; on success it is renamed onto ``path``,
    on any exception (a full disk, Ctrl-C) it is deleted and ``path`` is left as it was.
    ``path`` may not be a symbolic link or a folder. OS errors become ``OutputError``.
    """
    p = Path(path)
    name = p.name
    if not name or name in (".", ".."):
        raise OutputError(f"{p} is not a file name; give a file name for this output")
    tmp = f".{name[:80]}.{secrets.token_hex(4)}.tmp"
    parent = p.parent
    dfd: int | None = None
    try:
        if _DIR_FD:
            dfd = os.open(parent, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
            where = (name, tmp)
        else:  # no folder descriptors (Windows): the same steps by path
            where = (str(p), str(parent / tmp))
        _refuse_existing(_lstat(where[0], dfd), p)
        fd = os.open(where[1], os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | _BINARY, 0o666,
                     dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                yield f
            _refuse_existing(_lstat(where[0], dfd), p)  # planted while we wrote: still refuse
            os.replace(where[1], where[0], src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(where[1], dir_fd=dfd)
            raise
    except OSError as e:
        raise OutputError(f"cannot write {p}: {_why(e)}; choose a writable folder with free space") from None
    finally:
        if dfd is not None:
            os.close(dfd)


def write_bytes(path: str | os.PathLike[str], data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_file`); returns ``path``."""
    with atomic_file(path) as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_file`); returns ``path``."""
    return write_bytes(path, text.encode(encoding))


# -------------------------------------------------------------------------------- outputs vs inputs
def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _inside(path: Path, folder: Path) -> bool:
    real, top = os.path.realpath(path), os.path.realpath(folder)
    return real == top or real.startswith(top.rstrip(os.sep) + os.sep)


def check_outputs(outputs: Mapping[str, str | os.PathLike[str] | None],
                  inputs: Mapping[str, Iterable[str | os.PathLike[str]]]) -> None:
    """Refuse (``OutputError``) before any work an output file that is an input or another output.

    ``outputs`` maps an option (``--json``) to its path (None = not asked for); ``inputs`` maps
    what the files are (``model``, ``image``) to their paths, iterated only for outputs that
    already exist (a file that does not exist yet cannot be an input). Paths are compared after
    resolving links, and by ``samefile`` (so a hard link to the model counts as the model).
    """
    given = {opt: Path(p) for opt, p in outputs.items() if p is not None}
    seen: dict[str, str] = {}
    for opt, p in given.items():
        real = os.path.realpath(p)
        if real in seen:
            raise OutputError(f"{opt} and {seen[real]} name the same file {p}; give each its own file")
        seen[real] = opt
    existing = {opt: p for opt, p in given.items() if os.path.lexists(p)}
    for p in existing.values():  # refused at write time anyway: say so before the work
        _refuse_existing(os.lstat(p), p)
    if not existing:
        return
    for what, paths in inputs.items():
        for inp in paths:
            for opt, p in existing.items():
                if _same(p, Path(inp)):
                    raise OutputError(f"{opt} {p} is the {what} {inp}; onnxact never writes over its inputs: "
                                      "choose another output file")


# -------------------------------------------------------------------------------- the report folder
def _read_manifest(folder: Path) -> list[str] | None:
    """The files an earlier onnxact report in ``folder`` lists, or None when it is not one."""
    try:  # a link planted as the manifest is not one (O_NOFOLLOW)
        with os.fdopen(os.open(folder / REPORT_MANIFEST, os.O_RDONLY | _NOFOLLOW | _CLOEXEC), "rb") as f:
            data = json.loads(f.read(1 << 22) or b"null")
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != _REPORT_FORMAT or not isinstance(data.get("files"), list):
        return None
    return [f for f in data["files"] if isinstance(f, str)]


def _safe_parts(rel: str) -> list[str] | None:
    parts = rel.split("/")
    if rel.startswith("/") or "\\" in rel or any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def _walk_files(top: Path) -> list[str]:
    out = []
    for dirpath, _dirs, files in os.walk(top):
        for f in files:
            out.append(Path(dirpath, f).relative_to(top).as_posix())
    return sorted(out)


def _open_dir(root_fd: int, parts: list[str], create: bool) -> int | None:
    """A descriptor of ``root/parts...`` reached without following any link (None if missing)."""
    fd = os.dup(root_fd)
    try:
        for part in parts:
            try:
                nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                os.mkdir(part, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
            except OSError as e:
                raise OutputError(f"'{part}' inside the output folder is a symbolic link or not a folder "
                                  f"({_why(e)}); onnxact never writes through links: remove it or choose "
                                  "another output folder") from None
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise


def _remove_listed(target: Path, files: list[str]) -> None:
    """Delete the files an earlier report listed, inside ``target`` only, through no link."""
    dirs: set[tuple[str, ...]] = set()
    root = os.open(target, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for rel in files:
            parts = _safe_parts(rel)
            if parts is None:
                continue
            try:
                fd = _open_dir(root, parts[:-1], create=False)
            except OutputError:
                continue  # a link where the report had a folder: leave it alone
            if fd is None:
                continue
            try:
                st = _lstat(parts[-1], fd)
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    os.unlink(parts[-1], dir_fd=fd)
            finally:
                os.close(fd)
            for i in range(1, len(parts)):
                dirs.add(tuple(parts[:i]))
        for d in sorted(dirs, key=len, reverse=True):  # folders it emptied, deepest first
            with contextlib.suppress(OSError):
                pfd = _open_dir(root, list(d[:-1]), create=False)
                if pfd is not None:
                    try:
                        os.rmdir(d[-1], dir_fd=pfd)
                    finally:
                        os.close(pfd)
    finally:
        os.close(root)


def _move_into(staging: Path, target: Path, check_only: bool = False) -> None:
    """Move every staged file into ``target`` (replacing same-named files), through no link.

    ``check_only`` walks the same way without changing anything, so a link planted at one of
    the names is refused before the first file moves.
    """
    root = os.open(target, os.O_RDONLY | _DIRECTORY | _CLOEXEC)
    try:
        for rel in _walk_files(staging):
            parts = rel.split("/")
            fd = _open_dir(root, parts[:-1], create=not check_only)
            if fd is None:
                continue
            try:
                _refuse_existing(_lstat(parts[-1], fd), target / rel)
                if not check_only:
                    os.replace(staging / rel, parts[-1], dst_dir_fd=fd)
            finally:
                os.close(fd)
    finally:
        os.close(root)


class OutputFolder:
    """Where a report is being written (``staging``) and where it will be (``path``)."""

    def __init__(self, path: Path, staging: Path, mode: str, old_files: list[str], made: list[Path]) -> None:
        self.path = path
        self.staging = staging
        self.mode = mode  # "new" (renamed into place), "replace" (an earlier report) or "force" (merged)
        self._old = old_files
        self._made = made

    def commit(self) -> Path:
        files = [f for f in _walk_files(self.staging) if f != REPORT_MANIFEST]
        write_text(self.staging / REPORT_MANIFEST, json.dumps(
            {"format": _REPORT_FORMAT, "format_version": 1, "files": [REPORT_MANIFEST, *files]}, indent=1))
        try:
            if self.mode == "new":
                os.replace(self.staging, self.path)  # POSIX also replaces an empty folder
            else:
                _move_into(self.staging, self.path, check_only=True)
                if self.mode == "replace":
                    _remove_listed(self.path, self._old)
                _move_into(self.staging, self.path)
                shutil.rmtree(self.staging, ignore_errors=True)
        except OSError as e:
            raise OutputError(f"cannot move the report into {self.path}: {_why(e)}") from None
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
        for d in reversed(self._made):  # folders created for -o a/b/c, when still empty
            with contextlib.suppress(OSError):
                d.rmdir()


@contextlib.contextmanager
def output_folder(path: str | os.PathLike[str], *, force: bool = False,
                  inputs: Mapping[str, Iterable[str | os.PathLike[str]]] | None = None) -> Iterator[OutputFolder]:
    """Stage a report for folder ``path``; it replaces what is there only if the block succeeds.

    Refuses (``OutputError``, before any work): a folder that holds one of ``inputs`` (the model,
    an image: replacing the folder would lose them), a path that is a file, and an existing
    non-empty folder without an onnxact report manifest unless ``force``. On success the staged
    files are moved in: a new (or empty) folder is renamed into place in one step; an earlier
    report's listed files are removed first (files the user added stay); with ``force`` the
    staged files replace same-named files and nothing else is touched. On any exception
    (including KeyboardInterrupt from Ctrl-C or SIGTERM) the staging folder is deleted and the
    destination is left as it was.
    """
    target = Path(path).expanduser()
    for what, paths in (inputs or {}).items():
        for inp in paths:
            if _inside(Path(inp), target):
                raise OutputError(f"the output folder {target} holds the {what} {inp}, which onnxact would "
                                  "replace; choose another output folder")
    st = _lstat(str(target), None)
    if st is not None and stat.S_ISLNK(st.st_mode):
        st = os.stat(target) if os.path.exists(target) else None  # the user's own link to a folder: follow it
        if st is None:
            raise OutputError(f"output folder {target} is a broken symbolic link; choose another output folder")
    made: list[Path] = []
    old: list[str] = []
    try:
        if st is None:
            mode = "new"
            parent = target.parent
            missing = []
            while not parent.exists():
                missing.append(parent)
                parent = parent.parent
            for d in reversed(missing):
                d.mkdir()
                made.append(d)
            staging = Path(os.path.realpath(target.parent)) / f"{_STAGING_PREFIX}{target.name[:60]}-{secrets.token_hex(4)}"
            staging.mkdir()
        elif not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"output folder {target} exists and is a file; choose a folder name")
        else:
            entries = [e for e in os.listdir(target) if not e.startswith(_STAGING_PREFIX)]
            listed = _read_manifest(target) if entries else None
            if not entries:
                mode = "force"  # an empty folder: merge keeps the user's folder itself (its permissions, links)
            elif listed is not None:
                mode, old = "replace", listed
            elif force:
                mode = "force"
            else:
                raise OutputError(f"output folder {target} already holds files that onnxact did not write; "
                                  "choose a new folder, or pass --force to write into it")
            staging = target / f"{_STAGING_PREFIX}{secrets.token_hex(4)}"
            staging.mkdir()
    except OSError as e:
        for d in reversed(made):
            with contextlib.suppress(OSError):
                d.rmdir()
        raise OutputError(f"cannot create output folder {target}: {_why(e)}; choose a writable folder") from None
    folder = OutputFolder(target, staging, mode, old, made)
    try:
        yield folder
        folder.commit()
    except BaseException:
        folder.abort()
        raise
