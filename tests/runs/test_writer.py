"""The background writer: jobs run off the caller's thread, and a job's error reaches the caller."""

import threading

import pytest

from dlcvkit.errors import DlcvkitError
from dlcvkit.runs.writer import BackgroundWriter


@pytest.mark.parametrize("threads", [1, 2])
def test_jobs_run_in_other_threads_and_all_are_done_on_leaving(threads):
    done, idents = [], set()

    def job(i):
        idents.add(threading.get_ident())
        done.append(i)

    with BackgroundWriter(depth=2, threads=threads) as writer:
        for i in range(7):
            writer.submit(job, i)
    assert sorted(done) == list(range(7)) and threading.get_ident() not in idents
    assert threads > 1 or done == list(range(7))  # one thread: in order


def test_a_failed_job_is_raised_at_the_next_submit_and_stops_the_loop():
    release = threading.Event()
    submitted = []

    def fail():
        release.wait(10)
        raise DlcvkitError("cannot write image out/0002_mask.png: disk full")

    with pytest.raises(DlcvkitError, match="0002_mask.png: disk full"):
        with BackgroundWriter(depth=1, threads=1) as writer:
            writer.submit(fail)
            release.set()
            for i in range(5):  # depth 1: this submit waits for the failed job, and raises its error
                writer.submit(submitted.append, i)
    assert submitted == []


def test_a_failed_job_is_raised_on_leaving_the_block():
    with pytest.raises(DlcvkitError, match="no space"):
        with BackgroundWriter() as writer:
            writer.submit(lambda: (_ for _ in ()).throw(DlcvkitError("no space")))


def test_an_error_of_the_block_wins_and_cancels_jobs_not_started():
    ran = []
    with pytest.raises(KeyError):
        with BackgroundWriter(depth=8, threads=1) as writer:
            writer.submit(threading.Event().wait, 2)  # busy while the block fails
            for i in range(3):
                writer.submit(ran.append, i)
            raise KeyError("interrupted")
    assert ran == []
