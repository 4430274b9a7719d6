"""Local lm-evaluation-harness tasks over the knowledge-unlearning validation files, and one call that
runs lm-eval on a (merged, unlearned) checkpoint without the Hub.

``write_local_tasks(utility_dir, out_dir)`` writes one lm-eval task YAML per task below into ``out_dir``;
each reads its CSV through the ``datasets`` package's ``csv`` builder (which needs no network) by
absolute path, so the YAML files are all lm-eval needs at run time and no data is copied:

* ``neumuter_lambada_local`` over ``lambada.csv`` (column ``text``): the context is the text without its
  last space-separated word, the continuation a space and that word; ``acc`` is 1 when the greedy
  continuation is that word (output type ``loglikelihood``, ``acc`` = is_greedy), as lm-eval's own
  ``lambada_openai`` task scores it;
* ``neumuter_pubmedqa_local`` over ``pubmed_qa.csv`` (``abstract``, ``question``, ``final_decision``):
  the prompt "Context: {abstract}\\nQuestion: {question}\\nAnswer:" as knowledge-unlearning builds it,
  the choices " yes" / " maybe" / " no" (the target delimiter is empty, so the space is not doubled),
  gold the index of ``final_decision`` among yes / maybe / no; ``acc`` of the most likely choice
  (output type ``multiple_choice``).

``run_lm_eval(model_dir, tasks, task_dir)`` calls ``lm_eval.simple_evaluate`` on a local checkpoint with
the Hub off and returns ``{task: {metric: value}}``. lm-eval is an optional dependency (the ``harness``
extra, which ``make`` installs); it is imported only there.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from .errors import NeuMuterError
from .validation import check_number

LAMBADA_TASK = "neumuter_lambada_local"
PUBMEDQA_TASK = "neumuter_pubmedqa_local"
PUBMEDQA_ANSWERS = ("yes", "maybe", "no")

# task name: (file in the validation directory, columns its templates read)
TASK_FILES: dict[str, tuple[str, tuple[str, ...]]] = {
    LAMBADA_TASK: ("lambada.csv", ("text",)),
    PUBMEDQA_TASK: ("pubmed_qa.csv", ("abstract", "question", "final_decision")),
}


def _task_config(task: str, data_file: Path, limit: int | None) -> dict:
    dataset_kwargs: dict = {"data_files": {"test": str(data_file)}}
    if limit is not None:
        dataset_kwargs["nrows"] = limit  # the csv builder reads only the first rows
    common = {"task": task, "dataset_path": "csv", "dataset_kwargs": dataset_kwargs, "test_split": "test"}
    if task == LAMBADA_TASK:
        return {**common,
                "output_type": "loglikelihood",
                "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
                "doc_to_target": "{{' '+text.split(' ')[-1]}}",
                "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
                "metadata": {"version": 1.0, "source": str(data_file)}}
    answers = repr(list(PUBMEDQA_ANSWERS))
    return {**common,
            "output_type": "multiple_choice",
            "doc_to_text": "Context: {{abstract}}\nQuestion: {{question}}\nAnswer:",
            "doc_to_target": "{{" + answers + ".index(final_decision)}}",
            "doc_to_choice": [" " + answer for answer in PUBMEDQA_ANSWERS],
            "target_delimiter": "",
            "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
            "metadata": {"version": 1.0, "source": str(data_file)}}


def _check_csv(path: Path, task: str, columns: tuple[str, ...]) -> None:
    if not path.is_file():
        raise NeuMuterError(f"{path} does not exist: the local lm-eval task {task} reads it "
                            f"(pass a directory laid out as knowledge-unlearning's validation_data/)")
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except (OSError, UnicodeDecodeError) as error:
        raise NeuMuterError(f"cannot read {path}: {error}") from None
    missing = [column for column in columns if column not in header]
    if missing:
        raise NeuMuterError(f"{path} has no column {', '.join(missing)} (the local lm-eval task {task} reads it)")


def write_local_tasks(utility_dir: str | Path, out_dir: str | Path, limit: int | None = None) -> list[str]:
    """Write the local tasks' YAML files into ``out_dir`` (created if absent); return the task names.

    ``utility_dir`` is laid out as knowledge-unlearning's ``validation_data/``. ``limit`` keeps only the
    first ``limit`` rows of each file (lm-eval's own ``limit`` does the same at evaluation time).
    Raises ``NeuMuterError`` naming the file when one is missing, before anything is written.
    """
    if limit is not None:
        check_number("limit", limit, minimum=1, integer=True)
    utility_dir = Path(utility_dir).resolve()
    files = {}
    for task, (name, columns) in TASK_FILES.items():
        files[task] = utility_dir / name
        _check_csv(files[task], task, columns)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NeuMuterError(f"{out_dir} is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    for task, path in files.items():
        text = yaml.safe_dump(_task_config(task, path, limit), sort_keys=False, allow_unicode=True, width=1000)
        (out_dir / f"{task}.yaml").write_text(text, encoding="utf-8")
    return list(files)


def _plain_metrics(task_results: dict) -> dict[str, float]:
    """lm-eval's ``{"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ..., "sample_len": 8}`` as
    ``{"acc": 0.5, "acc_stderr": 0.1}``: the metrics (``metric,filter`` keys) that are numbers; a metric of a
    filter other than ``none`` keeps its ``,filter`` suffix."""
    plain = {}
    for key, value in task_results.items():
        metric, comma, result_filter = key.partition(",")
        if comma and isinstance(value, (int, float)) and not isinstance(value, bool):
            plain[metric if result_filter == "none" else key] = float(value)
    return plain


def run_lm_eval(model_dir: str | Path, tasks: str | Sequence[str], task_dir: str | Path, limit: int | None = None,
                batch_size: int = 8, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Zero-shot lm-eval (``model="hf"``, float32) of the checkpoint at ``model_dir`` on ``tasks``, with
    ``task_dir`` (e.g. written by ``write_local_tasks``) added to lm-eval's tasks; the Hub is switched off.

    Returns ``{task: {metric: value}}``, e.g. ``{"neumuter_lambada_local": {"acc": 0.25, "acc_stderr": 0.16}}``.
    """
    if limit is not None:
        check_number("limit", limit, minimum=1, integer=True)
    check_number("batch_size", batch_size, minimum=1, integer=True)
    model_dir, task_dir = Path(model_dir), Path(task_dir)
    if not (model_dir / "config.json").is_file():
        raise NeuMuterError(f"{model_dir} is not a transformers checkpoint: it has no config.json "
                            f"(write one with neumuter export RUN --to merged --out DIR)")
    if not task_dir.is_dir():
        raise NeuMuterError(f"task directory {task_dir} does not exist")
    tasks = [tasks] if isinstance(tasks, str) else list(tasks)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")
    try:
        import lm_eval
        import lm_eval.tasks
    except ImportError:
        raise NeuMuterError("lm-eval is not installed: pip install lm-eval") from None
    output = lm_eval.simple_evaluate(
        model="hf", model_args={"pretrained": str(model_dir), "dtype": "float32"}, tasks=tasks,
        task_manager=lm_eval.tasks.TaskManager(include_path=str(task_dir)), limit=limit,
        batch_size=batch_size, device=device, log_samples=False)
    return {name: _plain_metrics(metrics) for name, metrics in output["results"].items()}
