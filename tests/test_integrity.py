"""Artifacts that were altered after they were written are refused, naming the file and what to delete."""

import json
import struct

import pytest

from inilora.decompose import ArtifactError, SolverSettings, decompose_weights, fingerprint, load_artifact, save_artifact
from inilora.io import IntegrityError, file_sha256
from inilora.models import target_linears

TARGETS = ["q_proj", "v_proj"]


@pytest.fixture
def factors(tiny_llama, tmp_path):
    weights = {n: m.weight.detach().clone() for n, m in target_linears(tiny_llama, TARGETS).items()}
    res = decompose_weights(weights, SolverSettings(rank=4, lr=1e-2, iterations=20), [20])[20]
    path = tmp_path / "it20.safetensors"
    save_artifact(path, tmp_path / "it20.json", res, {"rank": 4, "model": {"name": "tiny", "fingerprint": fingerprint(weights)}})
    return path


def flip_exponent_bit(path):
    """Flip the top exponent bit of the first float32 of the tensor data; the header stays intact."""
    data = bytearray(path.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    start = 8 + header
    value = struct.unpack("<f", data[start:start + 4])[0]
    data[start + 3] ^= 0x40
    path.write_bytes(bytes(data))
    return value, struct.unpack("<f", bytes(data[start:start + 4]))[0]


def test_a_flipped_exponent_bit_in_the_factors_is_refused(factors):
    meta = json.loads(factors.with_suffix(".json").read_text())
    assert meta["sha256"] == file_sha256(factors)
    load_artifact(factors)  # intact: loads
    before, after = flip_exponent_bit(factors)
    assert abs(after) > 1e30 * abs(before) or abs(after) < 1e-30 * abs(before)  # the value is wildly off
    with pytest.raises(ArtifactError, match=r"it20.safetensors was altered after it was written.*delete .*it20.safetensors and .*it20.json"):
        load_artifact(factors)


def test_factors_whose_metadata_records_no_hash_are_refused_and_bare_files_load(factors, tmp_path):
    meta_path = factors.with_suffix(".json")
    meta = json.loads(meta_path.read_text())
    del meta["sha256"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="records no content hash"):
        load_artifact(factors)
    meta_path.unlink()  # factors made outside the workflow, no record: the caller vouches (check=False)
    assert set(load_artifact(factors)) == set(meta["modules"])


def test_an_altered_adapter_is_refused_before_evaluation_or_merge(tiny_llama, tmp_path):
    from inilora.inits import apply_init
    from inilora.models import ADAPTER_FILE, check_adapter

    adapter = tmp_path / "run/adapter"
    apply_init(tiny_llama, "lora", 4, 4, TARGETS).save_pretrained(str(adapter))
    (tmp_path / "run/train.json").write_text(json.dumps({"adapter_sha256": file_sha256(adapter / ADAPTER_FILE)}))
    check_adapter(adapter)
    data = bytearray((adapter / ADAPTER_FILE).read_bytes())
    data[-1] ^= 0x01
    (adapter / ADAPTER_FILE).write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=r"adapter_model.safetensors was altered.*rerun the finetune rule"):
        check_adapter(adapter)
    from inilora.models import merge_adapter

    with pytest.raises(IntegrityError):
        merge_adapter(str(tmp_path), str(adapter), tmp_path / "merged", device="cpu")
    assert not (tmp_path / "merged").exists()
