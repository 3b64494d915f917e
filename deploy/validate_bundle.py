"""Validate the Databricks bundle offline (the Databricks CLI is not needed): `python deploy/validate_bundle.py`.

Two layers:
1. every job through the typed models of `databricks-bundles` (`Job.from_dict` rejects an unknown or misspelt
   field at any depth), after the bundle's variables are substituted for each target;
2. our own checks, what the CLI could not know: each task's wheel entry point exists in the wheel we build; its
   parameters parse as that command's options; its `--set` keys and values are valid configuration (loaded with
   the target's variables, exactly as the job will load them); every file it names (conf, init script, wheel
   folder) is in the repository; every variable is declared; the task graph has no cycle and runs the
   pipeline's stages in the pipeline's order.
Exit code 1 with one line per problem.
"""

from __future__ import annotations

import configparser
import glob
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
VAR = re.compile(r"\$\{var\.([A-Za-z0-9_]+)\}")
WORKSPACE_FILES = "${workspace.file_path}/"


class BundleError(ValueError):
    pass


def load_bundle(deploy: Path = DEPLOY) -> dict:
    """databricks.yml with every `include` merged (resources by kind and name), as the CLI reads it."""
    bundle = yaml.safe_load((deploy / "databricks.yml").read_text())
    resources: dict = {}
    for pattern in bundle.get("include", []):
        files = sorted(glob.glob(str(deploy / pattern)))
        if not files:
            raise BundleError(f"include {pattern!r} matches no file")
        for f in files:
            part = yaml.safe_load(Path(f).read_text()) or {}
            for kind, items in part.get("resources", {}).items():
                for name, body in items.items():
                    if name in resources.setdefault(kind, {}):
                        raise BundleError(f"{f}: resource {kind}.{name} defined twice")
                    resources[kind][name] = {**body, "_file": f}
    bundle["resources"] = resources
    return bundle


def target_variables(bundle: dict, target: str) -> dict[str, object]:
    declared = bundle.get("variables", {})
    values = {k: v.get("default") for k, v in declared.items()}
    overrides = (bundle["targets"][target] or {}).get("variables", {}) or {}
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise BundleError(f"target {target}: variables {unknown} are not declared")
    values.update(overrides)
    missing = [k for k, v in values.items() if v is None]
    if missing:
        raise BundleError(f"target {target}: variables {missing} have no value")
    return values


def substitute(value, variables: dict[str, object]):
    """${var.x} replaced everywhere; a string that is exactly one variable takes the variable's type."""
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, str):
        for name in VAR.findall(value):
            if name not in variables:
                raise BundleError(f"${{var.{name}}} is used but not declared")
        whole = VAR.fullmatch(value)
        if whole:
            return variables[whole.group(1)]
        return VAR.sub(lambda m: str(variables[m.group(1)]), value)
    return value


def typed_jobs(bundle: dict, variables: dict[str, object]) -> dict:
    """Every job through databricks-bundles' typed model: an unknown or misspelt field fails here."""
    from databricks.bundles.jobs import Job

    out = {}
    for name, body in bundle["resources"].get("jobs", {}).items():
        body = substitute({k: v for k, v in body.items() if k != "_file"}, variables)
        try:
            out[name] = Job.from_dict(body)
        except (ValueError, TypeError) as e:
            raise BundleError(f"job {name}: {e}") from None
    return out


def wheel_entry_points(wheel: Path) -> tuple[str, set[str]]:
    """(top-level package, console scripts) of a built wheel."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt"))
        top = next(n for n in z.namelist() if n.endswith(".dist-info/top_level.txt"))
        parser = configparser.ConfigParser()
        parser.read_string(z.read(meta).decode())
        package = z.read(top).decode().split()[0]
    return package, set(parser["console_scripts"]) if parser.has_section("console_scripts") else set()


def build_wheel(out: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(ROOT)], check=True, capture_output=True)
    return next(out.glob("customer_value-*.whl"))


def task_order(name: str, tasks: list[dict]) -> list[str]:
    """Task keys in dependency order; a cycle or an unknown dependency is an error."""
    deps = {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])] for t in tasks}
    for key, ds in deps.items():
        for d in ds:
            if d not in deps:
                raise BundleError(f"job {name}: task {key} depends on unknown task {d}")
    order, state = [], {}

    def visit(k: str, path: list[str]) -> None:
        if state.get(k) == "done":
            return
        if state.get(k) == "visiting":
            raise BundleError(f"job {name}: tasks form a cycle: {' -> '.join([*path, k])}")
        state[k] = "visiting"
        for d in deps[k]:
            visit(d, [*path, k])
        state[k] = "done"
        order.append(k)

    for k in deps:
        visit(k, [])
    return order


def check_task(job: str, task: dict, bundle_file: str, variables: dict, package: str, scripts: set[str],
               dist: Path = ROOT / "dist") -> str | None:
    """One task's wheel call, parameters, files and configuration; returns the pipeline stage it runs, if any."""
    import typer.main

    from customer_value.cli import app
    from customer_value.config import load_config

    key = task["task_key"]
    wheel_task = task.get("python_wheel_task")
    if wheel_task is None:
        raise BundleError(f"job {job}, task {key}: not a python_wheel_task")
    if wheel_task["package_name"] != package:
        raise BundleError(f"job {job}, task {key}: package {wheel_task['package_name']!r} is not the wheel's {package!r}")
    if wheel_task["entry_point"] not in scripts:
        raise BundleError(f"job {job}, task {key}: entry point {wheel_task['entry_point']!r} not in the wheel "
                          f"(has: {sorted(scripts)})")
    for lib in task.get("libraries", []):
        folder = (Path(bundle_file).parent / lib["whl"]).parent.resolve()
        if folder != dist.resolve():
            raise BundleError(f"job {job}, task {key}: library {lib['whl']} is not where the artifact builds (dist/)")
    params = [str(p) for p in substitute(wheel_task.get("parameters", []), variables)]
    command, args = params[0], params[1:]
    click_app = typer.main.get_command(app)
    if command not in click_app.commands:
        raise BundleError(f"job {job}, task {key}: {command!r} is not a customer-value command")
    try:
        click_app.commands[command].make_context(command, list(args), resilient_parsing=False)
    except Exception as e:     # click's UsageError / BadParameter
        raise BundleError(f"job {job}, task {key}: parameters {args} do not parse: {e}") from None
    conf = args[args.index("--conf") + 1] if "--conf" in args else "conf/local.yaml"
    conf_path = ROOT / conf.removeprefix(WORKSPACE_FILES)
    if not conf_path.is_file():
        raise BundleError(f"job {job}, task {key}: --conf {conf} is not a file of the repository")
    overrides = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
    try:
        load_config(conf_path, overrides)
    except Exception as e:
        raise BundleError(f"job {job}, task {key}: configuration {overrides}: {e}") from None
    from customer_value.pipeline import stage_names

    stage = args[args.index("--only") + 1] if command == "pipeline" and "--only" in args else None
    if stage is not None and stage not in stage_names():
        raise BundleError(f"job {job}, task {key}: --only {stage!r} is not a pipeline stage ({stage_names()})")
    return stage


def check_files(job: str, body: dict) -> None:
    for cluster in body.get("job_clusters", []):
        for script in cluster.get("new_cluster", {}).get("init_scripts", []):
            dest = next(iter(script.values()))["destination"]
            if not (ROOT / dest.removeprefix(WORKSPACE_FILES)).is_file():
                raise BundleError(f"job {job}: init script {dest} is not a file of the repository")


def validate(deploy: Path = DEPLOY, wheel: Path | None = None) -> list[str]:
    """Every problem found, one line each (empty: the bundle is valid). `wheel`: an already built wheel of this
    checkout (built here when not given; a caller checking many bundles builds it once)."""
    from customer_value.pipeline import stage_names

    problems: list[str] = []
    try:
        bundle = load_bundle(deploy)
    except BundleError as e:
        return [str(e)]
    if wheel is None:
        with tempfile.TemporaryDirectory() as tmp:
            package, scripts = wheel_entry_points(build_wheel(Path(tmp)))
    else:
        package, scripts = wheel_entry_points(wheel)
    order = stage_names()
    for target in bundle.get("targets", {}):
        try:
            variables = target_variables(bundle, target)
            typed_jobs(bundle, variables)
            for job, body in bundle["resources"].get("jobs", {}).items():
                check_files(job, body)
                tasks = {t["task_key"]: t for t in body["tasks"]}
                stages = [check_task(job, tasks[k], body["_file"], variables, package, scripts, deploy.parent / "dist")
                          for k in task_order(job, body["tasks"])]
                stages = [s for s in stages if s]
                if stages != sorted(stages, key=order.index):
                    raise BundleError(f"job {job}: stages run in the order {stages}, the pipeline's is {order}")
        except BundleError as e:
            problems.append(f"target {target}: {e}")
    return problems


def main() -> None:
    problems = validate()
    for p in problems:
        print(p, file=sys.stderr)
    if problems:
        sys.exit(1)
    print("bundle valid: every job typed, every task's entry point, parameters, files and configuration checked")


if __name__ == "__main__":
    main()
