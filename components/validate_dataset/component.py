from kfp import dsl
from kfp.dsl import HTML, Markdown, Metrics, Output

from components import IMAGE


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def validate_dataset(data_txt: str, manifest_out: str, report: Output[Markdown], html_report: Output[HTML],
                     metrics: Output[Metrics], allow_invalid: bool = False, workdir: str = "") -> str:
    """Check the datasets listed in data_txt; write the manifest of valid entries to manifest_out (a path on
    the shared volume; relative paths are under `workdir`) and return it. Fails the step when entries are
    invalid unless allow_invalid."""
    import pathlib

    from components import under
    from components.validate_dataset.step import validate_dataset_step

    return validate_dataset_step(data_txt, under(workdir, manifest_out), pathlib.Path(report.path), pathlib.Path(html_report.path),
                                 metrics.log_metric, allow_invalid)
