"""Pure parts of the database lifecycle: Job results as the Job controller reports them, and how
the storage status carries the gate's report."""

from flipt_operator.builders.status import ConditionSpec, Summary
from flipt_operator.builders.status_decisions import DATABASE_CONDITIONS, DatabaseReport, storage_status
from flipt_operator.handlers.database import _job_result, _record
from flipt_operator.models.plan import Problem
from flipt_operator.models.storage import FliptStorageSpec

SPEC = FliptStorageSpec.model_validate({"database": {"url": "postgres://flipt@db/flipt"}})


def job(conditions=(), **status):
    return {"metadata": {"name": "db-migrate-1", "annotations": {"flipt.io/image": "flipt:v1",
                                                                "flipt.io/backup-path": "/backup/b/x.yaml"}},
            "status": {"conditions": list(conditions), **status}}


def test_job_results_follow_the_job_controllers_conditions():
    assert _job_result(job()) == ("Running", "")
    assert _job_result(job([{"type": "Complete", "status": "True"}])) == ("Succeeded", "")
    failed = job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "too slow"}])
    assert _job_result(failed) == ("Failed", "DeadlineExceeded: too slow")
    assert _job_result(job([{"type": "Failed", "status": "False"}])) == ("Running", "")


def test_record_keeps_image_backup_and_times():
    done = job([{"type": "Complete", "status": "True"}], startTime="2026-01-01T00:00:00Z",
               completionTime="2026-01-01T00:01:00Z")
    record = _record(done).to_api()
    assert record == {"job": "db-migrate-1", "image": "flipt:v1", "result": "Succeeded",
                      "backupPath": "/backup/b/x.yaml", "startTime": "2026-01-01T00:00:00Z",
                      "completionTime": "2026-01-01T00:01:00Z"}


def test_storage_status_carries_the_database_report():
    report = DatabaseReport(Summary("progressing", "MigrationRunning", "Job runs"),
                            [ConditionSpec("MigrationsApplied", False, "MigrationRunning", "Job runs")],
                            {"dialect": "postgres", "schemaVersion": 12})
    decision = storage_status("db", SPEC, [], [], ["flipt"], None, [], report)
    assert decision.summary.reason == "MigrationRunning"
    assert decision.fields["database"] == {"dialect": "postgres", "schemaVersion": 12}
    assert [c.type for c in decision.domain] == ["MigrationsApplied"]
    assert set(DATABASE_CONDITIONS) <= set(decision.managed)


def test_a_warning_shows_only_when_the_database_is_ready():
    warning = Problem("FliptStorage", "db", "spec.database.url", "SQLiteSingleInstance", "one replica", "Warning")
    ready = DatabaseReport(Summary("ready", "DatabaseReady", "ok"))
    assert storage_status("db", SPEC, [], [warning], ["flipt"], None, [], ready).summary.reason == \
        "SQLiteSingleInstance"
    busy = DatabaseReport(Summary("stalled", "MigrationFailed", "failed"))
    assert storage_status("db", SPEC, [], [warning], ["flipt"], None, [], busy).summary.reason == "MigrationFailed"
