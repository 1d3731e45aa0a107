"""Converting untrusted files in a worker process with a time limit and a memory limit per file.

A PDF or Word file can make its parser loop, allocate without end or crash. `ConverterProcess` sends each file
to a child (`python -m ingest.converters.worker`) and waits at most `timeout` seconds; the child caps its own
address space at `memory_mb` above what it uses at rest (`resource.setrlimit`). A file over either limit, or one
that kills the child, raises `ConversionError` with the reason, the child is replaced, and ingest goes on with
the next file. The child stays up between files, so its start-up (about half a second) is paid once.

Protocol: the parent writes a length-prefixed pickle (converter name, bytes, path) to the child's stdin; the
child answers on its original stdout ("ok", fields of `Converted`) or ("error", reason). The child's fd 1 is
pointed at stderr, so nothing a library prints can corrupt an answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

from ingest.converters import CONVERTERS, ConversionError, Converted

_HEADER = struct.Struct("!Q")
_PRELOAD = ("pypdfium2", "docx", "trafilatura", "yaml")  # imported before the memory cap is set
_OUT_OF_MEMORY = 3  # the child's exit code when it ran out of memory
STARTUP_SECONDS = 60.0  # for the child's imports, on a busy machine


class LimitExceeded(ConversionError):
    """The file hit the time or memory limit, or killed the converter (not cached: the limits may change)."""


class ConverterProcess:
    """A converter child process, started on first use and replaced after a timeout or a crash. Thread-safe."""

    def __init__(self, *, timeout: float, memory_mb: int) -> None:
        self.timeout = timeout
        self.memory_mb = memory_mb
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> ConverterProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def convert(self, name: str, data: bytes, path: str) -> Converted:
        """`CONVERTERS[name].convert(data, path)` in the child; ConversionError for anything that went wrong."""
        with self._lock:
            try:
                proc = self._start()
            except (OSError, EOFError, TimeoutError, struct.error):
                code = self._kill()
                raise LimitExceeded(f"the converter process did not start (exit code {code})") from None
            deadline = time.monotonic() + self.timeout
            try:
                _write_frame(proc.stdin, pickle.dumps((name, data, path), protocol=pickle.HIGHEST_PROTOCOL))
                status, payload = pickle.loads(_read_frame(proc.stdout, deadline))
            except TimeoutError:
                self._kill()
                raise LimitExceeded(f"conversion took longer than {self.timeout:g} s and was stopped") from None
            except (OSError, EOFError, pickle.UnpicklingError, struct.error):
                code = self._kill(grace=2.0)
                raise LimitExceeded(_death_reason(code, self.memory_mb)) from None
        if status == "ok":
            return Converted(**payload)
        if status == "fatal":  # out of memory: the child exits so the next file gets a clean one
            with self._lock:
                self._kill(grace=2.0)
            raise LimitExceeded(str(payload))
        raise ConversionError(str(payload))

    def close(self) -> None:
        """Stop the child (idempotent)."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is None:
                return
            with contextlib.suppress(OSError):
                proc.stdin.close()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            with contextlib.suppress(OSError):
                proc.stdout.close()

    def _start(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            # the child imports this package from where the parent did, whatever its working directory
            root = str(Path(__file__).resolve().parents[2])
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "ingest.converters.worker", str(self.memory_mb)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
                env=env,
            )
            # the time limit counts from a child that is ready, not from its imports
            _read_frame(self._proc.stdout, time.monotonic() + STARTUP_SECONDS)
        return self._proc

    def _kill(self, grace: float = 0.0) -> int | None:
        """Stop the child; with `grace`, first give a dying child that long to report its own exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace)
        with contextlib.suppress(OSError):
            proc.kill()
        code = proc.wait()
        for stream in (proc.stdin, proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        return code


def _death_reason(code: int | None, memory_mb: int) -> str:
    if code == _OUT_OF_MEMORY:
        return f"ran out of memory (over the {memory_mb} MB limit per file)"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the converter crashed on this file ({name}; memory limit {memory_mb} MB)"
    return f"the converter stopped on this file (exit code {code}; memory limit {memory_mb} MB)"


def _write_frame(stream: BinaryIO | None, payload: bytes) -> None:
    assert stream is not None
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def _read_exact(fd: int, size: int, deadline: float | None) -> bytes:
    chunks: list[bytes] = []
    while size:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the other side closed the pipe")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _read_frame(stream: BinaryIO | None, deadline: float | None) -> bytes:
    assert stream is not None
    fd = stream.fileno()
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size, deadline))
    return _read_exact(fd, size, deadline)


# ---------------------------------------------------------------------------------------------- the child


def _cap_memory(memory_mb: int) -> None:
    """Limit the address space to what the process maps now plus `memory_mb`."""
    import resource

    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            mapped = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return  # not Linux: the time limit still holds
    limit = mapped + memory_mb * 1024 * 1024
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main(argv: list[str]) -> int:
    """Child: answer conversion requests from stdin until it closes."""
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, never into an answer
    requests = sys.stdin.buffer
    for module in _PRELOAD:
        with contextlib.suppress(ImportError):
            __import__(module)
    _cap_memory(int(argv[0]) if argv else 1024)
    _write_frame(answers, b"ready")
    while True:
        try:
            name, data, path = pickle.loads(_read_frame(requests, None))
        except EOFError:
            return 0
        except MemoryError:  # the file alone is over the limit
            return _OUT_OF_MEMORY
        fatal = False
        try:
            answer: tuple[str, object] = ("ok", dataclasses.asdict(CONVERTERS[name].convert(data, path)))
        except ConversionError as exc:
            answer = ("error", str(exc))
        except MemoryError:
            answer, fatal = ("fatal", f"ran out of memory (over the {argv[0]} MB limit per file)"), True
        except RecursionError:
            answer = ("error", "the file nests too deeply to read")
        except Exception as exc:  # any parser failure on a hostile file is a skip reason, not a crash  # noqa: BLE001
            answer = ("error", f"conversion failed ({type(exc).__name__}: {str(exc)[:200]})")
        del data
        try:
            _write_frame(answers, pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))
        except MemoryError:
            return _OUT_OF_MEMORY
        if fatal:
            return _OUT_OF_MEMORY


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
