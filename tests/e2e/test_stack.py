"""`hotline up` as a newcomer runs it: a real process tree, stopped with Ctrl-C."""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from pathlib import Path

import httpx
import pytest

from hotline.chaos import isolated_stack_env
from hotline.supervisor import process_alive
from shared.auth.keyfile import KEYS_FILE_NAME, KeyRing
from tests.e2e.test_intake import ticket
from tests.support import eventually, read_topic, scratch_dir

pytestmark = [pytest.mark.e2e, pytest.mark.embedded]

SERVICES = ("intake", "dispatch", "followup", "metrics")


def descendants(root: int) -> set[int]:
    """Every live process below `root`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


class StackProcess:
    """`python -m hotline.cli up` in a temporary data folder, on free ports."""

    def __init__(self, *, simulator: bool = False, **extra_env: str) -> None:
        self.simulator = simulator
        self.data_dir = scratch_dir("up-")
        ports, env = isolated_stack_env(self.data_dir)
        self.ports: dict[str, int] = dict(ports)
        env.update(extra_env)
        self.env = env
        self.output: list[str] = []
        self.process: asyncio.subprocess.Process | None = None

    @classmethod
    def reusing(cls, earlier: StackProcess) -> StackProcess:
        """Another `hotline up` on the same data folder, ports and settings."""
        again = cls.__new__(cls)
        again.simulator = earlier.simulator
        again.data_dir = earlier.data_dir
        again.ports = earlier.ports
        again.env = earlier.env
        again.output = []
        again.process = None
        return again

    async def start(self, timeout: float = 90) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hotline.cli",
            "up",
            "--simulator" if self.simulator else "--no-simulator",
            env=self.env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        await self.wait_for_line("Ready.", timeout)

    async def wait_for_line(self, text: str, timeout: float) -> str:
        assert self.process is not None
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    raise AssertionError("hotline up ended:\n" + "".join(self.output))
                self.output.append(line)
                if text in line:
                    return line

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def auth(self, role, department=None) -> dict[str, str]:
        """The header of the stack's own key for `role`, from its keys file."""
        token = KeyRing.from_file(self.data_dir / KEYS_FILE_NAME).token(role, department)
        return {"Authorization": f"Bearer {token}"}

    def stack_env(self) -> dict[str, str]:
        lines = (self.data_dir / "stack.env").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    async def interrupt(self, timeout: float = 90) -> int:
        assert self.process is not None
        assert self.process.stdout is not None
        self.process.send_signal(signal.SIGINT)
        async with asyncio.timeout(timeout):
            rest = await self.process.stdout.read()
            self.output.append(rest.decode())
            return await self.process.wait()

    async def close(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)


async def test_hotline_up_serves_the_stack_and_ctrl_c_leaves_no_process_behind():
    stack = StackProcess(simulator=True, HOTLINE_SIMULATOR_RATE="5")
    try:
        await stack.start()
        summary = "".join(stack.output)
        for name in SERVICES:
            assert stack.url(name) in summary
        found = stack.stack_env()
        assert found["KAFKA_BOOTSTRAP_SERVERS"] in summary
        assert found["DATABASE_URL"] in summary
        async with httpx.AsyncClient() as client:
            for name in SERVICES:
                assert (await client.get(f"{stack.url(name)}/healthz")).status_code == 200
            evaluator = stack.auth("evaluator")
            created = await client.post(
                f"{stack.url('intake')}/tickets", json=ticket(), headers=evaluator
            )
            assert created.status_code == 201
            # Every key was printed with the URLs, and the keys file is the owner's only.
            assert evaluator["Authorization"].removeprefix("Bearer ") in summary
            assert (stack.data_dir / KEYS_FILE_NAME).stat().st_mode & 0o777 == 0o600

            # The simulator plays tickets too, so /rates moves without anyone typing curl.
            async def simulated_tickets_counted() -> bool:
                auditor = stack.auth("auditor")
                answer = await client.get(f"{stack.url('metrics')}/rates", headers=auditor)
                rates = answer.json()["rates"]
                return rates["first_contact_resolution_rate"]["denominator"] >= 5

            await eventually(simulated_tickets_counted, timeout=60, message="simulated tickets")
        records = await read_topic(found["KAFKA_BOOTSTRAP_SERVERS"], "intake.events", at_least=5)
        assert created.json()["ticket_id"] in [r.key.decode() for r in records]
        assert "simulator: 5 tickets/s" in summary

        assert stack.process is not None
        children = descendants(stack.process.pid)
        assert len(children) >= 7  # four services, simulator, broker, postmaster (and workers)
        assert await stack.interrupt() == 0
        assert "stopped; nothing left running" in "".join(stack.output)
        assert [pid for pid in children if process_alive(pid)] == []
        assert not (stack.data_dir / "stack.pid").exists()
    finally:
        await stack.close()


async def post_tickets(stack: StackProcess, client: httpx.AsyncClient, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await client.post(
            f"{stack.url('intake')}/tickets", json=ticket(), headers=stack.auth("evaluator")
        )
        assert response.status_code == 201
        ids.append(response.json()["ticket_id"])
    return ids


async def test_a_recycled_broker_restarts_empty_and_loses_nothing_accepted():
    """The embedded broker's memory is bounded by recycling it: everything is applied first."""
    stack = StackProcess()
    try:
        await stack.start()
        assert stack.process is not None
        async with httpx.AsyncClient(timeout=10) as client:
            before = await post_tickets(stack, client, 30)
            stack.process.send_signal(signal.SIGUSR1)
            await stack.wait_for_line("broker recycled", timeout=90)
            after = await post_tickets(stack, client, 30)
            bootstrap = stack.stack_env()["KAFKA_BOOTSTRAP_SERVERS"]
            on_topic = await read_topic(bootstrap, "intake.events", at_least=30)

            async def dispatch_knows_all() -> bool:
                for ticket_id in before + after:
                    response = await client.get(
                        f"{stack.url('dispatch')}/tickets/{ticket_id}",
                        headers=stack.auth("operator"),
                    )
                    if response.status_code != 200:
                        return False
                return True

            await eventually(dispatch_knows_all, timeout=60, message="dispatch knows every ticket")
        assert sorted(r.key.decode() for r in on_topic) == sorted(after)
        assert await stack.interrupt() == 0
    finally:
        await stack.close()
