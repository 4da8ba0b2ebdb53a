"""The README and docs/ state what the code does: the quick start runs as written, the counts and tables match
the code and data, no recipe leaves a file in the checkout, and every link leads to a file that exists."""

import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import genaffect
import pytest
from genaffect.models.expression.expression_library import preset_names
from genaffect.models.files.model_catalog import CATALOG
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKFLOWS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(REPO, "workflows", "*.json")))
BLUEPRINTS = sorted(glob.glob(os.path.join(REPO, "subgraphs", "*.json")))
PAGES = ["README.md", "CONTRIBUTING.md"] + sorted(os.path.relpath(p, REPO)
                                                  for p in glob.glob(os.path.join(REPO, "docs", "*.md")))


def read(name: str) -> str:
    with open(os.path.join(REPO, name), encoding="utf-8") as handle:
        return handle.read()


README = read("README.md")


def section(text: str, heading: str) -> str:
    """The text under a ``## heading``, up to the next ``## ``."""
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end > 0 else None]


def quick_start_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", section(README, "Quick start"), flags=re.DOTALL)
    assert block, "the README's Quick start has no ```bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def table_rows(text: str, first_header: str) -> list[list[str]]:
    """The cells of each body row of the markdown table whose header row starts with ``| first_header |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_the_quick_start_is_two_commands():
    assert len(quick_start_commands()) == 2


def test_the_quick_start_draws_the_whole_library_exactly_as_written_with_no_model_files(tmp_path):
    """The first command, as typed, from a pack folder (a copy of the engine it runs: the output lands in the
    folder it is typed in), with no models folder anywhere near."""
    command = shlex.split(quick_start_commands()[0])
    assert command[:3] == ["python", "-m", "models.face_drawing"], command
    shutil.copytree(os.path.join(REPO, "models"), tmp_path / "models",
                    ignore=shutil.ignore_patterns("__pycache__"))
    env = {k: v for k, v in os.environ.items() if k != "GENAFFECT_TEST_MODELS"}
    run = subprocess.run([sys.executable] + command[1:], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    assert run.returncode == 0, run.stdout + run.stderr
    out = tmp_path / command[command.index("--out") + 1]
    assert f"{len(preset_names())} expressions drawn to {out.name}" in run.stdout
    with Image.open(out) as sheet:
        assert sheet.format == "PNG" and sheet.width > 1000 and sheet.height > 1000


def test_the_quick_start_test_command_is_the_one_ci_runs_from_the_pack_folder():
    assert quick_start_commands()[1] == "python -m pytest"
    ci = read(os.path.join(".ci", "run"))
    assert 'cd "$(dirname "$0")/.."' in ci  # CI runs from the pack's folder, as the README says
    assert re.search(r'^"\$py" -m pytest$', ci, flags=re.MULTILINE), "CI no longer runs the README's test command"
    assert "testpaths = tests" in read("pytest.ini")


def test_the_counts_the_readme_states_match_the_code():
    stated = {
        "nodes": (r"into (\d+) nodes", len(genaffect.NODE_CLASS_MAPPINGS)),
        "workflows": (r"(\d+) example workflows", len(WORKFLOWS)),
        "blueprints": (r"(\d+) subgraph blueprints", len(BLUEPRINTS)),
        "blueprints again": (r"The (\d+) \*\*subgraph blueprints\*\*", len(BLUEPRINTS)),
        "presets": (r"a library of (\d+) named expressions", len(list(preset_names()))),
    }
    for what, (pattern, actual) in stated.items():
        found = re.search(pattern, README)
        assert found, f"the README no longer states the number of {what} ({pattern})"
        assert int(found.group(1)) == actual, f"the README says {found.group(1)} {what}; the code has {actual}"


def test_the_workflow_table_lists_every_workflow_once():
    listed = [row[0].strip("`") for row in table_rows(README, "workflow")]
    assert sorted(listed) == WORKFLOWS


def test_workflows_the_readme_says_need_nothing_load_no_model():
    for row in table_rows(README, "workflow"):
        if row[3] != "nothing":
            continue
        with open(os.path.join(REPO, "workflows", row[0].strip("`")), encoding="utf-8") as handle:
            nodes = json.load(handle)["nodes"]
        for node in nodes:
            assert not node["type"].endswith(("Loader", "LoaderModelOnly")), (row[0], node["type"])
            assert not node.get("properties", {}).get("models"), (row[0], node["type"])


def test_the_node_table_links_every_nodes_help_page_in_its_category():
    rows = table_rows(README, "node")
    assert len(rows) == len(genaffect.NODE_CLASS_MAPPINGS)
    for (link, category, _), (name, display) in zip(rows, genaffect.NODE_DISPLAY_NAME_MAPPINGS.items()):
        assert link == f"[{display}](js/docs/{name}.md)", "the node table follows the menu order of nodes.NODES"
        assert genaffect.NODE_CLASS_MAPPINGS[name].CATEGORY == f"GenAffect/{category}", name


def test_docs_models_gives_every_catalog_file_its_size_and_licence():
    page = read(os.path.join("docs", "models.md"))
    for entry in CATALOG:
        rows = [line for line in page.splitlines() if line.startswith("|") and entry.name in line]
        assert rows, f"docs/models.md has no row for {entry.path}"
        row = rows[0]
        assert f"`{entry.folder}/" in row, (entry.path, row)
        assert entry.licence.split()[0] in row, (entry.path, entry.licence)
        if entry.size_mb and entry.name != "config.json":
            sizes = {f"{entry.size_mb:g} MB", f"{entry.size_mb / 1000:g} GB"}
            assert any(size in row for size in sizes), (entry.path, sizes, row)


def test_the_expression_targets_table_is_the_data_files_evaluation():
    page = read(os.path.join("docs", "expression-targets.md"))
    with open(os.path.join(REPO, "models", "data", "estimator_targets.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    evaluation = data["evaluation"]["per_preset"]
    rows = table_rows(page, "preset")
    assert [row[0] for row in rows] == list(evaluation)

    def percent(rate: float) -> str:
        return f"{int(rate * 100 + 0.5)}%"

    for name, photos, l1_old, l1_new, near_old, near_new in rows:
        measured = evaluation[name]
        assert photos == f"{measured['photos']} ({measured['people']})", name
        assert float(l1_old) == pytest.approx(measured["l1_old"], abs=5e-4), name
        assert float(l1_new) == pytest.approx(measured["l1_new_person_left_out"], abs=5e-4), name
        assert near_old == percent(measured["nearest_rate_old"]), name
        assert near_new == percent(measured["nearest_rate_new_person_left_out"]), name
    mean_new = sum(m["nearest_rate_new_person_left_out"] for m in evaluation.values()) / len(evaluation)
    mean_old = sum(m["nearest_rate_old"] for m in evaluation.values()) / len(evaluation)
    assert (f"nearest its own expression {round(mean_new * 100)} % of the time against the calibrated\n"
            f"targets and {round(mean_old * 100)} % against the recipes") in page
    photos = data["photos"]
    assert f"on {photos['photos_used']:,} labelled photos of {photos['people']:,} people" in page
    readable = data["readable"]
    assert f"{len(readable['names'])} of the {len(readable['names']) + len(readable['unreadable'])}" in page


def test_no_install_recipe_leaves_keep_txt_in_the_checkout():
    for name in PAGES:
        for target in re.findall(r">\s*(\S*keep\.txt)", read(name)):
            assert target.startswith(('"${TMPDIR:-/tmp}/', "%TEMP%\\")), f"{name} writes {target} into the checkout"


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file():
    for name in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)\)", read(name)):
            if re.match(r"[a-z]+:", target):
                continue
            path = os.path.normpath(os.path.join(REPO, os.path.dirname(name), target))
            assert os.path.exists(path), f"{name} links {target}, which does not exist"
