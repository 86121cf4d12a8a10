"""The course on a Colab-like runtime: install beside Colab's packages, run the chapters, run the fast tests.

    .venv/bin/python benchmarks/hosted_check.py --venv /tmp/colab313            # builds the venv if absent
    .venv/bin/python benchmarks/hosted_check.py --venv /tmp/colab313 --tests    # + the fast tests there

1. A Python 3.13 venv holding Colab's versions (requirements/hosted/colab-2026-08.txt), made if absent.
2. Chapter 00, as Colab would open it (the committed .ipynb, in a folder outside the repository), runs in
   that venv's kernel with KAGGLE_KERNEL_RUN_TYPE set, so its first cell sees a hosted runtime without the
   package and installs it as it would there (here from a wheel of this checkout, through PADIM_PACKAGE, since
   the repository's address is not reachable from this machine). `pip freeze` before and after: no package
   that was there may change.
3. Chapters 00-05 and 08 run in quick mode in that kernel (a learner's Run All: solutions not run), each
   from the same working folder, where their data home (./data) must appear.
4. With --tests: the test tools and every optional part are added, every package Colab has kept at Colab's
   version and every other declared dependency at its lower bound in pyproject.toml, then
   `pytest -m "not slow"` runs on Python 3.13.

Writes benchmarks/results/hosted_colab.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
COLAB = REPO / "requirements" / "hosted" / "colab-2026-08.txt"
CHAPTERS = ("00", "01", "02", "03", "04", "05", "08")
RESULTS = REPO / "benchmarks" / "results"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    print("$", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, text=True, **kw)


def freeze(python: Path) -> dict[str, str]:
    out = run([python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"],
              capture_output=True).stdout
    return {p["name"].lower(): p["version"] for p in json.loads(out)}


def colab_pins() -> dict[str, str]:
    pins = {}
    for line in COLAB.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    return pins


def lowest_pins() -> dict[str, str]:
    """Every dependency pyproject.toml declares (core and extras, bench aside), at its lower bound."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra, items in project["optional-dependencies"].items():
        if extra != "bench":
            reqs += items
    pins = {}
    for req in map(Requirement, reqs):
        lower = [s.version for s in req.specifier if s.operator == ">="]
        if lower:
            pins[canonicalize_name(req.name)] = lower[0]
    return pins


def build_venv(venv: Path) -> dict:
    start = time.perf_counter()
    python313 = os.environ.get("PYTHON313", "python3.13")
    run([python313, "-m", "venv", venv])
    run([venv / "bin/python", "-m", "pip", "install", "-q", "--upgrade", "pip"])
    run([venv / "bin/python", "-m", "pip", "install", "-q", "-r", COLAB])
    return {"seconds": round(time.perf_counter() - start, 1)}


def kernel_dir(venv: Path, root: Path) -> Path:
    """A kernelspec named python3 that starts the venv's Python: what nbclient's "python3" then finds first."""
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin/python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab-like Python 3.13", "language": "python"}))
    return root


def execute(ipynb: Path, cwd: Path, env: dict[str, str]) -> float:
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ipynb, as_version=4)
    old = dict(os.environ)
    os.environ.update(env)
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
        seconds = time.perf_counter() - start
    finally:
        os.environ.clear()
        os.environ.update(old)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        raise SystemExit(f"{ipynb.name}: {errors[0]['ename']}: {errors[0]['evalue']}")
    figures = sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
    print(f"{ipynb.name}: {seconds:.1f} s, {figures} figures", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--venv", type=Path, required=True, help="the Colab-like venv (made if absent)")
    parser.add_argument("--tests", action="store_true", help="also run the fast tests in that venv")
    args = parser.parse_args()
    venv, python = args.venv.resolve(), args.venv.resolve() / "bin" / "python"
    record: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "colab_list": COLAB.name}
    if not python.exists():
        record["venv_build"] = build_venv(venv)
    before = freeze(python)
    pins = colab_pins()
    assert all(before.get(k) == v for k, v in pins.items()), "the venv does not hold Colab's versions"
    assert "padim-utils" not in before, f"{venv} has padim-utils already: start from a fresh venv"
    record["python"] = run([python, "-c", "import platform; print(platform.python_version())"],
                           capture_output=True).stdout.strip()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp / "wheel", REPO])
        wheel = next((tmp / "wheel").glob("padim_utils-*.whl"))
        work = tmp / "content"  # Colab's working folder: the notebooks are opened from here
        work.mkdir()
        env = {"JUPYTER_PATH": str(kernel_dir(venv, tmp / "jupyter")), "KAGGLE_KERNEL_RUN_TYPE": "Interactive",
               "PADIM_PACKAGE": f"padim-utils[notebooks] @ {wheel.as_uri()}", "PADIM_QUICK": "1",
               "PADIM_DEVICE": "cpu", "PADIM_PROGRESS": "0", "PYDEVD_DISABLE_FILE_VALIDATION": "1",
               "PIP_REPORT": str(tmp / "pip-report.json"), "PADIM_DATA": ""}  # data home: ./data of the kernel
        seconds = {}
        for chapter in CHAPTERS:
            ipynb = next((REPO / "notebooks").glob(f"{chapter}_*.ipynb"))
            copy = work / ipynb.name
            copy.write_bytes(ipynb.read_bytes())
            seconds[ipynb.stem] = round(execute(copy, work, env), 1)
            if chapter == "00":
                after = freeze(python)
                changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
                added = {k: v for k, v in after.items() if k not in before}
                report = json.loads((tmp / "pip-report.json").read_text())
                sources = {i["metadata"]["name"].lower(): i["download_info"]["url"].split(":")[0]
                           for i in report["install"]}
                record["install"] = {"changed": changed, "added": added, "from": sources,
                                     "chapter_00_seconds_with_install": seconds[ipynb.stem]}
                assert not changed, f"the install changed preinstalled packages: {changed}"
        record["chapters_quick_seconds"] = seconds
        record["data_home"] = sorted(p.name for p in (work / "data").iterdir()) if (work / "data").is_dir() else []
        assert record["data_home"], "no data home under the kernel's working folder"

    if args.tests:
        lowest = {k: v for k, v in lowest_pins().items() if k not in pins}
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
            f.write("".join(f"{k}=={v}\n" for k, v in {**lowest, **pins}.items()))
        start = time.perf_counter()
        run([python, "-m", "pip", "install", "-q", "-c", f.name, "-e", f"{REPO}[dev]"])
        record["test_install_seconds"] = round(time.perf_counter() - start, 1)
        installed = freeze(python)
        record["tested_versions"] = {k: installed.get(k) for k in sorted({**lowest, **pins})}
        start = time.perf_counter()
        proc = subprocess.run([python, "-m", "pytest", "-m", "not slow", "-q", "-p", "no:cacheprovider"], cwd=REPO,
                              text=True, capture_output=True)
        tail = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else proc.stderr[-500:]
        record["fast_tests"] = {"exit": proc.returncode, "summary": tail,
                                "seconds": round(time.perf_counter() - start, 1),
                                "failures": re.findall(r"^FAILED (.+)$", proc.stdout, flags=re.M)}
        print(proc.stdout[-3000:])

    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "hosted_colab.json").write_text(json.dumps(record, indent=1) + "\n")
    (RESULTS / "hosted_colab.md").write_text(report_markdown(record))
    print(json.dumps(record, indent=1))


def report_markdown(record: dict) -> str:
    from padim_utils.markdown import markdown_table

    install = record["install"]
    lines = [f"# The course on a Colab-like runtime (Python {record['python']}, Colab's versions)", "",
             f"Machine: {record['machine']}, no GPU. Made by `benchmarks/hosted_check.py`.", ""]
    if "venv_build" in record:
        lines += [f"Building the venv with Colab's versions ({record['colab_list']}) took "
                  f"{record['venv_build']['seconds']} s.", ""]
    lines += ["## Chapter 00's install cell, on a runtime without the package",
              f"Preinstalled packages changed: {len(install['changed']) or 'none'}. "
              f"Added: {len(install['added'])} packages. Chapter 00 with the install: "
              f"{install['chapter_00_seconds_with_install']} s.", "",
              markdown_table([{"package": k, "version": v, "from": install["from"].get(k, "")}
                              for k, v in sorted(install["added"].items())]), "",
              "`from`: https is a download from the package index; file is this machine's local wheel store "
              "(or the course's own wheel).", "",
              "## Chapters in quick mode, in that kernel, from a folder outside the repository",
              markdown_table([{"chapter": k, "seconds": v} for k, v in record["chapters_quick_seconds"].items()],
                             formats={"seconds": ".1f"}), "",
              f"Data home created under the kernel's working folder: `data/` holding {', '.join(record['data_home'])}.",
              ""]
    if "fast_tests" in record:
        tests = record["fast_tests"]
        lines += ["## The fast tests on Python 3.13",
                  "Colab's versions kept; every other declared dependency at its lower bound in pyproject.toml:", "",
                  markdown_table([{"package": k, "version": v} for k, v in record["tested_versions"].items()]), "",
                  f"`pytest -m \"not slow\"`: **{tests['summary']}** in {tests['seconds']} s "
                  f"(installing the test tools took {record['test_install_seconds']} s).", ""]
        lines += [f"- FAILED {f}" for f in tests["failures"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
