"""summary.json against its schema, harness/summary.schema.json, field by field."""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import attrs
import pytest

from harness.core.events import RunEnd
from harness.core.summary import Failure, RunStatus, RunSummary
from harness.core.testing import write_imagefolder
from harness.settings import Settings
from harness.training.fit import run

jsonschema = pytest.importorskip("jsonschema", reason="the dev extra installs jsonschema")

MakeSettings = Callable[..., Settings]


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files("harness").joinpath("summary.schema.json").read_text()
    )
    return loaded


def test_the_schema_is_valid_and_documents_every_field() -> None:
    document = schema()
    jsonschema.Draft202012Validator.check_schema(document)
    assert set(document["required"]) == set(document["properties"])
    for name, field in document["properties"].items():
        assert field.get("description"), f"{name} has no description"


@pytest.mark.slow
def test_a_real_summary_follows_the_schema_and_a_changed_one_does_not(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    root = tmp_path / "split"
    write_imagefolder(root / "train", {"red": 8, "green": 8, "blue": 8})
    write_imagefolder(root / "val", {"red": 2, "green": 2, "blue": 2, "zebra": 3})
    result = run(make_settings("report", "data.unknown_classes='skip'", root=root))
    validator = jsonschema.Draft202012Validator(schema())
    on_disk = json.loads((result.run_dir / "summary.json").read_text())
    assert list(validator.iter_errors(on_disk)) == []
    assert on_disk["artifacts"]["report"] == "report.html"
    assert on_disk["left_out_classes"] == [{"split": "val", "name": "zebra", "images": 3}]
    for broken in (
        {**on_disk, "status": "done"},
        {**on_disk, "extra": 1},
        {k: v for k, v in on_disk.items() if k != "error"},
    ):
        assert list(validator.iter_errors(broken)), broken


def test_the_typed_record_has_the_schemas_fields_in_order_and_the_status_of_run_end() -> None:
    document = schema()
    assert [field.name for field in attrs.fields(RunSummary)] == document["required"]
    assert list(typing.get_args(RunStatus)) == document["properties"]["status"]["enum"]
    assert attrs.fields(RunEnd).status.type in ("RunStatus", RunStatus)
    failure = document["properties"]["failures"]["items"]
    assert [field.name for field in attrs.fields(Failure)] == failure["required"]
