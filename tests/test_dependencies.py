"""How the package declares what it needs: ranges in pyproject.toml, one exact lock for README's commands,
optional parts that say how to install them, and the install cell every chapter starts with.

The ranges must let the package install beside a hosted runtime's own packages (Colab's list:
requirements/hosted/colab-2026-08.txt); the lock (requirements/lock.txt) is what `make` installs.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import REPO
from padim_utils.course.launch import CHAPTER_EXTRAS, chapter_extras, colab_url, install_cell, links_table
from padim_utils.errors import PadimError
from padim_utils.extras import EXTRAS, install_command, missing, need, optional, repository

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
LOCK = REPO / "requirements" / "lock.txt"
COLAB = REPO / "requirements" / "hosted" / "colab-2026-08.txt"
#: The extras the lock holds (bench, anomalib's comparison, is installed on its own where it runs).
LOCKED_EXTRAS = ("notebooks", "onnx", "video", "lab", "site", "dev")


def _requirements(extras=LOCKED_EXTRAS) -> list[Requirement]:
    """pyproject.toml's requirements (core and `extras`), the package's references to itself left out."""
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        reqs += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return [r for r in reqs if canonicalize_name(r.name) != "padim-utils"]


def _pins(path: Path) -> dict[str, Version]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s;#]+)", line)
        if m:
            pins[canonicalize_name(m.group(1))] = Version(m.group(2))
    return pins


def test_no_dependency_is_pinned_and_none_is_capped():
    # ranges with a lower bound: an exact pin or a cap would replace what a runtime already has
    for extra, reqs in [("core", PROJECT["dependencies"]), *PROJECT["optional-dependencies"].items()]:
        for text in reqs:
            req = Requirement(text)
            if canonicalize_name(req.name) == "padim-utils":
                continue
            ops = {s.operator for s in req.specifier}
            assert ops == {">="}, f"{extra}: {text} should be a lower bound only"


def test_lower_bounds_admit_colabs_versions():
    colab = _pins(COLAB)
    assert {"torch", "torchvision", "numpy", "ipykernel", "ipywidgets"} <= set(colab)
    declared = {canonicalize_name(r.name): r for r in _requirements(("notebooks",))}
    for name, version in colab.items():
        assert name in declared, f"Colab's {name} is not a dependency"
        assert declared[name].specifier.contains(version), f"{declared[name]} refuses Colab's {name} {version}"


def test_python_versions_declared():
    assert PROJECT["requires-python"] == ">=3.11"
    versions = {c.rsplit(" ", 1)[-1] for c in PROJECT["classifiers"] if c.startswith("Programming Language")}
    assert {"3.11", "3.12", "3.13"} <= versions


def test_the_lock_pins_every_declared_dependency_inside_its_range():
    pins = _pins(LOCK)
    assert pins["torch"] == Version("2.14.1") and pins["torchvision"] == Version("0.29.1")
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{req} is declared but not in the lock: run `make lock`"
        assert req.specifier.contains(pins[name], prereleases=True), f"the lock's {name} {pins[name]} is outside {req}"


def _installed_from_lock() -> bool:
    try:
        return Version(importlib.metadata.version("torch").split("+")[0]) == _pins(LOCK)["torch"] and \
            sys.version_info[:2] == (3, 11)
    except importlib.metadata.PackageNotFoundError:
        return False


def _closure(roots: list[Requirement], environment: dict) -> dict[str, set[str]]:
    """name -> extras asked of it, for everything `roots` pull in, read from the installed packages' metadata."""
    needed: dict[str, set[str]] = {}
    todo = [(r, "") for r in roots]
    while todo:
        req, extra = todo.pop()
        if req.marker and not req.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(req.name)
        new = set(req.extras) - needed.get(name, set())
        if name in needed and not new:
            continue
        needed.setdefault(name, set()).update(req.extras)
        for asked in [""] + sorted(needed[name]):
            for text in importlib.metadata.requires(name) or []:
                todo.append((Requirement(text), asked))
    return needed


@pytest.mark.skipif(not _installed_from_lock(), reason="this environment was not installed from requirements/lock.txt")
def test_the_lock_is_current_closed_and_installed():
    # what `make` installed is the lock, the lock holds exactly what pyproject.toml's ranges pull in (nothing
    # stale, nothing missing), and every locked package's own requirements are met inside the lock
    pins, env = _pins(LOCK), default_environment()
    installed = {canonicalize_name(d.metadata["Name"]): Version(d.version) for d in importlib.metadata.distributions()}
    for name, version in pins.items():
        assert installed.get(name) == version, f"{name}: installed {installed.get(name)}, locked {version}"
    needed = _closure(_requirements(), env)
    assert set(pins) - set(needed) == set(), "locked but needed by nothing: run `make lock`"
    assert set(needed) - set(pins) == set(), "needed but not locked: run `make lock`"
    for name in pins:
        for text in importlib.metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker and not req.marker.evaluate({**env, "extra": ""}):
                continue
            dep = canonicalize_name(req.name)
            assert req.specifier.contains(pins[dep], prereleases=True), f"{name} needs {req}; the lock has {pins[dep]}"


def test_make_and_conda_install_the_lock():
    makefile = (REPO / "Makefile").read_text()
    assert "pip install -r $(LOCK)" in makefile and "LOCK := requirements/lock.txt" in makefile
    assert "pip install --no-deps -e ." in makefile
    env = (REPO / "environment.yml").read_text()
    assert "- -r requirements/lock.txt" in env and "- python=3.11" in env
    assert "with Python 3.11" in LOCK.read_text()  # pip-compile's header: the Python it resolved for


def test_extras_match_pyproject():
    declared = set(PROJECT["optional-dependencies"]) - {"dev"}
    assert set(EXTRAS) == declared
    names = {e: {canonicalize_name(r.name) for r in _requirements((e,))} for e in declared}
    owners = importlib.metadata.packages_distributions()
    for extra, (_, modules) in EXTRAS.items():
        for module in modules:
            dists = {canonicalize_name(d) for d in owners.get(module, [module])}
            assert dists & names[extra], f"{module} is not brought by the '{extra}' extra ({sorted(names[extra])})"


def test_a_missing_optional_part_is_one_line_naming_its_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "av" else real(name, *a))
    assert missing("video") == ["av"] and missing("onnx") == []
    url = PROJECT["urls"]["Repository"]
    with pytest.raises(PadimError) as e:
        need("video")
    text = str(e.value)
    assert "\n" not in text and "'video'" in text and "av not installed" in text
    assert f"pip install 'padim-utils[video] @ git+{url}'" in text and "pip install -e '.[video]'" in text
    with pytest.raises(PadimError, match=r"padim-utils\[video\]"):
        optional("av")
    with pytest.raises(PadimError, match="unknown optional part 'gpu'; choose one of notebooks"):
        need("gpu")
    assert optional("json") is json


@pytest.mark.parametrize("absent", ["onnxruntime", "onnxscript", "av"])
def test_the_onnx_and_video_paths_name_their_extra(absent, monkeypatch, tmp_path):
    import importlib.util

    from padim_utils.datasets.video import count_frames
    from padim_utils.export import export_onnx, onnx_session

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == absent else real(name, *a))
    extra = "video" if absent == "av" else "onnx"
    calls = {"av": [lambda: count_frames(tmp_path / "a.avi")],  # the modules each path imports
             "onnxruntime": [lambda: onnx_session(tmp_path / "a.onnx"), lambda: export_onnx(None, tmp_path / "a.onnx")],
             "onnxscript": [lambda: export_onnx(None, tmp_path / "a.onnx")]}
    for call in calls[absent]:
        with pytest.raises(PadimError, match=rf"needs the optional part '{extra}' \({absent} not installed\)"):
            call()


# --- where a learner opens the course: the repository's one address, the launch links, the install cell

def test_the_address_comes_from_pyproject():
    url = PROJECT["urls"]["Repository"]
    assert repository() == url  # read from the installed package's metadata
    assert install_command("onnx").startswith(f"pip install 'padim-utils[onnx] @ git+{url}'")
    path = url.removeprefix("https://github.com/")
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "chapters").glob("*.py"))]:
        for found in re.findall(r"github\.com/([\w.-]+/padim-course)", page.read_text()):
            assert found == path, f"{page.name} names {found}, not {path}: run `make links`"


def test_every_chapter_starts_with_its_install_cell():
    from padim_utils.course.book import read_notebook

    chapters = sorted((REPO / "chapters").glob("[0-9][0-9]_*.py"))
    assert set(CHAPTER_EXTRAS) <= {p.name[:2] for p in chapters}
    for path in chapters:
        code = [c for c in read_notebook(path).cells if c.cell_type == "code"]
        assert code[0].source + "\n" == install_cell(path.stem).split("\n", 1)[1], \
            f"{path.name}: its first code cell is not its install cell: run `make links`"
        assert code[0].metadata.get("tags") == ["install"] and code[0].metadata["cellView"] == "form"
        assert code[0].metadata["jupyter"] == {"source_hidden": True}  # folded: its title line shows
    assert chapter_extras("07_stc_video") == ("notebooks", "video")
    assert chapter_extras("11_deployment") == ("notebooks", "onnx")
    assert chapter_extras("04_mahalanobis_maps") == ("notebooks",)


def test_workshop_page_links_every_chapter_to_its_committed_notebook():
    page = (REPO / "docs" / "workshop.md").read_text()
    names = [p.stem for p in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))]
    assert len(names) == 12 and links_table(names) in page, "run `make links`"
    url = PROJECT["urls"]["Repository"].removeprefix("https://github.com/")
    assert colab_url(names[0]) == (f"https://colab.research.google.com/github/{url}/blob/main/notebooks/"
                                   "00_setup_and_data.ipynb")


def _cell_code(needs: tuple[str, ...]) -> str:
    code = install_cell("00_setup_and_data").split("\n", 1)[1]
    return re.sub(r"^NEEDS = .*$", f"NEEDS = {needs!r}", code, flags=re.M)


def _wheel(folder: Path, name: str, requires: list[str]) -> Path:
    """A minimal wheel of a one-module package `name` (what pip installs like any other)."""
    dist = f"{name}-1.0.dist-info"
    path = folder / f"{name}-1.0-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}.py", "ANSWER = 42\n")
        z.writestr(f"{dist}/METADATA", meta)
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return path


@pytest.fixture
def runtime(tmp_path):
    """A fresh venv whose Python also sees this environment's packages, pip included (as a hosted runtime has
    its own); what pip installs there lands in the fresh venv only."""
    import sysconfig

    venv = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    own = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    outer = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    Path(own, "outer.pth").write_text("".join(f"import site; site.addsitedir({p!r})\n" for p in outer))
    return python


def _run_cell(python: Path, code: str, hosted: bool, package: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("KAGGLE_KERNEL_RUN_TYPE",)}
    env.update({"PADIM_PACKAGE": package, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if hosted:
        env["KAGGLE_KERNEL_RUN_TYPE"] = "Interactive"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def _versions(python: Path) -> dict[str, str]:
    code = "import importlib.metadata as m, json; print(json.dumps({d.name: d.version for d in m.distributions()}))"
    return json.loads(subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout)


def test_install_cell_installs_on_a_hosted_runtime_and_keeps_every_package(runtime, tmp_path):
    wheel = _wheel(tmp_path, "padim_probe", ["numpy"])
    before = _versions(runtime)
    proc = _run_cell(runtime, _cell_code(("padim_probe",)), hosted=True, package=f"padim_probe @ {wheel.as_uri()}")
    assert proc.returncode == 0, proc.stderr
    after = _versions(runtime)
    assert after.pop("padim_probe") == "1.0"
    assert after == before  # numpy and every other package the runtime had: the same versions


def test_install_cell_refuses_to_replace_a_runtimes_package(runtime, tmp_path):
    numpy = importlib.metadata.version("numpy")
    wheel = _wheel(tmp_path, "padim_probe", [f"numpy!={numpy}"])
    proc = _run_cell(runtime, _cell_code(("padim_probe",)), hosted=True, package=f"padim_probe @ {wheel.as_uri()}")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == ("pip could not install the course beside this runtime's "
                                                     "packages (see above)")
    assert _versions(runtime)["numpy"] == numpy and "padim_probe" not in _versions(runtime)


def test_install_cell_does_nothing_where_the_package_is_and_one_line_elsewhere(runtime, tmp_path):
    proc = _run_cell(runtime, _cell_code(("padim_utils", "numpy")), hosted=True, package="no-such-thing")
    assert proc.returncode == 0 and proc.stdout == "" and proc.stderr == ""  # pip never ran
    proc = _run_cell(runtime, _cell_code(("padim_utils", "padim_probe")), hosted=False, package="padim-utils[x] @ u")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "padim_probe not installed in this kernel: pip install 'padim-utils[x] @ u'"


def _uv() -> str | None:
    try:
        from uv import find_uv_bin
    except ImportError:
        return None
    return find_uv_bin()


@pytest.mark.skipif(_uv() is None, reason="uv is not installed (it comes with the dev extra)")
def test_ranges_resolve_beside_colabs_packages(tmp_path):
    # metadata only: the notebooks' extras resolve for Python 3.13 with Colab's versions held as they are
    cmd = [_uv(), "pip", "compile", str(REPO / "pyproject.toml"), "--extra", "notebooks", "--extra", "onnx",
           "--extra", "video", "--python-version", "3.13", "--python-platform", "x86_64-manylinux_2_28",
           "-c", str(COLAB), "--no-header", "--no-annotate", "--quiet", "-o", str(tmp_path / "resolved.txt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode and re.search(r"(?i)dns|connect|network|offline|timed out", proc.stderr):
        pytest.skip(f"the package index is not reachable: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stderr
    resolved = _pins(tmp_path / "resolved.txt")
    for name, version in _pins(COLAB).items():
        assert resolved[name] == version, f"{name} would change from Colab's {version} to {resolved[name]}"
