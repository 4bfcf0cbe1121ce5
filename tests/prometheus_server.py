"""A real Prometheus (Debian's ``prometheus`` package, installed by tests/debian.py when missing) scraping a real
``harmony serve`` every second: the router's ``/metrics`` and its ``/metrics/services`` (the model services, which
listen on Unix sockets in ``harmony serve``), with the alert rules loaded. Shared by the dashboard and the alert tests
through the session fixtures ``prometheus`` and ``loaded`` (after a short load); ``PrometheusServer`` starts one on
any targets.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from tests.debian import ensure_package
from tests.harmony_load import TEXT, short_load, transcribe
from tests.servers import free_port
from tests.speech import synthesize, wav_bytes

SCRAPE_INTERVAL = "1s"
ALERT_RULES = Path(__file__).resolve().parents[1] / "deploy/alerts/harmony.rules.yaml"


def prometheus_binary() -> str:
    return ensure_package(["prometheus"], "prometheus", what="Prometheus")


def promtool_binary() -> str:
    """``promtool`` (the same Debian package): ``check rules``, ``test rules``."""
    ensure_package(["prometheus"], "prometheus", what="Prometheus")
    return ensure_package(["promtool"], "prometheus", what="promtool")


def harmony_scrape_configs(url: str) -> list[dict]:
    """The jobs that scrape a ``harmony serve`` at ``url``: its router, and its model services through it."""
    target = urlsplit(url).netloc
    return [{"job_name": "harmony-router", "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]},
            {"job_name": "harmony-services", "metrics_path": "/metrics/services",
             "static_configs": [{"targets": [target]}]}]


class PrometheusServer:
    def __init__(self, scrape_configs: list[dict], rule_files: list[str] | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": SCRAPE_INTERVAL, "evaluation_interval": SCRAPE_INTERVAL},
                  "scrape_configs": scrape_configs, "rule_files": rule_files or []}
        self.config = self.dir / "prometheus.yml"
        self.config.write_text(yaml.safe_dump(config))
        self.log = self.dir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        self._log_handle = open(self.log, "wb")
        self.proc = subprocess.Popen(
            [prometheus_binary(), f"--config.file={self.config}", f"--storage.tsdb.path={self.dir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
            stdout=self._log_handle, stderr=subprocess.STDOUT)
        self.wait(lambda: httpx.get(self.url + "/-/ready", timeout=2).status_code == 200, timeout, "ready")
        return self

    def wait(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if condition():
                    return
            except httpx.HTTPError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log.read_text(errors='replace')[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus: not {what} within {timeout} s")
            time.sleep(0.2)

    def query(self, expr: str) -> list[dict]:
        """An instant query's result (``/api/v1/query``), now."""
        answer = httpx.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10).json()
        assert answer["status"] == "success", (expr, answer)
        return answer["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30.0, until: Callable[[list[dict]], bool] = bool) -> list[dict]:
        """The query's result once it is not empty (or once ``until`` holds of it)."""
        found: list[dict] = []

        def some() -> bool:
            found[:] = self.query(expr)
            return until(found)

        try:
            self.wait(some, timeout, f"data for {expr}")
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; its last result: {found}") from None
        return found

    def scraped_after(self, moment: float, timeout: float = 30.0) -> None:
        """Every target scraped successfully after the wall-clock ``moment``."""
        def fresh() -> bool:
            targets = httpx.get(self.url + "/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
            return bool(targets) and all(t["health"] == "up" and _time(t["lastScrape"]) > moment for t in targets)

        self.wait(fresh, timeout, f"scraped after {moment}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self._log_handle.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _time(rfc3339: str) -> float:
    """Prometheus's RFC 3339 times (nanoseconds, Z or an offset) as a Unix time."""
    from datetime import datetime

    stamp, fraction, zone = re.fullmatch(r"([^.]+?)(\.\d+)?(Z|[+-]\d\d:\d\d)", rfc3339).groups()  # type: ignore
    seconds = datetime.fromisoformat(stamp + ("+00:00" if zone == "Z" else zone)).timestamp()
    return seconds + float(fraction or 0)


@pytest.fixture(scope="session")
def prometheus(harmony):
    """A Prometheus scraping the session's ``harmony serve`` (tests/e2e/conftest.py) every second, evaluating the
    alert rules (deploy/alerts/harmony.rules.yaml) as often."""
    server = PrometheusServer(harmony_scrape_configs(harmony.url), rule_files=[str(ALERT_RULES)]).start()
    server.wait_for('up{job="harmony-services"} == 1')
    yield server
    server.stop()


@pytest.fixture(scope="session")
def loaded(harmony, prometheus):
    """The session's Prometheus once it has scraped ``harmony serve`` before and after a short load
    (tests/harmony_load.py). A rate needs a rise: a transcription and a ``/v1/models`` come before the first sample
    (their routes' series exist in it), and another ``/v1/models`` after the load."""
    assert transcribe(harmony.url, wav_bytes(*synthesize(TEXT))).status_code == 200
    assert httpx.get(harmony.url + "/v1/models", timeout=30).status_code == 200
    prometheus.scraped_after(time.time())  # a first sample of every counter before the load
    codes = short_load(harmony.url)
    assert codes == {"first": 200, "deadline": 429, "transcriptions": 200, "speech": 200, "vad": 200,
                     "bad_request": 400, "realtime": 200}, codes
    assert httpx.get(harmony.url + "/v1/models", timeout=30).status_code == 200
    prometheus.scraped_after(time.time() + 1)  # the load's last figures are in (a second's clock skew allowed)
    return prometheus
