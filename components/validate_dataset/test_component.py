import json

import pytest

from components.validate_dataset import validate_dataset
from wan_core.errors import UserError


def test_writes_manifest_report_and_metrics(tmp_path, demo_dataset, artifact):
    report, page, metrics = artifact("report.md"), artifact("report.html"), artifact("metrics")
    out = validate_dataset.python_func(data_txt=str(demo_dataset / "data.txt"), manifest_out="manifest.json",
                                       report=report, html_report=page, metrics=metrics, workdir=str(tmp_path))
    assert out == str(tmp_path / "manifest.json") and len(json.loads((tmp_path / "manifest.json").read_text())) == 2
    assert metrics.metrics == {"entries": 2, "valid": 2, "invalid": 0}
    assert "valid: 2" in open(report.path).read() and "<html>" in open(page.path).read()


def test_fails_on_invalid_entries_unless_allowed(tmp_path, demo_dataset, artifact):
    data = json.loads((demo_dataset / "data.json").read_text())
    data.append({**data[0], "path": "videos/missing.mp4"})
    (tmp_path / "data.json").write_text(json.dumps(data))
    (tmp_path / "data.txt").write_text(f"{demo_dataset},{tmp_path / 'data.json'}\n")
    kw = dict(data_txt=str(tmp_path / "data.txt"), manifest_out=str(tmp_path / "m.json"), report=artifact("r.md"),
              html_report=artifact("r.html"), metrics=artifact("m"))
    with pytest.raises(UserError, match="1 invalid dataset entries"):
        validate_dataset.python_func(**kw)
    validate_dataset.python_func(**kw, allow_invalid=True)
    assert len(json.loads((tmp_path / "m.json").read_text())) == 2
