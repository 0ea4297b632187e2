"""ci/: the templates users copy work, not only parse: the GitHub workflow's `run:` steps run in
order, with its environment, on the digits sample in a temporary repository; `edgeq matrix`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import invoke_cli, make_model_dir

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "ci" / "github" / "edgeq.yml"
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


def _workflow() -> dict[str, Any]:
    import yaml

    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def _value(text: str, matrix: dict[str, Any]) -> str:
    """A step's env value with its ``${{ matrix.X }}`` expressions evaluated (the only ones allowed there)."""
    def one(m: re.Match[str]) -> str:
        kind, _, key = m[1].partition(".")
        assert kind == "matrix", m[0]
        return str(matrix[key])

    return EXPRESSION.sub(one, text)


def _run_steps(job: dict[str, Any], env: dict[str, str], cwd: Path, matrix: dict[str, Any] | None = None) -> None:
    for step in job["steps"]:
        if "run" not in step:
            continue  # a GitHub action (checkout, cache, upload): GitHub's, not the template's
        step_env = {**env, **{k: _value(str(v), matrix or {}) for k, v in step.get("env", {}).items()}}
        done = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=cwd, env=step_env,
                              capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, (step.get("name"), done.stdout[-3000:], done.stderr[-3000:])


GITLAB = [ROOT / "ci" / "gitlab" / ".gitlab-ci.yml", ROOT / "ci" / "gitlab" / "edgeq-build.yml"]


def _scripts() -> list[tuple[str, str]]:
    """(where, shell script) of every GitHub `run:` step and every GitLab script section."""
    import yaml

    out = [(f"{WORKFLOW.name}: {job}/{step.get('name', '?')}", step["run"])
           for job, spec in _workflow()["jobs"].items() for step in spec["steps"] if "run" in step]
    for path in GITLAB:
        for job, spec in yaml.safe_load(path.read_text(encoding="utf-8")).items():
            for section in ("before_script", "script", "after_script"):
                if isinstance(spec, dict) and section in spec:
                    out.append((f"{path.name}: {job}/{section}", "\n".join(spec[section])))
    return out


def test_every_script_of_the_templates_passes_shellcheck() -> None:
    """What actionlint runs on a workflow's scripts (actionlint itself cannot be installed offline):
    shellcheck, warnings and errors (the deliberate word splitting of $EDGEQ_PIP_SPEC is info)."""
    shellcheck = Path(sys.executable).parent / "shellcheck"
    scripts = _scripts()
    assert len(scripts) >= 8
    for where, script in scripts:
        done = subprocess.run([str(shellcheck), "--shell=bash", "--severity=warning", "-"], input=script,
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, (where, done.stdout)
    broken = subprocess.run([str(shellcheck), "--shell=bash", "--severity=warning", "-"], input='cd $1\nrm -rf "$x/"*',
                            capture_output=True, text=True, timeout=120, check=False)
    assert broken.returncode != 0  # it does find problems


def test_the_templates_follow_their_ci_systems_schemas(tmp_path: Path) -> None:
    """GitHub's workflow schema and GitLab's CI schema, as bundled with check-jsonschema (offline)."""
    check = Path(sys.executable).parent / "check-jsonschema"
    for schema, files in (("vendor.github-workflows", [WORKFLOW]), ("vendor.gitlab-ci", GITLAB)):
        done = subprocess.run([str(check), "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True,
                              timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
    bad = tmp_path / "edgeq.yml"
    bad.write_text(WORKFLOW.read_text(encoding="utf-8").replace("runs-on:", "runs_on:"), encoding="utf-8")
    done = subprocess.run([str(check), "--builtin-schema", "vendor.github-workflows", str(bad)], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 1 and "runs_on" in done.stdout


def test_no_run_script_expands_an_expression() -> None:
    """Matrix values (folder names) reach the scripts as environment variables only: an expression inside
    a script would paste a crafted folder name into the shell (script injection)."""
    wf = _workflow()
    runs = [s["run"] for job in wf["jobs"].values() for s in job["steps"] if "run" in s]
    assert runs and not any("${{" in r for r in runs)
    assert wf["jobs"]["build"]["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"


def test_the_workflow_runs_on_a_sample(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "sample_models" / "digits", repo / "models" / "digits",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wf = _workflow()
    outputs, summary = tmp_path / "github_output", tmp_path / "step_summary"
    env = {**{k: str(v) for k, v in wf["env"].items()},
           # the workflow's own values, but pip installs nothing new here (edgeq is this checkout) and the
           # build validates on the host runtimes only, to keep the test short
           "EDGEQ_PIP_SPEC": "--no-index --no-deps pip", "EDGEQ_BUILD_ARGS": "-r litert -r litert-ref",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "HOME": os.environ["HOME"],
           "GITHUB_OUTPUT": str(outputs), "GITHUB_STEP_SUMMARY": str(summary),
           "EDGEQ_CACHE_DIR": str(tmp_path / "cache")}  # the workflow caches ~/.cache/edgeq: a folder of its own here
    _run_steps(wf["jobs"]["matrix"], env, repo)
    line = outputs.read_text(encoding="utf-8").strip()
    assert line.startswith("matrix=")
    include = json.loads(line.removeprefix("matrix="))["include"]
    assert [(e["model"], e["path"], e["target"]) for e in include] == [("digits", "models/digits", "android")]
    _run_steps(wf["jobs"]["build"], env, repo, include[0])
    from junitparser import JUnitXml

    cases = [c for suite in JUnitXml.fromfile(str(repo / "results" / "digits-android.xml")) for c in suite]
    assert cases and all(c.is_passed for c in cases)
    assert (repo / "dist" / "digits-android-int8" / "model.tflite").is_file()
    assert summary.read_text(encoding="utf-8").startswith("### edgeq: digits for android, int8 - PASSED")


def test_matrix_lists_model_folders_with_a_content_hash(tmp_path: Path) -> None:
    models = tmp_path / "models"
    make_model_dir(models, dirname="a")
    make_model_dir(models, dirname="b")
    (models / "notes").mkdir()  # no edgeq.toml: not a model
    result = invoke_cli(["matrix", str(models), "-t", "android", "-t", "linux-arm64"])
    assert result.exit_code == 0, result.stderr
    include = json.loads(result.stdout)["include"]
    assert [(Path(e["path"]).name, e["target"]) for e in include] == [
        ("a", "android"), ("a", "linux-arm64"), ("b", "android"), ("b", "linux-arm64")]
    assert include[0]["hash"] == include[2]["hash"]  # the same files
    (models / "b" / "labels.txt").write_text("changed\n")
    (models / "a" / "__pycache__").mkdir()
    (models / "a" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
    again = json.loads(invoke_cli(["matrix", str(models)]).stdout)["include"]
    assert again[0]["hash"] == include[0]["hash"] != again[1]["hash"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["matrix", "/nonexistent/models"], "no such folder"),
    (["matrix", "{empty}"], "no folder in it holds an edgeq.toml"),
    (["matrix", "{empty}", "-t", "phone"], "unknown target 'phone'"),
])
def test_matrix_refusals(tmp_path: Path, args: list[str], fragment: str) -> None:
    (tmp_path / "empty").mkdir()
    result = invoke_cli([a.replace("{empty}", str(tmp_path / "empty")) for a in args])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and fragment in result.stderr, result.stderr


def test_the_gitlab_template_makes_one_child_job_per_matrix_entry(tmp_path: Path) -> None:
    """GitLab builds a child pipeline from `edgeq matrix`: the parent's generator (its heredoc, run here on
    a real matrix) writes one job per model and target, extending the build job of ci/gitlab/edgeq-build.yml."""
    import yaml

    parent = yaml.safe_load((ROOT / "ci" / "gitlab" / ".gitlab-ci.yml").read_text(encoding="utf-8"))
    build = yaml.safe_load((ROOT / "ci" / "gitlab" / "edgeq-build.yml").read_text(encoding="utf-8"))
    script = parent["edgeq-matrix"]["script"]
    generator = next(line for line in script if "<<'PY'" in line)
    models = tmp_path / "models"
    make_model_dir(models, dirname="a")
    (tmp_path / "matrix.json").write_text(invoke_cli(["matrix", str(models), "-t", "android", "-t", "linux-arm64"]).stdout)
    done = subprocess.run(["bash", "-e", "-c", generator], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    child = yaml.safe_load((tmp_path / "edgeq-builds.yml").read_text(encoding="utf-8"))
    assert child["include"] == [{"local": "ci/gitlab/edgeq-build.yml"}]
    jobs = {k: v for k, v in child.items() if k != "include"}
    assert sorted(jobs) == ["tiny for android", "tiny for linux-arm64"]
    assert all(j["extends"] == ".edgeq-build" and j["variables"]["MODEL_PATH"] == str(models / "a") for j in jobs.values())
    job = build[".edgeq-build"]
    assert job["artifacts"]["reports"]["junit"] == "results/*.xml" and job["artifacts"]["when"] == "always"
    assert any("--junit" in line and "$EDGEQ_BUILD_ARGS" in line for line in job["script"])
    assert parent["edgeq-build"]["trigger"]["include"] == [{"artifact": "edgeq-builds.yml", "job": "edgeq-matrix"}]
