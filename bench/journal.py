"""The journal writer's CPU per intent, driving the real ``SqliteJournal`` as the service does.

    python -m bench.journal [--intents N] [--rate R] [--mode service|flush-all] [--warm W]
                            [--per-commit K] [--repeat K] [--dir DIR]

Each intent appends the entries the tx manager produces for it: ``RecordOpened``, then (after
the flush, as ``TxManager.complete`` awaits it before signing) ``AttemptAdded`` and
``StateChanged`` pending->signed, then ``StateChanged`` signed->broadcast once "written".
``--mode flush-all`` appends all four and then flushes (every entry under a barrier). Intents
start open-loop at ``--rate`` per second (0: all at once, a burst of N concurrent flushes), so
the group commits see the batch sizes of a service under that load.

Reported: the writer thread's CPU (user + system, read through ``pthread_getcpuclockid``, so the
fsyncs' kernel time counts) per intent, commits per flush, and the flush latency. Entries are
built before the clock starts: the event loop only appends and awaits, as cheaply as it can.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from nonce.entries import AttemptAdded, Entry, RecordOpened, StateChanged
from nonce.journal import SqliteJournal
from nonce.state import Attempt, AttemptReason, Intent, TxState

SENDERS = tuple("0x" + f"{i:02x}" * 20 for i in range(1, 9))
_S = TxState
_TICK = os.sysconf("SC_CLK_TCK")
TARGET = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8"


def intent_entries(n: int, at: float) -> tuple[RecordOpened, list[Entry], StateChanged]:
    """One intent's entries as the service writes them: opened; attempt + signed; broadcast."""
    sender = SENDERS[n % len(SENDERS)]
    nonce = n // len(SENDERS)
    intent = Intent(
        id=os.urandom(16).hex(),  # random ids, as the API makes them: random index inserts
        sender=sender,
        to=TARGET,
        value=1,
        data=b"",
        gas=21_000,
        max_fee_per_gas=30_000_000_000,
        max_priority_fee_per_gas=2_000_000_000,
        chain_id=31337,
    )
    raw = b"\x02" + os.urandom(110)  # a signed EIP-1559 transfer is ~114 bytes
    attempt = Attempt(
        raw=raw,
        hash=hashlib.sha256(raw).digest(),
        nonce=nonce,
        max_fee_per_gas=intent.max_fee_per_gas,
        max_priority_fee_per_gas=intent.max_priority_fee_per_gas,
        signed_at=at,
        reason=AttemptReason.INITIAL,
    )
    signed = StateChanged(intent.id, _S.PENDING, _S.SIGNED, "signed", at, None, None, False)
    sent = StateChanged(intent.id, _S.SIGNED, _S.BROADCAST, "written", at, None, None, False)
    return (
        RecordOpened(intent, nonce, TxState.PENDING, at),
        [AttemptAdded(intent.id, attempt), signed],
        sent,
    )


Entries = tuple[RecordOpened, list[Entry], StateChanged]


def _prepare(path: Path, intents: int, warm: int) -> tuple[SqliteJournal, list[Entries]]:
    """A journal already holding ``warm`` settled-size intents (realistic B-tree depths and a
    page cache that no longer holds every index page), and the entries of ``intents`` more."""
    entries = [intent_entries(n, float(n)) for n in range(warm + intents)]
    journal = SqliteJournal(path)
    for start in range(0, warm, 2048):
        for opened, signing, sent in entries[start : min(warm, start + 2048)]:
            journal.append(opened)
            for entry in signing:
                journal.append(entry)
            journal.append(sent)
        journal.commit_now()
    journal.commit_now()
    return journal, entries[warm:]


@dataclass
class Result:
    intents: int
    seconds: float
    writer_cpu_s: float
    user_s: float
    sys_s: float
    commits: int
    flushes: int
    flush_p50_ms: float
    flush_p99_ms: float

    @property
    def us_per_intent(self) -> float:
        return self.writer_cpu_s / self.intents * 1e6

    def line(self) -> str:
        return (
            f"{self.intents} intents in {self.seconds:.2f} s: writer CPU"
            f" {self.us_per_intent:.1f} us/intent (sys {self.sys_s / self.intents * 1e6:.0f}),"
            f" {self.commits} commits for {self.flushes}"
            f" flushes ({self.commits / self.flushes:.3f} commits/flush,"
            f" {self.intents / self.commits:.1f} intents/commit), flush p50"
            f" {self.flush_p50_ms:.2f} ms p99 {self.flush_p99_ms:.2f} ms"
        )


def _user_sys(journal: SqliteJournal) -> tuple[float, float]:
    """The writer's user and system CPU seconds (``/proc``, clock-tick resolution)."""
    tid = journal._thread.native_id
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / _TICK, int(fields[12]) / _TICK


def _thread_cpu(journal: SqliteJournal) -> float:
    ident = journal._thread.ident
    assert ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


class _Meter:
    """The writer thread's counters at the start of a measurement; :meth:`result` at its end."""

    def __init__(self, journal: SqliteJournal) -> None:
        self.journal = journal
        self.batches, self.cpu = journal.committed_batches, _thread_cpu(journal)
        self.user, self.sys = _user_sys(journal)
        self.t0 = time.perf_counter()
        self.end: tuple[float, float, float, float, int] | None = None

    def stop(self) -> None:
        """Read the counters (before the journal closes)."""
        journal = self.journal
        user, sys_ = _user_sys(journal)
        elapsed = time.perf_counter() - self.t0
        self.end = (elapsed, _thread_cpu(journal) - self.cpu, user - self.user, sys_ - self.sys,
                    journal.committed_batches - self.batches)  # fmt: skip

    def result(self, intents: int, flushes: int, latencies: list[float]) -> Result:
        assert self.end is not None, "stop() first"
        seconds, cpu, user, sys_, commits = self.end
        latencies.sort()
        return Result(
            intents=intents,
            seconds=seconds,
            writer_cpu_s=cpu,
            user_s=user,
            sys_s=sys_,
            commits=commits,
            flushes=flushes,
            flush_p50_ms=statistics.median(latencies) * 1e3,
            flush_p99_ms=latencies[int(len(latencies) * 0.99)] * 1e3,
        )


async def run(path: Path, intents: int, rate: float, mode: str, warm: int) -> Result:
    journal, entries = _prepare(path, intents, warm)
    append, flush = journal.append, journal.flush
    latencies: list[float] = []
    clock = time.perf_counter

    async def one(opened: RecordOpened, signing: list[Entry], sent: StateChanged) -> None:
        append(opened)
        if mode == "flush-all":
            for entry in signing:
                append(entry)
            append(sent)
        t0 = clock()
        await flush()
        latencies.append(clock() - t0)
        if mode == "service":
            await asyncio.sleep(0)  # the signer's round trip
            for entry in signing:
                append(entry)
            await asyncio.sleep(0)  # the fan-out's write
            append(sent)

    try:
        meter = _Meter(journal)
        t0 = meter.t0
        async with asyncio.TaskGroup() as tg:
            if rate <= 0:
                for e in entries:
                    tg.create_task(one(*e))
            else:
                started = 0
                while started < intents:
                    due = min(intents, int((clock() - t0) * rate) + 1)
                    for e in entries[started:due]:
                        tg.create_task(one(*e))
                    started = due
                    await asyncio.sleep(0.001)
        await flush()  # the last follow-ups, so every intent's four entries are counted
        meter.stop()
    finally:
        journal.close()
    return meter.result(intents, intents + 1, latencies)


def run_fixed(path: Path, intents: int, per_commit: int, warm: int) -> Result:
    """Deterministic batches: each commit holds ``per_commit`` new records plus the attempts and
    state changes of the previous ``per_commit`` intents (the service's steady state), each one
    under a flush barrier (``commit_now``). No event loop: the figure's noise is the disk's."""
    journal, entries = _prepare(path, intents, warm)
    clock = time.perf_counter
    latencies: list[float] = []
    try:
        meter = _Meter(journal)
        previous: list[Entries] = []
        for start in range(0, intents + per_commit, per_commit):
            chunk = entries[start : start + per_commit]
            for opened, _, _ in chunk:
                journal.append(opened)
            for _, signing, sent in previous:
                for entry in signing:
                    journal.append(entry)
                journal.append(sent)
            t1 = clock()
            journal.commit_now()
            latencies.append(clock() - t1)
            previous = chunk
        meter.stop()
    finally:
        journal.close()
    return meter.result(intents, len(latencies), latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--intents", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2_500.0, help="intents/s, 0 = one burst")
    parser.add_argument("--mode", choices=("service", "flush-all"), default="service")
    parser.add_argument(
        "--per-commit", type=int, default=0, help="fixed batches of this many intents (no loop)"
    )
    parser.add_argument(
        "--warm", type=int, default=50_000, help="intents already in the journal before the clock"
    )
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the journal files go")
    args = parser.parse_args()
    figures = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
            path = Path(tmp) / "j.db"
            if args.per_commit:
                result = run_fixed(path, args.intents, args.per_commit, args.warm)
            else:
                result = asyncio.run(run(path, args.intents, args.rate, args.mode, args.warm))
        print(result.line(), flush=True)
        figures.append(result.us_per_intent)
    how = (
        f"{args.per_commit} intents/commit" if args.per_commit else f"{args.mode}, {args.rate:g}/s"
    )
    print(f"median writer CPU: {statistics.median(figures):.1f} us/intent ({how})")


if __name__ == "__main__":
    main()
