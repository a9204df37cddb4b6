"""The SQLite gradebook: every run and every result, so a regrade is history, not an overwrite."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from .results import SubmissionResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    assignment TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    grader_version TEXT NOT NULL,
    options TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    student_id TEXT NOT NULL,
    assignment TEXT NOT NULL,
    score REAL NOT NULL,
    max_score REAL NOT NULL,
    status TEXT NOT NULL,
    cached INTEGER NOT NULL,
    cache_key TEXT NOT NULL,
    graded_at TEXT NOT NULL,
    result_json TEXT NOT NULL,
    PRIMARY KEY (run_id, student_id)
);
CREATE INDEX IF NOT EXISTS results_by_student ON results(assignment, student_id, run_id);
"""


class Gradebook:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.db = sqlite3.connect(self.path, timeout=30)
        self.db.executescript(SCHEMA)

    def start_run(self, assignment: str, started_at: str, grader_version: str,
                  options: dict) -> int:
        cursor = self.db.execute(
            "INSERT INTO runs (assignment, started_at, grader_version, options) VALUES (?,?,?,?)",
            (assignment, started_at, grader_version, json.dumps(options, default=str)))
        self.db.commit()
        return int(cursor.lastrowid)

    def record(self, run_id: int, result: SubmissionResult, cached: bool) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?)",
            (run_id, result.student_id, result.assignment, result.score, result.max_score,
             result.status.value, int(cached), result.cache_key, result.graded_at,
             result.to_json()))
        self.db.commit()

    def finish_run(self, run_id: int, finished_at: str) -> None:
        self.db.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", (finished_at, run_id))
        self.db.commit()

    def previous_results(self, assignment: str, before_run: int) -> dict[str, dict]:
        """student_id -> {score, status, run_id} of the latest earlier run that graded them."""
        rows = self.db.execute(
            "SELECT student_id, score, status, MAX(run_id) FROM results "
            "WHERE assignment = ? AND run_id < ? GROUP BY student_id", (assignment, before_run))
        return {student: {"score": score, "status": status, "run_id": run}
                for student, score, status, run in rows}

    def history(self, assignment: str, student_id: str) -> list[tuple[int, float, str]]:
        rows = self.db.execute(
            "SELECT run_id, score, status FROM results WHERE assignment = ? AND student_id = ? "
            "ORDER BY run_id", (assignment, student_id))
        return list(rows)

    def close(self) -> None:
        self.db.close()
