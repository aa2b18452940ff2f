"""The validate-dataset step: wan_core.data.manifest's checks, their report as the step's artifacts, and the
manifest of valid entries training reads. Nothing here imports kfp; the component hands in plain paths and a
`log_metric(name, value)` callable."""
from __future__ import annotations

import posixpath
from pathlib import Path
from typing import Callable

from wan_core.errors import UserError


def validate_dataset_step(data_txt: str, manifest_out: str, report_md: Path, report_html: Path,
                          log_metric: Callable[[str, float], None], allow_invalid: bool = False) -> str:
    from wan_core.data.manifest import default_workers, validate_dataset, write_manifest, write_report

    results, thumbnails = validate_dataset(data_txt, workers=default_workers())  # the pod's CPUs
    valid = [r.entry for r in results if r.reason is None]
    from wan_core.storage import Location

    # beside the manifest: a folder on the volume or an object-store URL (joined as text, never through Path())
    folder = Location(posixpath.dirname(manifest_out)) / "validation-report"
    write_report(str(folder), data_txt, results, thumbnails, overwrite=True)  # a retry replaces its own report
    report_md.write_text((folder / "report.md").read_text())
    report_html.write_text((folder / "report.html").read_text())
    log_metric("entries", len(results))
    log_metric("valid", len(valid))
    log_metric("invalid", len(results) - len(valid))
    bad = [r for r in results if r.reason is not None]
    if bad and not allow_invalid:
        raise UserError(f"{len(bad)} invalid dataset entries (first: {bad[0].path}: {bad[0].reason}); fix them or "
                        "set allow_invalid")
    if not valid:
        raise UserError(f"{data_txt}: no valid entries")
    write_manifest(manifest_out, valid)
    return manifest_out
