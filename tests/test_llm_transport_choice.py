"""Which transport `http_client="auto"` picks, and that the direct transport sends what the SDK would: the key, the
organisation and project headers from the SDK's variables, the query string, through the environment's proxy."""

from __future__ import annotations

import pytest

from simenv.llm.chat_transport import env_proxy, is_openai_api
from simenv.llm.openai_backend import OpenAIBackend, auto_http_client
from tests.fixtures_llm import echo_request
from tests.servers.fault_server import FaultServer


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (None, "aiohttp"),  # the SDK's default endpoint is OpenAI's API
        ("https://api.openai.com/v1", "aiohttp"),
        ("https://API.OpenAI.com/v1/", "aiohttp"),
        ("http://127.0.0.1:8080/v1", "direct"),
        ("https://vllm.lab.example:8000/v1", "direct"),
        ("https://api.openai.com.evil.example/v1", "direct"),  # a look-alike host is not OpenAI's API
    ],
)
def test_auto_keeps_the_sdk_for_openai_and_goes_direct_elsewhere(
    base_url: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert OpenAIBackend(model="m", base_url=base_url).http_client == expected
    assert is_openai_api(base_url) == (expected == "aiohttp")


def test_auto_with_several_endpoints_uses_the_sdk_if_any_is_openai() -> None:
    assert auto_http_client(("http://10.0.0.1/v1", "http://10.0.0.2/v1")) == "direct"
    assert auto_http_client(("http://10.0.0.1/v1", "https://api.openai.com/v1")) == "aiohttp"
    assert OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1", http_client="httpx").http_client == "httpx"


@pytest.mark.parametrize("http_client", ["aiohttp", "direct"])
def test_both_transports_send_the_organisation_and_project_from_the_sdk_variables(
    http_client: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-transport-test")
    monkeypatch.setenv("OPENAI_ORG_ID", "org-simrec")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj-simrec")
    with FaultServer() as server:
        backend = OpenAIBackend(
            model="m", base_url=server.base_url + "?tenant=a", max_retries=0, http_client=http_client
        )
        response = backend.complete(echo_request(0))
        backend.close()
    assert response.ok and server.stats["ok"] == 1
    assert server.authorizations == {"Bearer sk-transport-test"}
    assert server.openai_headers == {("org-simrec", "proj-simrec")}
    (agent,) = server.user_agents  # the SDK's own, or ours: never none (some gateways refuse a request without)
    assert agent.startswith("AsyncOpenAI/Python" if http_client == "aiohttp" else "simrec")


def test_direct_sends_no_organisation_headers_when_the_variables_are_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_ORG_ID", raising=False)
    monkeypatch.delenv("OPENAI_PROJECT_ID", raising=False)
    with FaultServer() as server:
        backend = OpenAIBackend(model="m", base_url=server.base_url, max_retries=0)
        assert backend.http_client == "direct"
        assert backend.complete(echo_request(1)).ok
        backend.close()
    assert server.openai_headers == {("", "")}


def test_the_direct_transport_takes_its_proxy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    assert env_proxy("https://vllm.lab.example/v1/chat/completions") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.lab.example:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,.internal.example")
    assert env_proxy("https://vllm.lab.example/v1/chat/completions") == "http://proxy.lab.example:3128"
    assert env_proxy("http://vllm.lab.example/v1/chat/completions") is None  # no HTTP_PROXY set
    assert env_proxy("https://gpu.internal.example/v1/chat/completions") is None  # exempt by NO_PROXY
    monkeypatch.setenv("ALL_PROXY", "http://all.lab.example:3128")
    assert env_proxy("http://vllm.lab.example/v1/chat/completions") == "http://all.lab.example:3128"
    assert env_proxy("https://vllm.lab.example/v1/chat/completions") == "http://proxy.lab.example:3128"
