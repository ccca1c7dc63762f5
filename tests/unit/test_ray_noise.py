"""What the workers' log lines printed here leave out: Ray's own noise, never a line of ours."""

from __future__ import annotations

from nlpbatch.raycluster import quiet_lines

# as Ray Train's controller logs it on a loaded 2-core machine (2 of 6 trainings)
WARNING = """\
2026-12-04 12:00:01,234\tWARNING autoscaling_coordinator_client.py:71 -- Failed to send resource request for \
train-1a2b. If this only happens transiently during network partition or CPU being overloaded, it's safe to ignore \
this error. If this error persists, file a GitHub issue.
Traceback (most recent call last):
  File "/venv/lib/python3.11/site-packages/ray/train/v2/_internal/execution/scaling_policy/x.py", line 57, in send
    ray.get(
  File "/venv/lib/python3.11/site-packages/ray/_private/worker.py", line 2961, in get
    values, debugger_breakpoint = worker.get_objects(
                                  ^^^^^^^^^^^^^^^^^^^
ray.exceptions.GetTimeoutError: Get timed out: some object(s) not ready.""".splitlines()


def test_the_transient_resource_request_warning_goes_with_its_traceback():
    ours = ["[nlpbatch] epoch 1/2: 120/125 steps", "  an indented line of ours"]
    assert quiet_lines(ours[:1] + WARNING + ours) == ours[:1] + ours
    assert quiet_lines(WARNING) == []


def test_a_chained_traceback_goes_too_and_other_errors_stay():
    chained = WARNING + ["", "During handling of the above exception, another exception occurred:", ""] + WARNING[1:]
    assert quiet_lines(chained + ["done"]) == ["done"]
    other = ["Traceback (most recent call last):", '  File "x.py", line 1', "ValueError: ours"]
    assert quiet_lines(other) == other
