"""The pack as ComfyUI and the registries see it: entry point, metadata, house rules."""

import ast
import glob
import os
import re
import subprocess
import sys

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10, which the pack supports (requires-python >= 3.10)
    import tomli as tomllib

import genaffect

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK_SOURCES = [p for p in glob.glob(os.path.join(REPO, "**", "*.py"), recursive=True)
                if os.sep + "tests" + os.sep not in p and os.sep + "benchmarks" + os.sep not in p]


def requirement_lines(path):
    with open(path) as handle:
        return [line.strip() for line in handle if line.strip() and not line.startswith("#")]


def test_entry_point_exports_what_comfyui_reads():
    assert set(genaffect.__all__) == {"NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"}
    assert {"GenAffectFaceAnalyzerLoader", "GenAffectExtractIdentity", "GenAffectCheckModels"} <= set(genaffect.NODE_CLASS_MAPPINGS)
    assert set(genaffect.NODE_DISPLAY_NAME_MAPPINGS) == set(genaffect.NODE_CLASS_MAPPINGS)
    assert os.path.isdir(os.path.join(REPO, genaffect.WEB_DIRECTORY))


def test_pack_imports_without_comfyui_opencv_or_mediapipe_and_without_loading_models():
    # a fresh interpreter: importing the pack must not import comfy, insightface, onnxruntime or OpenCV (a broken
    # install of any of them must not take every node down)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('pack', {os.path.join(REPO, '__init__.py')!r}, "
        f"submodule_search_locations=[{REPO!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['pack'] = m; spec.loader.exec_module(m)\n"
        "print(len(m.NODE_CLASS_MAPPINGS), [x for x in ('comfy', 'insightface', 'onnxruntime', 'cv2', 'mediapipe') if x in sys.modules])\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{len(genaffect.NODE_CLASS_MAPPINGS)} []"


def test_registry_metadata():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as handle:
        meta = tomllib.load(handle)
    project, comfy = meta["project"], meta["tool"]["comfy"]
    assert project["name"] == "genaffect" and "comfyui" not in project["name"].lower()
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["license"] == {"file": "LICENSE"} and os.path.isfile(os.path.join(REPO, "LICENSE"))
    assert project["urls"]["Repository"].startswith("https://")
    assert {"PublisherId", "DisplayName", "Icon", "requires-comfyui"} <= set(comfy)
    assert sorted(project["dependencies"]) == sorted(requirement_lines(os.path.join(REPO, "requirements.txt")))


def test_torch_is_left_to_comfyui():
    for line in requirement_lines(os.path.join(REPO, "requirements.txt")):
        assert not re.match(r"(torch|torchvision|torchaudio)\b", line), line


def _imports(path):
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield 0, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.level, node.module or ""


def test_inside_the_pack_only_relative_imports_reach_our_modules():
    for path in PACK_SOURCES:
        for level, module in _imports(path):
            if level == 0:
                assert module.split(".")[0] not in ("nodes", "models"), f"{path}: absolute import of {module}"


def _resolved(path: str, level: int, module: str) -> str:
    """The dotted name, from the pack's root, that an import in ``path`` reaches (relative imports resolved)."""
    if level == 0:
        return module
    package = os.path.relpath(os.path.dirname(path), REPO).split(os.sep)
    package = package[:len(package) - (level - 1)]
    return ".".join([p for p in package if p not in ("", ".")] + ([module] if module else []))


def _pack_imports(path: str) -> set[str]:
    """Every module an import in ``path`` may reach: ``from .a import b`` reaches ``a`` and ``a.b``."""
    with open(path) as handle:
        tree = ast.parse(handle.read(), path)
    reached = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            reached.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _resolved(path, node.level, node.module or "")
            reached.add(base)
            reached.update(f"{base}.{alias.name}" for alias in node.names)
    return reached


# models/ in stages, each importing only its own stage and the ones below (nothing points back up)
STAGE_LEVEL = {"errors": 0, "images": 0, "files": 1, "face": 2, "expression": 3, "generation": 4, "evaluation": 5,
               "drawing": 6, "doctor": 7, "face_drawing": 7, "score_expressions": 7}


def _stage(dotted: str) -> str:
    return dotted.split(".")[1]


def test_models_never_import_comfyui_or_nodes():
    for path in glob.glob(os.path.join(REPO, "models", "**", "*.py"), recursive=True):
        for level, module in _imports(path):
            root = module.split(".")[0]
            assert not (level == 0 and root in ("comfy", "folder_paths", "server", "comfy_extras")), path
            if level:
                assert _resolved(path, level, module).startswith("models"), f"{path} imports {module}"


def test_models_stages_import_only_their_own_stage_and_those_below():
    for path in glob.glob(os.path.join(REPO, "models", "**", "*.py"), recursive=True):
        own = os.path.relpath(path, os.path.join(REPO, "models")).split(os.sep)[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in STAGE_LEVEL, f"{path}: models/{own} is in no stage; add it to STAGE_LEVEL"
        for target in _pack_imports(path):
            if target.startswith("models.") and _stage(target) in STAGE_LEVEL:
                assert STAGE_LEVEL[_stage(target)] <= STAGE_LEVEL[own], f"{path} imports {target}, a later stage"


def test_no_node_file_imports_another_node_file():
    node_files = {}
    for path in glob.glob(os.path.join(REPO, "nodes", "**", "*.py"), recursive=True):
        with open(path) as handle:
            if re.search(r"^class GenAffect\w+", handle.read(), flags=re.M):
                node_files[os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")] = path
    assert len(node_files) >= 10
    for name, path in node_files.items():
        others = {other for other in node_files if other != name and other in _pack_imports(path)}
        assert not others, f"{path} imports the node file(s) {sorted(others)}: move what they share out of them"


def test_no_test_file_imports_another_test_file():
    """What tests share lives in tests/support/ (tests/integration/'s own helpers beside them), so running or
    changing one test file never runs or breaks another's tests."""
    test_files = glob.glob(os.path.join(REPO, "tests", "**", "*.py"), recursive=True)
    assert len(test_files) >= 40
    for path in test_files:
        for _, module in _imports(path):
            assert not module.split(".")[-1].startswith("test_"), (
                f"{path} imports {module}: move what it needs into tests/support/ (or a helper module of "
                "tests/integration/)")


def test_no_eval_exec_or_unsafe_torch_load():
    for path in PACK_SOURCES:
        with open(path) as handle:
            source = handle.read()
        tree = ast.parse(source)
        calls = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call)]
        assert not any(isinstance(f, ast.Name) and f.id in ("eval", "exec") for f in calls), path
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if isinstance(call.func, ast.Attribute) and call.func.attr == "load" and getattr(call.func.value, "id", "") == "torch":
                assert any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in call.keywords), path


def test_readme_lists_every_model_file_and_every_node():
    from genaffect.models.files.model_catalog import CATALOG

    with open(os.path.join(REPO, "README.md")) as handle:
        readme = handle.read()
    for entry in CATALOG:
        assert entry.name in readme, entry.path
    for name, display in genaffect.NODE_DISPLAY_NAME_MAPPINGS.items():  # a row of the node table, to its help page
        assert f"| [{display}](js/docs/{name}.md) |" in readme
    assert "python -m pytest" in readme


LOCALE_PAGE = re.compile(r"[a-z]{2}(-[A-Za-z]{2,4})?\.md")


def test_every_node_has_a_help_page_where_the_frontend_asks_first_and_one_for_every_other_locale():
    """The frontend (ComfyUI_frontend's NodeHelpService) asks /extensions/<pack>/docs/<Node>/<locale>.md first,
    then /extensions/<pack>/docs/<Node>.md. js/docs/<Node>/en.md answers the English request at once; the same
    page as js/docs/<Node>.md answers every locale without a translation of its own (zh: <Node>/zh.md is not
    there, so <Node>.md). The two must stay byte-identical: a static folder has no redirect, and a link file
    would not survive a Windows checkout."""
    docs = os.path.join(REPO, genaffect.WEB_DIRECTORY, "docs")
    for name in genaffect.NODE_CLASS_MAPPINGS:
        page, english = os.path.join(docs, f"{name}.md"), os.path.join(docs, name, "en.md")
        assert os.path.isfile(page) and os.path.isfile(english), f"{name} needs js/docs/{name}.md and {name}/en.md"
        with open(page, "rb") as handle, open(english, "rb") as other:
            assert handle.read() == other.read(), f"{name}/en.md differs: cp js/docs/{name}.md js/docs/{name}/en.md"
    for entry in os.listdir(docs):
        name = entry[:-3] if entry.endswith(".md") else entry
        assert name in genaffect.NODE_CLASS_MAPPINGS, f"js/docs/{entry} belongs to no node"
        if os.path.isdir(os.path.join(docs, entry)):
            for page in os.listdir(os.path.join(docs, entry)):
                assert LOCALE_PAGE.fullmatch(page), f"js/docs/{entry}/{page} is not <locale>.md (en, zh, zh-TW, ...)"


def test_the_suite_runs_from_a_checkout_whose_folder_name_is_not_a_python_identifier(tmp_path):
    """A clone in `genaffect-main`: pytest must not import the repository's ComfyUI __init__.py as a test package
    (it failed every test with ImportError)."""
    import shutil

    copy = tmp_path / "genaffect-main"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.jpg", "*.png", "benchmarks"))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_images.py",
                           "-k", "uint8 or empty"], cwd=copy, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and " passed" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
