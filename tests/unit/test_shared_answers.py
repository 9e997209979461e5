"""Readers asking the same question at once share one computation; an answer is reused for a
short while, never a failure, and only so many questions are remembered."""

from __future__ import annotations

import asyncio

import pytest

from services.metrics.answers import SharedAnswers


class Counting:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        return self.calls


async def test_readers_asking_at_once_share_one_computation():
    answers, compute = SharedAnswers(ttl=0.0), Counting()
    waiting = [asyncio.create_task(answers.get("rates", compute)) for _ in range(8)]
    await asyncio.sleep(0)
    compute.release.set()
    assert await asyncio.gather(*waiting) == [1] * 8
    assert compute.calls == 1


async def test_an_answer_is_reused_within_its_time_and_computed_again_after():
    answers, compute = SharedAnswers(ttl=0.2), Counting()
    compute.release.set()
    assert await answers.get("rates", compute) == 1
    assert await answers.get("rates", compute) == 1  # within 0.2 s
    await asyncio.sleep(0.45)  # past twice that: no answer that old is given
    assert await answers.get("rates", compute) == 2
    assert await answers.get("other question", compute) == 3


async def let_tasks_run() -> None:
    """A few turns of the loop: a reader's task starts, then the computation it started."""
    for _ in range(5):
        await asyncio.sleep(0)


class Gated:
    """Each computation waits for its own release; answers 1, 2, 3..."""

    def __init__(self) -> None:
        self.calls = 0
        self.gates: list[asyncio.Event] = []

    async def __call__(self) -> int:
        self.calls += 1
        gate = asyncio.Event()
        self.gates.append(gate)
        number = self.calls
        await gate.wait()
        return number


async def answered_once(ttl: float) -> tuple[SharedAnswers, Gated]:
    """Shared answers whose first answer (1) has been computed and given."""
    answers, compute = SharedAnswers(ttl=ttl), Gated()
    first = asyncio.create_task(answers.get("rates", compute))
    await let_tasks_run()
    compute.gates[0].set()
    assert await first == 1
    return answers, compute


async def test_while_the_next_answer_is_computed_readers_get_the_previous_without_waiting():
    answers, compute = await answered_once(ttl=0.1)
    await asyncio.sleep(0.12)  # past ttl, within 2 * ttl of the first answer's start
    # The first reader after ttl starts the next computation and, like every reader until
    # it is done, gets the previous answer at once (the computation is still held).
    assert await asyncio.wait_for(answers.get("rates", compute), 0.05) == 1
    assert await asyncio.wait_for(answers.get("rates", compute), 0.05) == 1
    await let_tasks_run()
    assert compute.calls == 2
    compute.gates[1].set()
    await let_tasks_run()
    assert await answers.get("rates", compute) == 2


async def test_an_answer_older_than_twice_the_time_is_never_given():
    answers, compute = await answered_once(ttl=0.05)
    await asyncio.sleep(0.06)
    assert await answers.get("rates", compute) == 1  # the next one is computing
    await asyncio.sleep(0.06)  # now the first answer began more than 0.1 s ago
    assert compute.calls == 2
    waiting = asyncio.create_task(answers.get("rates", compute))
    await asyncio.sleep(0.01)
    assert not waiting.done()  # it waits for the computation in progress
    compute.gates[1].set()
    assert await waiting == 2


async def test_a_failed_refresh_is_not_kept_and_the_next_reader_computes_again():
    answers = SharedAnswers(ttl=0.05)
    outcomes: list[str | Exception] = ["figures", ConnectionError("database away"), "again"]
    gate = asyncio.Event()
    gate.set()

    async def compute() -> str:
        await gate.wait()
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert await answers.get("rates", compute) == "figures"
    await asyncio.sleep(0.06)
    gate.clear()
    assert await answers.get("rates", compute) == "figures"  # the refresh is held
    gate.set()
    await asyncio.sleep(0.01)  # the refresh failed; nothing of it is kept
    assert await answers.get("rates", compute) == "again"


async def test_with_no_time_to_keep_a_finished_answer_is_never_reused():
    answers, compute = SharedAnswers(ttl=0.0), Counting()
    compute.release.set()
    assert [await answers.get("rates", compute) for _ in range(3)] == [1, 2, 3]


async def test_a_failure_is_not_kept():
    answers = SharedAnswers(ttl=60.0)
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionError("database away")
        return "figures"

    with pytest.raises(ConnectionError):
        await answers.get("rates", flaky)
    assert await answers.get("rates", flaky) == "figures"


async def test_a_reader_that_gives_up_does_not_cancel_the_others():
    answers, compute = SharedAnswers(ttl=0.0), Counting()
    impatient = asyncio.create_task(answers.get("rates", compute))
    patient = asyncio.create_task(answers.get("rates", compute))
    await asyncio.sleep(0)
    impatient.cancel()
    compute.release.set()
    assert await patient == 1


async def test_only_so_many_questions_are_remembered():
    answers = SharedAnswers(ttl=60.0, capacity=2)
    calls: list[str] = []

    def asking(question: str):
        async def compute() -> str:
            calls.append(question)
            return question

        return compute

    for question in ("a", "b", "c", "a"):
        await answers.get(question, asking(question))
    assert calls == ["a", "b", "c", "a"]  # "a" was forgotten when "c" came
