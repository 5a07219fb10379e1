"""The project's records agree with each other: the method registry with the README and the schema,
the schema with the code's defaults and config/README.md, paths with their parser, the code with ruff."""

import dataclasses
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from inilora import paths
from inilora.inits import REGISTRY
from inilora.inits.residual import ADAPTER_OPTIONS

REPO = Path(__file__).resolve().parent.parent
SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())


def readme_methods_table() -> dict[str, dict]:
    """The README's methods table: name -> {"residual": cell, "options": cell}."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("| name | source |"):]
    rows = {}
    for line in block.splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = {"residual": cells[3], "options": cells[4]}
    return rows


def test_the_readme_methods_table_lists_every_registered_method_as_its_record_says():
    table = readme_methods_table()
    assert list(table) == list(REGISTRY)
    for name, record in REGISTRY.items():
        row = table[name]
        if callable(record.residual):
            assert row["residual"].startswith("only with"), name
        else:
            assert row["residual"] == ("yes" if record.residual else "no"), name
        shown = set(re.findall(r"`([a-z][a-z0-9_]*)`", row["options"]))
        # the adapter options (use_rslora, use_dora) every method takes are described below the table
        assert shown == record.option_names - {"factors_path", "factors", "check", "data", *ADAPTER_OPTIONS} | (
            {"iterations", "decompose_lr"} if "factors" in record.needs else set()) | (
            {"batch_size"} if "data" in record.needs else set()), name


def test_the_schemas_method_list_is_the_registry():
    described = re.findall(r"`([a-z_]+)`", SCHEMA["properties"]["methods"]["description"].split(";")[0])
    assert described == list(REGISTRY)


def test_every_record_cites_its_source_and_says_what_it_needs():
    for name, record in REGISTRY.items():
        assert record.paper and record.init.__doc__, name
        assert set(record.needs) <= {"factors", "data"}
    assert [m for m, r in REGISTRY.items() if "factors" in r.needs] == ["inilora"]
    assert sorted(m for m, r in REGISTRY.items() if "data" in r.needs) == ["corda", "eva", "hrp", "lora_one", "loraga",
                                                                          "loraga_peft"]


def test_schema_defaults_are_the_code_defaults():
    from inilora.decompose import SolverSettings
    from inilora.train.sft import TrainSettings

    for section, cls in (("train", TrainSettings), ("decompose", SolverSettings)):
        props = SCHEMA["properties"][section]["properties"]
        fields = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
                  for f in dataclasses.fields(cls)
                  if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING}
        shared = set(props) & set(fields)
        assert len(shared) >= 6, section
        for key in shared:
            schema_default = props[key]["default"]
            if isinstance(schema_default, list) and not isinstance(fields[key], list):  # decompose.lr: the first rate
                schema_default = schema_default[0]
            assert schema_default == fields[key], f"{section}.{key}: schema {schema_default}, {cls.__name__} {fields[key]}"


def test_config_readme_is_generated_from_the_schema():
    from inilora.config.docs import render

    assert (REPO / "config/README.md").read_text() == render(), "run `make config-docs`"


def test_the_conda_env_holds_the_packages_dependencies():
    env = yaml.safe_load((REPO / "workflow/envs/inilora.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert sorted(pip) == sorted(d.split("#")[0].strip() for d in project)


@pytest.mark.parametrize("pattern, path, expected", [
    (paths.EVAL, "results/eval/m/t-n80/inilora-it100/r8/lr0.002/seed11/chain_sum.json",
     {"model": "m", "task": "t-n80", "method": "inilora-it100", "rank": 8, "lr": 0.002, "seed": 11, "bench": "chain_sum"}),
    (paths.BASE_EVAL, "/tmp/x/results/eval/smollm2-135m/base/mmlu.json", {"model": "smollm2-135m", "bench": "mmlu"}),
    (paths.FACTORS, "results/decompose/m/r16_lr0.0005/it4000.safetensors", {"model": "m", "rank": 16, "dlr": 0.0005, "iters": 4000}),
    (paths.INITIAL_ADAPTER, "results/finetune/m/t/inilora_random-xavier_normal/r8/lr1e-05/seed1/initial_adapter/adapter_model.safetensors",
     {"model": "m", "task": "t", "method": "inilora_random-xavier_normal", "rank": 8, "lr": 1e-5, "seed": 1}),
])
def test_paths_parse_reads_back_what_the_pattern_wrote(pattern, path, expected):
    assert paths.parse(pattern, path) == expected
    formatted = pattern.format(**{k: v for k, v in paths.parse(pattern, path).items()})
    assert path.endswith(formatted)


def test_paths_parse_refuses_a_path_of_another_pattern():
    with pytest.raises(ValueError, match="does not match"):
        paths.parse(paths.EVAL, "results/eval/m/base/chain_sum.json")


@pytest.mark.skipif(shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
                    reason="ruff is a test extra: pip install -e '.[test]'")
def test_the_code_is_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    out = subprocess.run([ruff, "check", "inilora", "tests"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_config_layer_imports_without_torch_peft_or_transformers():
    """The Snakefile imports inilora.config and is parsed again in every cluster job, so it must stay light."""
    code = ("import sys, inilora.config; "
            "print(','.join(m for m in ('torch', 'peft', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    heavy = out.stdout.strip()
    assert not heavy, f"import inilora.config imported {heavy}"


def test_every_citation_of_the_method_notes_names_a_section_they_have():
    notes = (REPO / "docs/init-methods.md").read_text()
    sections = set(re.findall(r"^#{2,3} (\d+[a-z]?(?:\.\d+)?)\.? ", notes, flags=re.M))
    cited = set()
    for f in [*(REPO / "inilora").rglob("*.py"), REPO / "README.md", *(REPO / "workflow").rglob("*.yaml")]:
        cited |= {(f.name, s) for s in re.findall(r"init-methods\.md,? sec\. (\d+[a-z]?(?:\.\d+)?)", f.read_text())}
    assert cited, "the code cites the notes"
    assert not [c for c in cited if c[1] not in sections], sorted(sections)


@pytest.mark.workflow
def test_snakemake_lint_is_clean_and_the_catalog_test_config_plans():
    lint = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    plan = subprocess.run([sys.executable, "-m", "snakemake", "--directory", ".test", "-n", "all"], cwd=REPO,
                          capture_output=True, text=True)
    assert plan.returncode == 0, plan.stderr[-3000:]
    assert re.search(r"^figure\s+5$", plan.stdout, flags=re.M) and re.search(r"^decompose\s+2$", plan.stdout, flags=re.M)


def test_the_readmes_library_example_runs_as_written(tiny_llama_dir, tmp_path, monkeypatch):
    """The README's Python block, with a tiny model's folder as `path` (and fewer decomposition
    iterations); the adapter it saves reproduces the fine-tuned model on the original base."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    text = (REPO / "README.md").read_text()
    block = text.split("As a library, in a plain script")[1].split("```python\n")[1].split("```")[0]
    assert len(block.strip().splitlines()) <= 16
    code = re.sub(r'^path = ".*"', f'path = "{tiny_llama_dir}"', block, count=1, flags=re.M)
    code = code.replace("iterations=4000", "iterations=200").replace("rank=8", "rank=4").replace("alpha=8", "alpha=4")
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(code, "README.md", "exec"), scope)
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    tuned = scope["model"].eval()(ids).logits
    portable = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), "adapter").eval()
    assert torch.allclose(portable(ids).logits, tuned, atol=1e-4)


def test_inilora_decompose_runs_without_snakemake(tiny_llama_dir, tmp_path):
    import json

    out = subprocess.run([sys.executable, "-m", "inilora", "decompose", "--model", str(tiny_llama_dir), "--rank", "4",
                          "--iterations", "30", "--out", str(tmp_path / "f"), "--device", "cpu"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    meta = json.loads((tmp_path / "f/it30.json").read_text())
    assert meta["rank"] == 4 and meta["iterations"] == 30 and meta["runtime"]["device"] == "cpu"
    from inilora.decompose import load_artifact

    assert len(load_artifact(tmp_path / "f/it30.safetensors")) == 4


def test_the_repository_speaks_of_itself_alone():
    """No file cites a path outside the repository, an issue number, a development session or the
    tools of the environment it was written in: papers by arXiv id, code by repository URL."""
    import re
    import subprocess

    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"shared/(seeds|reference)|\b[Ss]ession [0-9]|\b[Ii]ssue [0-9]+\b|device[ ]tool|"
                         r"\bsession that wrote\b|\bthis session\b")
    found = []
    for name in files:
        path = REPO / name
        if name == "tests/test_structure.py" or not path.is_file() or path.suffix in (".png", ".gguf", ".safetensors"):
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        found += [f"{name}:{i}: {line.strip()[:100]}" for i, line in enumerate(text.splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)


def test_the_glossary_lists_every_registered_method_in_the_registrys_order():
    import re

    from inilora.inits import REGISTRY

    text = (REPO / "docs/glossary.md").read_text()
    entry = text[text.index("- **method**:"):text.index("The same name")]
    assert re.findall(r"`(\w+)`", entry) == list(REGISTRY)


# ----------------------------------------------------------------------------- the house's floors

# A module imports only from its own floor or below (STYLE: a name two stages need lives in the lower
# one). Within a floor, the import graph has no cycle either.
FLOORS = [
    {"paths", "io", "provenance", "devices", "data", "sandbox"},
    {"models"},
    {"decompose"},
    {"inits"},
    {"train"},
    {"evaluate"},
    {"config"},
    {"report"},
    {"rehearsal", "speed", "cli", "__main__", ""},
]


def import_graph() -> dict[str, set[str]]:
    """Every module of the package and the package modules it imports, at module level or inside a
    function alike (an import hidden in a function is still an arrow between stages)."""
    import ast

    root = REPO / "inilora"
    modules = {}
    for path in root.rglob("*.py"):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path

    def resolve(name: str) -> str | None:
        while name not in modules and "." in name:
            name = name.rsplit(".", 1)[0]
        return name if name in modules else None

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "inilora":
                targets |= {resolve(f"{node.module}.{a.name}") or resolve(node.module) for a in node.names}
            elif isinstance(node, ast.Import):
                targets |= {resolve(a.name) for a in node.names if a.name.split(".")[0] == "inilora"}
        graph[name] = targets - {None, name}
    return graph


def floor_of(module: str) -> int:
    stage = module.split(".")[1] if "." in module else ""
    (floor,) = [i for i, names in enumerate(FLOORS) if stage in names] or [None]
    assert floor is not None, f"{module}: its stage '{stage}' is on no floor of FLOORS"
    return floor


def test_no_module_imports_from_a_stage_above_its_own():
    graph = import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if floor_of(b) > floor_of(a))
    assert not upward, "imports that run up a floor (move the name down instead):\n" + "\n".join(upward)


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    seen, on_path, cycles = set(), [], []

    def visit(module):
        if module in on_path:
            cycles.append(on_path[on_path.index(module):] + [module])
            return
        if module in seen:
            return
        seen.add(module)
        on_path.append(module)
        for target in sorted(graph[module]):
            visit(target)
        on_path.pop()

    for module in sorted(graph):
        visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


# ----------------------------------------------------------------------------- the kinds record


def test_the_schema_and_the_evaluation_docs_list_the_registered_kinds_as_their_records_say():
    from inilora.evaluate.kinds import KINDS

    kind = SCHEMA["properties"]["benchmarks"]["additionalProperties"]["properties"]["kind"]
    assert kind["enum"] == list(KINDS)
    assert all(f"{name} (" in kind["description"] for name in KINDS)
    rows = [line.split(" | ") for line in (REPO / "docs/evaluation.md").read_text().splitlines()
            if re.match(r"\| `\w+` \| ", line)]
    assert [r[0].strip("| `") for r in rows] == list(KINDS)
    for r in rows:
        record = KINDS[r[0].strip("| `")]
        assert r[2].startswith(record.headline), (record.name, r[2])
        assert re.findall(r"`(\w+)`", r[3]) == list(record.loaders), record.name


def test_no_module_decides_by_a_kinds_name_what_its_record_says():
    """Outside the module that registers them, a benchmark kind is read through its record, never by
    comparing its name (a new kind then needs one record, not a hunt through the stages)."""
    from inilora.evaluate.kinds import KINDS

    names = "|".join(KINDS)
    pattern = re.compile(rf"""kind\W{{0,12}}(==|!=|\bin\b|\bnot in\b)[^#]*["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in sorted((REPO / "inilora").rglob("*.py"))
             if p != REPO / "inilora/evaluate/kinds.py"
             for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert not found, "\n".join(found)
