"""``harmony serve`` ends without the interpreter's teardown once serving has returned (``ExitWhenServed``,
services/core/runtime/exit_deadline.py): the threads are still joined, the atexit handlers registered after it still
run, the logs and stdout are flushed and the status is kept; a serve that raised exits as any program does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = """
import atexit, logging, sys, threading
from services.core.runtime.exit_deadline import ExitWhenServed

served = ExitWhenServed().arm()
logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")


class Teardown:
    def __del__(self):
        print("interpreter teardown", flush=True)


kept = Teardown()  # its __del__ runs when the interpreter clears the modules
threading.Thread(target=lambda: print("thread joined", sum(range(2_000_000)) > 0)).start()  # busy at exit
atexit.register(lambda: print("handler ran"))
logging.getLogger("serve").info("logged")
print("buffered", end="")  # stdout is a pipe: block-buffered
if sys.argv[1] == "raise":
    raise RuntimeError("serve failed")
sys.exit(served.done(int(sys.argv[1])))
"""


def run(argument: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PROGRAM, argument], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_a_served_process_ends_without_the_teardown_and_keeps_its_status_output_threads_and_handlers():
    done = run("3")
    assert done.returncode == 3, done.stderr
    assert "logged" in done.stdout and "thread joined True" in done.stdout, done.stdout
    assert "handler ran" in done.stdout and "buffered" in done.stdout, done.stdout
    assert "interpreter teardown" not in done.stdout, done.stdout


def test_a_serve_that_raised_exits_as_any_program():
    done = run("raise")
    assert done.returncode == 1 and "RuntimeError: serve failed" in done.stderr, done.stderr
    assert "interpreter teardown" in done.stdout and "handler ran" in done.stdout, done.stdout
