"""A real schema registry on one machine without Docker: Apicurio Registry with in-memory storage.

Serves the Confluent API under `/apis/ccompat/v7` for `schemas.codec.Codec(registry_url)`; fetched once with
Maven into `<cache>/registry/<version>`. `LocalRegistry.start()` returns the URL once ready, `stop()` ends
its JVM. The version choice: docs/DECISIONS.md, "Runtime"."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from rtmsflow.jvm import HOST, find_java, free_port, locked, tail
from rtmsflow.logs import get_logger
from rtmsflow.settings import default_cache_dir

log = get_logger(__name__)

APICURIO_VERSION = "2.6.13.Final"
CCOMPAT_PATH = "/apis/ccompat/v7"
_ARTIFACT = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
_DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
_COMPLETE = ".complete"


class RegistryStartError(RuntimeError):
    """The local registry could not be fetched, started or stopped; the message says what to do."""


class LocalRegistry:
    """One Apicurio Registry process on a free 127.0.0.1 port: `fetch()`, `start()`, `stop()`,
    or `with LocalRegistry(state_dir) as url: ...`.

    `cache_dir` holds the unpacked application (shared); `state_dir` holds this process's pid file
    and console log (default `<cache>/registry/state`)."""

    def __init__(
        self,
        state_dir: Path | str | None = None,
        *,
        cache_dir: Path | str | None = None,
        heap: str = "384m",
    ) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir() / "registry" / APICURIO_VERSION
        self.state_dir = Path(state_dir) if state_dir else default_cache_dir() / "registry" / "state"
        self.heap = heap
        self.port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def app_dir(self) -> Path:
        """The unpacked application: the runner jar and its lib/."""
        return self.cache_dir / "app"

    @property
    def runner_jar(self) -> Path:
        return self.app_dir / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"

    @property
    def console_file(self) -> Path:
        """The JVM's stdout/stderr (Quarkus logs, start-up failures)."""
        return self.state_dir / "registry.out"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "registry.pid"

    @property
    def base_url(self) -> str:
        """The server's root URL (health checks, Apicurio's own API)."""
        if self.port is None:
            raise RegistryStartError("the registry is not started")
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The Confluent-compatible API: the value for RTMSFLOW_SCHEMA_REGISTRY_URL / `Codec(url)`."""
        return self.base_url + CCOMPAT_PATH

    # -- application ---------------------------------------------------------------------------

    def fetch(self) -> Path:
        """Make sure the application is unpacked in the cache; fetch it with Maven if not."""
        with locked(self.cache_dir):
            if (self.app_dir / _COMPLETE).exists() and self.runner_jar.exists():
                return self.app_dir
            mvn = shutil.which("mvn")
            if mvn is None:
                raise RegistryStartError(
                    "Maven (`mvn`) is needed once to fetch Apicurio Registry from Maven Central; "
                    "install it (e.g. `apt-get install maven` or `brew install maven`)"
                )
            download = self.cache_dir / f"download.tmp-{os.getpid()}"
            unpack = self.cache_dir / f"app.tmp-{os.getpid()}"
            for tmp in (download, unpack):
                shutil.rmtree(tmp, ignore_errors=True)
            cmd = [
                mvn,
                "-q",
                "-B",
                "--strict-checksums",
                f"{_DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact={_ARTIFACT}",
                f"-DoutputDirectory={download}",
            ]
            log.info(
                "fetching Apicurio Registry", extra={"version": APICURIO_VERSION, "into": str(self.app_dir)}
            )
            result = subprocess.run(
                cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False
            )
            archives = sorted(download.glob("*.tar.gz")) if download.exists() else []
            if result.returncode != 0 or len(archives) != 1:
                shutil.rmtree(download, ignore_errors=True)
                tail = (result.stdout + result.stderr).strip()[-2000:]
                raise RegistryStartError(
                    f"fetching {_ARTIFACT} with Maven failed (exit {result.returncode}); check network "
                    f"access to Maven Central (or your ~/.m2/settings.xml mirror):\n{tail}"
                )
            try:
                with tarfile.open(archives[0]) as tar:
                    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4: refuse links out of the tree
                        tar.extractall(unpack, filter="data")
                    else:
                        tar.extractall(unpack)  # noqa: S202 (checksum-verified Maven Central artifact)
            except (tarfile.TarError, OSError) as exc:
                shutil.rmtree(unpack, ignore_errors=True)
                raise RegistryStartError(f"unpacking {archives[0].name} failed: {exc}") from exc
            finally:
                shutil.rmtree(download, ignore_errors=True)
            if not (unpack / self.runner_jar.name).exists():
                shutil.rmtree(unpack, ignore_errors=True)
                raise RegistryStartError(f"{_ARTIFACT} has no {self.runner_jar.name}")
            (unpack / _COMPLETE).write_text(APICURIO_VERSION + "\n")
            shutil.rmtree(self.app_dir, ignore_errors=True)
            unpack.rename(self.app_dir)
            return self.app_dir

    # -- process -------------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> str:
        """Fetch if needed, start the registry on a free port and return `url` once it is ready.
        Idempotent while this object's process runs."""
        if self._proc is not None and self._proc.poll() is None:
            return self.url
        self.fetch()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        cmd = [
            find_java("the schema registry"),
            f"-Xmx{self.heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dquarkus.http.host={HOST}",
            f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.log.console.color=false",
            # Names this state dir on the command line, so `ps` tells whose registry it is.
            f"-Drtmsflow.registry.state={self.state_dir}",
            "-jar",
            str(self.runner_jar),
        ]
        with self.console_file.open("ab") as console:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT, cwd=self.state_dir
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        log.info("schema registry starting", extra={"pid": self._proc.pid, "port": self.port})
        try:
            self._wait_ready(timeout)
        except RegistryStartError:
            self.stop()
            raise
        return self.url

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready = f"{self.base_url}/health/ready"
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RegistryStartError(
                    f"the registry exited with code {self._proc.returncode} while starting; "
                    f"last output:\n{self._tail()}"
                )
            try:
                with urllib.request.urlopen(ready, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise RegistryStartError(
            f"the registry did not get ready on {ready} within {timeout:.0f} s:\n{self._tail()}"
        )

    def _tail(self, lines: int = 30) -> str:
        return tail((self.console_file,), lines)

    def pid(self) -> int | None:
        """The pid of the running registry this object started, else None."""
        if self._proc is None or self._proc.poll() is not None:
            return None
        return self._proc.pid

    def stop(self, timeout: float = 20.0) -> bool:
        """Stop the process this object started: SIGTERM, then SIGKILL after `timeout` seconds.
        Returns False if nothing was running. Idempotent."""
        proc, self._proc = self._proc, None
        self.pid_file.unlink(missing_ok=True)
        if proc is None:
            return False
        if proc.poll() is not None:
            return False
        log.info("schema registry stopping", extra={"pid": proc.pid})
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("schema registry did not stop on SIGTERM, killing it", extra={"pid": proc.pid})
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        return True

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
