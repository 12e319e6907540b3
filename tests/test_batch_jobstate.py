"""The batch client's job state machine (``adaattn_batch.manifest``): every legal move, every illegal one, and
every state through the manifest file and back."""

from __future__ import annotations

import json

import pytest

from adaattn_batch.errors import BatchError
from adaattn_batch.manifest import ErrorKind, IllegalTransition, JobRecord, JobState, Manifest, OutputRecord

PENDING, SUBMITTED, DONE, FAILED = JobState
SERVER = "http://127.0.0.1:8188"
OUTPUT = OutputRecord("a__b.png", 123, "ab" * 32, {"filename": "out_00001_.png", "subfolder": "", "type": "output"})

# Each transition with arguments, and the states it may leave from.
TRANSITIONS = {
    "submit": ((SERVER, "pid-2"), {PENDING, SUBMITTED}),
    "finish": ((SERVER, [OUTPUT], 1.5, 0.7), {SUBMITTED}),
    "retry": ((ErrorKind.EXECUTION, "boom", SERVER), {PENDING, SUBMITTED}),
    "fail": ((ErrorKind.VALIDATION, "bad value", SERVER), {PENDING, SUBMITTED}),
    "lose": (("went down", SERVER, 3), {PENDING, SUBMITTED}),
    "withdraw": ((), {SUBMITTED}),
    "resume": ((), {DONE, FAILED}),
}


def record_in(state: JobState) -> JobRecord:
    """A record brought to ``state`` by legal moves only."""
    rec = JobRecord("key")
    if state is PENDING:
        return rec
    rec = rec.submit(SERVER, "pid-1")
    if state is SUBMITTED:
        return rec
    if state is DONE:
        return rec.finish(SERVER, [OUTPUT], 2.0)
    return rec.fail(ErrorKind.EXECUTION, "broken", SERVER)


@pytest.mark.parametrize("name", TRANSITIONS)
@pytest.mark.parametrize("state", list(JobState))
def test_each_transition_is_allowed_only_from_its_states(name, state):
    args, allowed = TRANSITIONS[name]
    rec = record_in(state)
    before = rec.to_json()
    if state in allowed:
        new = getattr(rec, name)(*args)
        assert isinstance(new, JobRecord) and new.key == "key"
    else:
        with pytest.raises(IllegalTransition, match=f"cannot {name} a {state.value} job"):
            getattr(rec, name)(*args)
    assert rec.to_json() == before  # records never change in place


def test_submit_records_server_and_prompt_before_anything_is_sent():
    rec = JobRecord("key").submit(SERVER, "pid-1")
    assert (rec.state, rec.server, rec.prompt_id) == (SUBMITTED, SERVER, "pid-1") and rec.submitted_at
    again = rec.submit(SERVER, "pid-from-an-older-server")  # a server that mints its own ids
    assert again.prompt_id == "pid-from-an-older-server" and again.attempts == 0


def test_finish_keeps_outputs_and_timings():
    rec = record_in(SUBMITTED).finish(SERVER, [OUTPUT], 1.5, 0.7)
    assert rec.state is DONE and rec.outputs == (OUTPUT,) and (rec.seconds, rec.exec_seconds) == (1.5, 0.7)
    assert rec.finished_at and rec.errors == ()


def test_retry_and_fail_count_attempts_and_keep_every_error():
    rec = record_in(SUBMITTED).retry(ErrorKind.EXECUTION, "first", SERVER)
    assert rec.state is PENDING and rec.attempts == 1
    rec = rec.submit(SERVER, "pid-2").fail(ErrorKind.EXECUTION, "second", None)
    assert rec.state is FAILED and rec.attempts == 2 and rec.finished_at
    assert [(e.kind, e.message, e.server) for e in rec.errors] == [
        (ErrorKind.EXECUTION, "first", SERVER),
        (ErrorKind.EXECUTION, "second", None),
    ]


def test_losing_a_server_costs_no_attempt_until_it_happens_too_often():
    rec = record_in(SUBMITTED)
    for losses in (1, 2):
        rec = rec.lose("gone", SERVER, losses_allowed=2)
        assert rec.state is PENDING and rec.losses == losses and rec.attempts == 0
        rec = rec.submit(SERVER, f"pid-{losses}")
    rec = rec.lose("gone", SERVER, losses_allowed=2)
    assert rec.state is FAILED and rec.losses == 3
    assert rec.errors[-1].kind is ErrorKind.LOST and "lost 3 times" in rec.errors[-1].message


def test_resume_gives_failed_jobs_fresh_retries_and_forgets_missing_outputs():
    failed = record_in(SUBMITTED).lose("gone", SERVER, 1).submit(SERVER, "p").fail(ErrorKind.EXECUTION, "x", SERVER)
    again = failed.resume()
    assert again.state is PENDING and (again.attempts, again.losses) == (0, 0) and len(again.errors) == 2
    redo = record_in(DONE).resume()
    assert redo.state is PENDING and redo.outputs == ()
    assert record_in(SUBMITTED).withdraw().state is PENDING


@pytest.mark.parametrize("state", list(JobState))
def test_every_state_survives_the_manifest_file(tmp_path, state):
    path = tmp_path / "m.json"
    rec = record_in(state)  # with an error and a loss before, where the state allows
    if state is PENDING:
        rec = rec.lose("gone", SERVER, 5)
    elif state is SUBMITTED:
        rec = rec.lose("gone", SERVER, 5).submit(SERVER, "pid-2")
    manifest = Manifest.open(path, "recipe", {"mode": "grid"})
    manifest.start("job", "key")
    manifest.apply("job", lambda _old: rec)
    manifest.close()
    on_disk = json.loads(path.read_text())["jobs"]["job"]
    assert on_disk["state"] == state.value
    again = Manifest.open(path, "recipe", {"mode": "grid"})
    assert again.jobs["job"] == rec
    again.close()


def test_manifest_apply_saves_at_once_and_refuses_illegal_moves(tmp_path):
    path = tmp_path / "m.json"
    manifest = Manifest.open(path, "recipe", {})
    manifest.start("job", "key")
    manifest.apply("job", JobRecord.submit, SERVER, "pid-1")
    assert json.loads(path.read_text())["jobs"]["job"]["prompt_id"] == "pid-1"
    before = path.read_bytes()
    with pytest.raises(IllegalTransition):
        manifest.apply("job", JobRecord.resume)
    assert manifest.jobs["job"].state is SUBMITTED and path.read_bytes() == before
    with pytest.raises(TypeError):
        manifest.jobs["job"] = JobRecord("other")  # the records are read-only from outside
    manifest.close()


@pytest.mark.parametrize(
    "record",
    [
        {"key": "k", "state": "running"},
        {"key": "k", "state": "submitted", "server": None, "prompt_id": None},
        {"key": "k", "state": "failed", "errors": [{"kind": "mystery", "message": "?"}]},
    ],
)
def test_a_manifest_with_an_impossible_record_is_a_one_line_error(tmp_path, record):
    path = tmp_path / "m.json"
    Manifest.open(path, "recipe", {}).close()
    data = json.loads(path.read_text())
    data["jobs"]["job"] = record
    path.write_text(json.dumps(data))
    with pytest.raises(BatchError, match="job 'job' is not a valid record"):
        Manifest.open(path, "recipe", {})
