import pytest
from openai import OpenAI

from tests.harmony_process import HarmonyProcess


@pytest.fixture(scope="session")
def harmony():
    """`harmony serve` with the embedded default config, as the README starts it."""
    process = HarmonyProcess().start()
    yield process
    assert process.stop() == 0, process.output()


@pytest.fixture(scope="session")
def client(harmony):
    return OpenAI(base_url=harmony.url + "/v1", api_key="not-needed", max_retries=0, timeout=120)
