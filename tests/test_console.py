"""`wan22 pipeline run`'s console against the lines kfp.local and the steps really print (recorded from a
run): a line per step start and end, the steps' own progress, and a failing step's cause last."""
import io

from pipelines.console import StepConsole

RUN = """\x1b[0m23:26:03.274 - INFO - Executing task \x1b[96m'validate-dataset'\x1b[0m
23:26:03.275 - INFO - Streamed logs:

    [KFP Executor 2026-11-26 23:26:04,532 INFO]: Looking for component `validate_dataset` in --component_module_path
    {
        "inputs": {
            "parameterValues": {"data_txt": "/tmp/run4/inputs/dataset/data.txt"}
        }
    }
    /venv/lib/python3.11/site-packages/torch/distributed/fsdp/_fully_shard/_fsdp_state.py:331: UserWarning: a warning
23:26:04.633 - INFO - Task \x1b[96m'validate-dataset'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m
23:26:04.638 - INFO - Executing task \x1b[96m'pretrain'\x1b[0m
    launching: python -m torch.distributed.run --nproc-per-node=2 --standalone -m wan_core train
    resumed from /tmp/run/work/train-dit at step 2 (iter_0000002)
    step 3/4 loss 2.13715 lr 1.00e-03 grad_norm 1.471 0.13 samples/s
    Traceback (most recent call last):
      File "/venv/lib/python3.11/site-packages/kfp/dsl/executor.py", line 453, in execute
        result = self.func(**func_kwargs)
    wan_core.errors.UserError: training failed (exit status 1)
"""


def feed(text, verbose=False, tmp_path=None):
    out = io.StringIO()
    console = StepConsole(out, tmp_path / "pipeline.log", verbose)
    console.write(text)
    return console, out


def test_quiet_lines_and_the_cause_of_a_failure(tmp_path):
    console, out = feed(RUN, tmp_path=tmp_path)
    assert console.failed is None and console.step == "pretrain"
    assert console.step_failed() == ("pretrain", "training failed (exit status 1)")  # kfp.local raised
    console.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[wan22] validate-dataset: started"
    assert lines[1].startswith("[wan22] validate-dataset: done in ") and lines[2] == "[wan22] pretrain: started"
    assert lines[3:6] == ["    launching: python -m torch.distributed.run --nproc-per-node=2 --standalone -m wan_core train",
                          "    resumed from /tmp/run/work/train-dit at step 2 (iter_0000002)",
                          "    step 3/4 loss 2.13715 lr 1.00e-03 grad_norm 1.471 0.13 samples/s"]
    assert lines[6].startswith("[wan22] pretrain: failed after ") and len(lines) == 7
    assert "validate-dataset" in console.timings
    log = (tmp_path / "pipeline.log").read_text()  # everything, without colour codes
    assert "Looking for component" in log and "UserWarning" in log and "\x1b[" not in log


def test_verbose_shows_everything(tmp_path):
    console, out = feed(RUN, verbose=True, tmp_path=tmp_path)
    console.close()
    text = out.getvalue()
    assert "Looking for component" in text and "UserWarning" in text and "\x1b[" not in text
