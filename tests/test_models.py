import json

import pytest

from inilora.models import ModelError, prepare, target_linears


def test_local_folder_is_resolved_and_recorded(tiny_llama_dir, tmp_path):
    info = prepare("tiny", str(tiny_llama_dir), tmp_path / "hf", tmp_path / "model.json")
    assert info["path"] == str(tiny_llama_dir.resolve())
    assert json.loads((tmp_path / "model.json").read_text())["source"] == str(tiny_llama_dir)
    assert not (tmp_path / "hf").exists()  # nothing converted for a plain folder


def test_missing_local_folder_is_refused(tmp_path):
    with pytest.raises(ModelError, match="models.x.path: local folder './nowhere' does not exist"):
        prepare("x", "./nowhere", tmp_path / "hf", tmp_path / "m.json")


def test_unknown_builtin_lists_known(tmp_path):
    with pytest.raises(ModelError, match=r"unknown builtin 'gpt9'; known: \['all-minilm-l6-v2', 'smollm2-135m'\]"):
        prepare("x", "builtin:gpt9", tmp_path / "hf", tmp_path / "m.json")


def test_targets_are_q_and_v_linears(tiny_llama):
    found = target_linears(tiny_llama, ["q_proj", "v_proj"])
    assert len(found) == 4 and all(n.endswith(("q_proj", "v_proj")) for n in found)
    with pytest.raises(ModelError, match="match no nn.Linear"):
        target_linears(tiny_llama, ["query"])


def test_a_job_spec_is_json_text_or_a_json_file_and_anything_else_names_the_flag(tmp_path):
    from inilora.cli import _spec

    spec = {"rank": 8, "iterations": 10}
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    assert _spec(json.dumps(spec)) == spec and _spec(str(path)) == spec
    with pytest.raises(ValueError, match=r"--spec 'no-such-file.json': neither JSON text nor a JSON file"):
        _spec("no-such-file.json")
    with pytest.raises(ValueError, match="a job spec is a JSON object, got list"):
        _spec("[1, 2]")
