"""The model archive: what ``tools.archive.build_archive`` packs, and the worker's layering."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from tests.standins import write_standin
from tools.archive import FORBIDDEN_IN_WORKER, HANDLER_ENTRY, ArchiveError, build_archive, worker_modules


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> zipfile.ZipFile:
    work = tmp_path_factory.mktemp("archive")
    mar = build_archive(write_standin(work / "standin.pt"), work / "store")
    assert mar == work / "store" / "geoseg.mar"
    with zipfile.ZipFile(mar) as z:  # a .mar is a zip
        yield z


def test_archive_holds_the_worker_closure_model_and_config(archive):
    names = set(archive.namelist())
    modules = {m.as_posix() for m in worker_modules()}
    assert {"handler/geoseg_handler.py", "handler/inference.py", "handler/metrics.py",
            "model/artifact.py"} <= modules
    assert modules <= names, modules - names
    manifest = json.loads(archive.read("MAR-INF/MANIFEST.json"))["model"]
    assert manifest["handler"] == HANDLER_ENTRY.name and HANDLER_ENTRY.name in names
    assert manifest["serializedFile"] == "standin.pt" and "standin.pt" in names
    assert manifest["configFile"] == "model-config.yaml" and "model-config.yaml" in names
    assert archive.read(HANDLER_ENTRY.name) == HANDLER_ENTRY.read_bytes()


def test_archive_holds_nothing_the_worker_must_not_import(archive):
    assert set(FORBIDDEN_IN_WORKER) >= {"training", "tools", "benchmarks"}
    packed = [n for n in archive.namelist() if n.split("/")[0] in FORBIDDEN_IN_WORKER]
    assert packed == []


def _project(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_worker_modules_follow_imports_inside_the_given_root(tmp_path):
    root = _project(tmp_path, {
        "handler/__init__.py": "", "handler/entry.py": "import os\nfrom handler import util\n",
        "handler/util.py": "from model.contract import load\n", "model/__init__.py": "",
        "model/contract.py": "import numpy\n", "training/__init__.py": "",
    })
    found = worker_modules(root / "handler" / "entry.py", root=root)
    assert [p.as_posix() for p in found] == ["handler/__init__.py", "handler/entry.py",
                                             "handler/util.py", "model/__init__.py",
                                             "model/contract.py"]


@pytest.mark.parametrize("statement", ["import training.losses.focal", "from training import losses",
                                       "from tools.server import TorchServe"])
def test_worker_modules_refuse_a_handler_that_imports_training_or_tools(tmp_path, statement):
    root = _project(tmp_path, {
        "handler/__init__.py": "", "handler/entry.py": "from handler import util\n",
        "handler/util.py": f"{statement}\n", "training/__init__.py": "",
        "training/losses/focal.py": "", "tools/__init__.py": "", "tools/server.py": "",
    })
    with pytest.raises(ArchiveError, match=r"handler/util\.py imports (training|tools)"):
        worker_modules(root / "handler" / "entry.py", root=root)


def test_serve_shared_dir_archives_the_config_with_the_folder(tmp_path):
    import stat

    import yaml

    from handler.inference import HandlerConfig
    from tools.archive import MODEL_CONFIG, config_with_handler
    from tools.serve import archive_for

    base = yaml.safe_load(MODEL_CONFIG.read_text())
    folder = tmp_path / "shm" / "geoseg"
    mar = archive_for(write_standin(tmp_path / "standin.pt"), str(tmp_path / "store"), folder)
    with zipfile.ZipFile(mar) as z:
        packed = yaml.safe_load(z.read("model-config.yaml"))
    assert {k: v for k, v in packed.items() if k != "handler"} == {
        k: v for k, v in base.items() if k != "handler"}  # TorchServe's keys as they were
    assert HandlerConfig.from_mapping(packed["handler"]) == HandlerConfig(shared_dir=str(folder))
    assert folder.is_dir() and stat.S_IMODE(folder.stat().st_mode) == 0o770
    with pytest.raises(ArchiveError):  # the handler refuses a relative folder
        config_with_handler(MODEL_CONFIG, shared_dir="relative")
    (tmp_path / "file").write_text("")
    with pytest.raises(ArchiveError):
        archive_for(tmp_path / "standin.pt", str(tmp_path / "store"), tmp_path / "file")
    (tmp_path / "odd.yaml").write_text("just words\n")
    with pytest.raises(ArchiveError, match="mapping"):
        config_with_handler(tmp_path / "odd.yaml", shared_dir=str(folder))
    folder.chmod(0o755)  # an existing folder keeps its mode
    archive_for(tmp_path / "standin.pt", str(tmp_path / "store"), folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
