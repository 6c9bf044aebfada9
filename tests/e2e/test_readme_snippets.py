"""The README's web3.py, ethers and viem snippets run as written against the real service.

Each snippet is taken from README.md's code blocks (those that talk to
``http://127.0.0.1:8650/TOKEN``), pointed at the test service's URL and token, and run: the
Python one with this interpreter, the JavaScript ones as ES modules next to a ``node_modules``
link to the ethers and viem ``make setup`` installed. Each must print the hash of a mined
transfer with a successful status.
"""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import pytest

from broadcaster.dev.stack import DevStack, dev_stack
from tests.e2e.test_api_clients_reorg import RECIPIENT, js_clients_dir

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PLACEHOLDER = "127.0.0.1:8650/TOKEN"


def snippets() -> dict[str, str]:
    blocks = re.findall(r"```(python|js)\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = {}
    for language, code in blocks:
        if PLACEHOLDER not in code:
            continue
        name = "web3" if language == "python" else ("ethers" if "ethers" in code else "viem")
        found[name] = code
    return found


def test_the_readme_has_the_three_snippets() -> None:
    assert sorted(snippets()) == ["ethers", "viem", "web3"]


@pytest.mark.parametrize("name", ["web3", "ethers", "viem"])
async def test_a_readme_snippet_runs_as_written(tmp_path: Path, name: str) -> None:
    code = snippets()[name]
    async with dev_stack(tmp_path / "stack") as stack:
        await run(stack, tmp_path, name, code)


async def run(stack: DevStack, tmp_path: Path, name: str, code: str) -> None:
    code = code.replace(PLACEHOLDER, f"127.0.0.1:{stack.service.api_port}/{stack.token}")
    if name == "web3":
        script = tmp_path / "bot.py"
        argv = [sys.executable, str(script)]
    else:
        script = tmp_path / "bot.mjs"
        (tmp_path / "node_modules").symlink_to(js_clients_dir(), target_is_directory=True)
        argv = ["node", str(script)]
    script.write_text(code)
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()[-3000:]
    tx_hash, status = out.decode().split()[-2:]
    assert status in ("1", "success")
    receipt = await stack.node.rpc("eth_getTransactionReceipt", tx_hash)
    assert receipt["status"] == "0x1" and receipt["to"].lower() == RECIPIENT.lower()
