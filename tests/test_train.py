import math
from types import SimpleNamespace

import pytest

from inilora.data import Example, prompt
from inilora.train.common import StopOnNonFinite
from inilora.data.encode import IGNORE, Collator, encode


def test_prompt_tokens_are_masked_and_the_response_ends_in_eos(tiny_llama_dir):
    from inilora.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama_dir))
    ex = Example("What is 2 + 2?", "The answer is: 4", "4")
    enc = encode(tok, ex, max_length=512)
    n_prompt = len(tok(prompt(ex.question))["input_ids"])
    assert enc["labels"][:n_prompt] == [IGNORE] * n_prompt
    assert enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
    assert enc["input_ids"][-1] == tok.eos_token_id
    assert tok.decode(enc["input_ids"][n_prompt:-1]).strip() == "The answer is: 4"
    batch = Collator(tok.pad_token_id)([enc, encode(tok, ex, max_length=n_prompt + 2)])
    assert batch["attention_mask"][1].sum() == n_prompt + 2
    assert (batch["labels"][1][n_prompt + 2 :] == IGNORE).all()


def test_a_non_finite_loss_stops_training_with_the_step():
    cb = StopOnNonFinite()
    state = SimpleNamespace(global_step=7)
    cb.on_log(None, state, None, logs={"loss": 0.5})
    with pytest.raises(FloatingPointError, match="training loss is nan at step 7"):
        cb.on_log(None, state, None, logs={"loss": math.nan})


def test_finetune_with_checkpoints_off_writes_none(tiny_llama, tiny_llama_dir, tmp_path):
    import torch

    from inilora.inits import apply_init
    from inilora.models import load_tokenizer
    from inilora.train.sft import TrainSettings, finetune

    torch.manual_seed(0)
    model = apply_init(tiny_llama, "lora", 4, 4, ["q_proj", "v_proj"])
    examples = [Example(f"What is {i} + 1?", f"The answer is: {i + 1}", str(i + 1)) for i in range(4)]
    settings = TrainSettings(batch_size=2, grad_accum=1, max_steps=2, max_length=64, checkpoint_steps=0)
    info = finetune(model, load_tokenizer(str(tiny_llama_dir)), examples, settings, tmp_path)
    assert info["steps"] == 2 and info["resumed_from"] is None
    assert not list(tmp_path.glob("checkpoint-*"))


def test_a_tensorboard_run_writes_its_event_files_beside_the_run_offline(tiny_llama, tiny_llama_dir, tmp_path):
    import torch

    from inilora.inits import apply_init
    from inilora.models import load_tokenizer
    from inilora.train.sft import TrainSettings, finetune

    torch.manual_seed(0)
    model = apply_init(tiny_llama, "lora", 4, 4, ["q_proj", "v_proj"])
    examples = [Example(f"What is {i} + 1?", f"The answer is: {i + 1}", str(i + 1)) for i in range(4)]
    settings = TrainSettings(batch_size=2, grad_accum=1, max_steps=2, max_length=64, checkpoint_steps=0,
                             report_to=["tensorboard"])
    finetune(model, load_tokenizer(str(tiny_llama_dir)), examples, settings, tmp_path / "run" / "trainer")
    events = list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_the_same_config_and_seed_give_bit_identical_adapters_and_answers(tiny_llama_dir, tmp_path):
    """The README's promise on one machine: same config, seed and library versions, same numbers.
    Two fine-tunes (PiSSA init, 4 steps, sampled answers too) from fresh loads, compared bit for bit."""
    import torch

    from inilora.evaluate.generate import generate
    from inilora.inits import apply_init
    from inilora.models import load_causal_lm, load_tokenizer
    from inilora.train.sft import TrainSettings, finetune

    tok = load_tokenizer(str(tiny_llama_dir))
    examples = [Example(f"What is {i} + 3?", f"The answer is: {i + 3}", str(i + 3)) for i in range(6)]
    settings = TrainSettings(batch_size=2, grad_accum=1, max_steps=4, max_length=64, checkpoint_steps=0, learning_rate=1e-2)
    runs = []
    for k in range(2):
        torch.manual_seed(0)
        model = apply_init(load_causal_lm(str(tiny_llama_dir)), "pissa", 4, 4, ["q_proj", "v_proj"])
        info = finetune(model, tok, examples, settings, tmp_path / f"run{k}")
        adapter = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
        answers = generate(model.eval(), tok, [prompt("What is 2 + 3?")] * 2, 8, 2, samples=2, temperature=0.8, seed=3)
        runs.append((adapter, answers, info))
    (a0, g0, info0), (a1, g1, info1) = runs
    assert a0.keys() and a0.keys() == a1.keys() and all(torch.equal(a0[n], a1[n]) for n in a0)
    assert g0 == g1
    assert info0["steps"] == info1["steps"] == 4


def test_ranks_whose_init_factors_differ_stop_before_the_first_step(monkeypatch):
    import torch.distributed as dist

    from inilora.train.common import RanksAgree

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, "f" * 64]))
    with pytest.raises(RuntimeError, match="the ranks' init factors differ"):
        RanksAgree("a" * 64).on_train_begin(None, None, None)
    monkeypatch.setattr(dist, "all_gather_object", lambda out, obj: out.__setitem__(slice(None), [obj, obj]))
    agree = RanksAgree("a" * 64)
    agree.on_train_begin(None, None, None)
    assert agree.digests == ["a" * 64] * 2


def test_the_lm_head_at_the_scored_positions_only_trains_the_same_adapter(tiny_llama_dir, tmp_path):
    """The Trainer's loss over the positions that predict an answer token (``logits_to_keep``) against
    the model's own loss over every position, with prompts of different lengths, gradient
    accumulation and a batch whose answers are cut off: the head sees fewer rows, and the adapter
    is the same up to float32 rounding (a matmul over fewer rows may sum in another order; on
    SmolLM2 at the default's settings it is the same bit for bit, docs/speed.md)."""
    import torch

    from inilora.inits import apply_init
    from inilora.models import load_causal_lm, load_tokenizer
    from inilora.train import sft

    tok = load_tokenizer(str(tiny_llama_dir))
    examples = [Example("What is " + " + ".join(["1"] * (i % 5 + 1)) + "?", f"The answer is: {i % 5 + 1}", str(i))
                for i in range(8)]
    settings = sft.TrainSettings(batch_size=2, grad_accum=2, max_steps=2, max_length=64, checkpoint_steps=0,
                                 learning_rate=1e-2, logging_steps=1)
    head_rows = []
    runs = []
    for scored in (True, False):
        torch.manual_seed(0)
        model = apply_init(load_causal_lm(str(tiny_llama_dir)), "lora", 4, 4, ["q_proj", "v_proj"])
        hook = model.get_base_model().lm_head.register_forward_hook(
            lambda module, args, out, scored=scored: head_rows.append((scored, args[0].numel() // args[0].shape[-1])))
        info = sft.finetune(model, tok, examples, settings, tmp_path / f"run{scored}", scored_head=scored)
        hook.remove()
        runs.append(({n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}, info))
    (a0, info0), (a1, info1) = runs
    assert a0.keys() and all(torch.allclose(a0[n], a1[n], rtol=0, atol=1e-6) for n in a0)
    assert all(not torch.equal(a0[n], a0[n].new_zeros(a0[n].shape)) for n in a0 if "lora_B" in n)  # it trained
    assert [c["grad_norm"] for c in info0["curve"]] == pytest.approx([c["grad_norm"] for c in info1["curve"]], rel=1e-5)
    assert [c["loss"] for c in info0["curve"]] == pytest.approx([c["loss"] for c in info1["curve"]], rel=1e-6)
    scored_rows = [n for s, n in head_rows if s]
    full_rows = [n for s, n in head_rows if not s]
    assert len(scored_rows) == len(full_rows) == 4 and all(s < f for s, f in zip(scored_rows, full_rows))


def test_scored_mask_marks_the_positions_that_predict_an_answer_token():
    import torch

    from inilora.data.encode import scored_mask

    labels = torch.full((2, 6), IGNORE)
    labels[0, 3:5] = 7  # predicted from positions 2 and 3
    labels[1, 5] = 8  # from position 4
    assert scored_mask(labels).nonzero().tolist() == [[0, 2], [0, 3], [1, 4]]
    assert not scored_mask(torch.full((2, 6), IGNORE)).any()
