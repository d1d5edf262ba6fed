"""Proxy mode: consent-gate in front of an image API (OpenAI Images, AUTOMATIC1111, ComfyUI).

    from gate.proxy import create_proxy_app
    app = create_proxy_app(gate, mode="openai", upstream="http://127.0.0.1:9000",
                           app_id="studio")

See ``docs/proxy.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["ProxySettings", "create_proxy_app", "run_proxy"]

if TYPE_CHECKING:
    from gate.proxy.app import create_proxy_app
    from gate.proxy.cli import run_proxy
    from gate.proxy.settings import ProxySettings

_LAZY = {"create_proxy_app": "gate.proxy.app", "run_proxy": "gate.proxy.cli",
         "ProxySettings": "gate.proxy.settings"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'gate.proxy' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
