"""The benchmark kinds dispatched by inilora.evaluate, on a tiny random Llama (CPU, seconds)."""

import contextlib
import copy
import functools

import pytest
import torch

from inilora.evaluate.generate import STOP_STRINGS, cut_at_stop, generate
from inilora.evaluate.kinds import run_benchmark


@contextlib.contextmanager
def input_shapes(model):
    """The shape of ``input_ids`` at each forward of ``model`` inside the block (the wrapper keeps the
    forward's signature, so generate sees that it takes logits_to_keep)."""
    shapes, forward = [], model.forward

    @functools.wraps(forward)
    def recording(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    model.forward = recording
    try:
        yield shapes
    finally:
        model.forward = forward


@pytest.fixture
def tok_model(tiny_llama_dir, tiny_llama):
    from inilora.models import load_tokenizer

    return load_tokenizer(str(tiny_llama_dir)), tiny_llama


def test_batched_generation_equals_one_at_a_time(tok_model):
    """Left padding with the attention mask keeps each prompt's greedy output unchanged."""
    tok, model = tok_model
    prompts = ["12 + 7 =", "The answer is: 3 and then a longer prompt 4 5 6", "Below"]
    batched = generate(model, tok, prompts, max_new_tokens=6, batch_size=3, stops=[])
    single = [generate(model, tok, [p], max_new_tokens=6, batch_size=1, stops=[])[0] for p in prompts]
    assert batched == single


def test_dropping_finished_rows_and_sorting_by_length_change_no_greedy_output(tok_model):
    """Rows that end early (a stop string, an EOS token) leave the batch; the outputs are the ones
    transformers' generate gives with every row kept, in the prompts' order."""
    from inilora.evaluate.generate import ReservedLayer

    tok, model = tok_model
    prompts = ["12 + 7 =", "The answer is: 3 and then a longer prompt 4 5 6", "Below", "a b", "Below is 1 2 3 4"]
    free = generate(model, tok, prompts, 12, batch_size=5, stops=[], drop_finished=False, by_length=False)
    stop = free[0][0][4:6]  # a string that ends the first output early, and maybe others
    across = "w" + free[2][0][0]  # begins in the prompt "Below" and ends in its output: generate stops on it
    stops = [stop, across, "Below is"]  # the last occurs in a prompt alone, which stops nothing
    eos = tok(free[1][0])["input_ids"][3]  # a token the second output emits: made its end
    sizes = []
    forward = model.forward

    @functools.wraps(forward)  # its signature: generate sees that it takes logits_to_keep
    def counting(*args, **kwargs):
        if isinstance(getattr(kwargs.get("cache"), "layers", [None])[0], ReservedLayer):  # a decode step's (the prefill's caches are plain)
            sizes.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    before = tok.eos_token
    tok.eos_token = tok.convert_ids_to_tokens(eos)
    model.forward = counting
    try:
        runs = {(sort, drop): generate(model, tok, prompts, 12, batch_size=5, stops=stops, by_length=sort,
                                       drop_finished=drop)
                for sort in (False, True) for drop in (False, True)}
        sizes.clear()
        generate(model, tok, prompts, 12, batch_size=5, stops=stops)
    finally:
        model.forward = forward
        tok.eos_token = before
    reference = runs[(False, False)]  # transformers' generate, dataset order
    assert all(out == reference for out in runs.values()), runs
    assert reference[0][0] == free[0][0][:4] and reference != free  # the stop string and the EOS did end rows
    # the stop string across the prompt's end stopped the row after its first token
    assert reference[2][0] == tok.decode(tok(free[2][0])["input_ids"][:1]) != free[2][0]
    assert len(reference[4][0]) > 1  # "Below is" in the prompt stopped nothing
    assert sizes[0] <= 5 and min(sizes) < sizes[0] and sizes == sorted(sizes, reverse=True)  # the batch shrank


@pytest.mark.parametrize("overhead", [0, 24, None])
def test_a_shared_prefix_is_prefilled_once_and_changes_no_greedy_output(tok_model, monkeypatch, overhead):
    """Prompts that begin alike (the Alpaca preamble) prefill their shared tokens once, as one row,
    then their own tokens, longest first, in groups each padded to its own longest (a group per row,
    the default's split, one group); the greedy outputs are transformers' generate's, with stop
    strings too."""
    from inilora.data import prompt
    from inilora.evaluate import generate as generation
    from inilora.evaluate.generate import common_prefix, prefill_groups

    monkeypatch.setitem(generation.PREFILL_OVERHEAD, "cpu", overhead)
    tok, model = tok_model
    prompts = [prompt(q) for q in ["12 + 7", "What is 3 times 4 and then 5?", "a", "Below is 1 2 3 4 5 6 7 8"]]
    ids = tok(prompts)["input_ids"]
    shared = common_prefix(ids)
    assert shared > 10 and all(i[:shared] == ids[0][:shared] for i in ids) and len({i[shared] for i in ids}) > 1
    assert common_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # a row keeps its last token to predict from
    own = sorted((len(i) - shared for i in ids), reverse=True)
    assert len(set(own)) == 4  # so a group per row differs from one group
    groups = prefill_groups(own, overhead)
    assert len(groups) == {0: 4, None: 1}.get(overhead, len(groups))
    free = generate(model, tok, prompts, 12, batch_size=4, stops=[], drop_finished=False, by_length=False)
    stops = [free[1][0][2:4]]
    for stop in ([], stops):
        with input_shapes(model) as shapes:
            ours = generate(model, tok, prompts, 12, batch_size=4, stops=stop)
        assert ours == generate(model, tok, prompts, 12, batch_size=4, stops=stop, drop_finished=False, by_length=False)
        # the prefix once, then each group's own tokens, padded to its longest
        assert shapes[: 1 + len(groups)] == [(1, shared)] + [(len(g), own[g[0]]) for g in groups]
    assert ours != free  # the stop string ended an output


def test_prefill_groups_are_the_cheapest_split():
    """The prefill's groups are the split of the rows (longest first) into consecutive groups with
    the least summed cost, the overhead plus rows x the group's longest per group: every split of
    some batches checked."""
    import itertools
    import random

    from inilora.evaluate.generate import prefill_groups

    def cost(groups, lengths, overhead):
        return sum(overhead + len(g) * lengths[g[0]] for g in groups)

    rng = random.Random(0)
    for _ in range(40):
        lengths = sorted((rng.randint(1, 200) for _ in range(rng.randint(1, 9))), reverse=True)
        overhead = rng.choice([0, 1, 24, 500])
        groups = prefill_groups(lengths, overhead)
        assert [k for g in groups for k in g] == list(range(len(lengths)))  # every row once, in order
        splits = [[range(a, b) for a, b in zip((0, *cuts), (*cuts, len(lengths)))]
                  for n in range(len(lengths)) for cuts in itertools.combinations(range(1, len(lengths)), n)]
        assert cost(groups, lengths, overhead) == min(cost(s, lengths, overhead) for s in splits)
    assert prefill_groups([9, 5, 5, 1], None) == [range(4)]
    assert prefill_groups([100, 10], 24) == [range(1), range(1, 2)]  # 24 + 100 + 24 + 10 < 24 + 200
    assert prefill_groups([100, 90], 24) == [range(2)]
    with pytest.raises(ValueError, match="longest first"):
        prefill_groups([1, 5], 24)


def test_prompt_lookup_drafts_what_followed_the_latest_earlier_occurrence():
    """A row's draft is what followed the latest earlier occurrence of its last two tokens, else of
    its last token, else nothing."""
    from inilora.evaluate.generate import PromptLookup

    look = PromptLookup([5, 6, 7, 8, 5, 6, 9, 1, 5, 6])
    assert look.draft(3) == [9, 1, 5] and look.draft(1) == [9] and look.draft(0) == []  # (5, 6) last seen before 9
    look.extend([4, 7])
    assert look.draft(5) == [8, 5, 6, 9, 1]  # no earlier (4, 7): what followed the last earlier 7
    look.extend([3])
    assert look.draft(4) == []  # 3 never occurred before


@pytest.mark.parametrize("k_scale", [1, 10])
def test_drafted_tokens_are_taken_only_where_greedy_decoding_would_take_them(tok_model, monkeypatch, k_scale):
    """Decoding that checks tokens drafted from each row's own text (rows of different lengths
    taking different numbers of them, rejected positions masked) gives transformers' greedy
    outputs, with stop strings too, in fewer forwards; on a CPU its attention takes the grouped
    key/value heads as they are, where transformers would copy them per query head. ``k_scale``
    widens the keys, so that attention is sharp and a wrong position or mask moves the outputs."""
    import copy
    import os

    from transformers.integrations import sdpa_attention

    from inilora.data import prompt
    from inilora.evaluate.generate import COUNTS

    tok, model = tok_model
    model = copy.deepcopy(model)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.k_proj.weight.mul_(k_scale)
    copies = []
    repeat_kv = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda x, n: copies.append(n) or repeat_kv(x, n))
    prompts = [prompt(q) for q in ["12 + 7", "What is 3 times 4 and then 5?", "a", "Below is 1 2 3 4 5 6 7 8", "b c"]]
    free = generate(model, tok, prompts, 40, batch_size=5, stops=[], drop_finished=False, by_length=False)
    for stops in ([], [free[1][0][20:24]]):  # the second ends some outputs mid-way
        COUNTS.update(drafted_tokens=0, drafted_taken=0)
        copies.clear()
        with input_shapes(model) as shapes:
            ours = generate(model, tok, prompts, 40, batch_size=5, stops=stops)
        drafted, taken = COUNTS["drafted_tokens"], COUNTS["drafted_taken"]
        assert copies == [] and "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ  # none copied; the switch reset
        assert ours == generate(model, tok, prompts, 40, batch_size=5, stops=stops, drop_finished=False, by_length=False)
        assert ours == generate(model, tok, prompts, 40, batch_size=5, stops=stops, draft_budget=0)
        assert 0 < taken < drafted  # drafts taken, and drafts rejected
        decoding = shapes[2:]  # after the prefix and the rows' own tokens
        assert any(rows > 1 and width > 1 for rows, width in decoding)  # several rows checked drafts at once
        assert len(decoding) < max(len(tok(out[0], add_special_tokens=False)["input_ids"]) for out in ours)
    assert ours != free  # the stop string ended an output
    assert generate(model, tok, prompts[:2], 0, batch_size=2, stops=[]) == [[""], [""]]  # nothing to generate


def test_packed_weights_run_every_linear_layer_inside_the_block_only(tok_model, monkeypatch):
    """On a CPU every float32 linear layer gets a copy of its weight packed for oneDNN; inside
    running_packed the layers compute their products from it (the logits agree with MKL's to float32
    rounding and give the same greedy outputs as transformers' generate), outside and after the block
    they are MKL's again bit for bit; a nested block leaves the outer one's layers alone; nothing is
    packed where oneDNN is missing or the copy would not fit."""
    from inilora.evaluate import generate as generation
    from inilora.evaluate.generate import packed_weights, running_packed

    tok, model = tok_model
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    packed = packed_weights(model)
    assert set(packed) == set(linears) and len(linears) > 5
    ids = tok(["12 + 7 = 19 and then some more words"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        before = model(input_ids=ids).logits
        calls = []
        real = generation.packed_linear
        monkeypatch.setattr(generation, "packed_linear", lambda *a: calls.append(1) or real(*a))
        with running_packed(packed):
            inside = model(input_ids=ids).logits
            assert len(calls) == len(linears)  # every layer once
            with running_packed(packed):
                pass
            assert all("forward" in vars(m) for m in linears)  # the inner block left the outer one's layers
        after = model(input_ids=ids).logits
    assert len(calls) == len(linears) and all("forward" not in vars(m) for m in linears)
    assert torch.allclose(inside, before, atol=1e-5) and torch.equal(after, before)
    prompts = ["12 + 7 =", "The answer is: 3 and then a longer prompt 4 5 6", "Below"]
    reference = generate(model, tok, prompts, 10, batch_size=3, stops=[], drop_finished=False, by_length=False)
    calls.clear()
    assert generate(model, tok, prompts, 10, batch_size=3, stops=[]) == reference and calls
    calls.clear()
    assert generate(model, tok, prompts, 10, batch_size=3, stops=[], pack=False) == reference and not calls
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert packed_weights(model) == {}
    monkeypatch.undo()
    monkeypatch.setattr(generation.os, "sysconf", lambda name: 1)  # one page of one byte free
    assert packed_weights(model) == {}
    monkeypatch.setattr(generation.os, "sysconf", lambda name: (_ for _ in ()).throw(ValueError(name)))
    assert packed_weights(model) == {}  # free memory unknown: nothing packed
    monkeypatch.undo()

    class NoPacking:  # a torch build whose oneDNN lacks the packed product
        def __getattr__(self, name):
            raise RuntimeError(f"no {name}")

    monkeypatch.setattr(torch.ops, "mkldnn", NoPacking())
    assert packed_weights(model) == {}
    monkeypatch.undo()
    assert packed_weights(copy.deepcopy(model).to(torch.bfloat16)) == {}  # float32 only


def test_reserved_cache_gives_the_dynamic_caches_logits_bit_for_bit(tok_model):
    """A decode step's keys and values written in place (ReservedLayer) give the logits of
    transformers' dynamic cache, which concatenates, bit for bit: through a prefill, steps past the
    room set aside, a batch selection and a crop."""
    from transformers import DynamicCache

    from inilora.evaluate.generate import ReservedLayer, reserved_cache

    tok, model = tok_model
    tok.padding_side = "left"
    enc = tok(["12 + 7 = 19, and", "Below is", "a b c d e f g"], return_tensors="pt", padding=True)
    runs = []
    for cache in (DynamicCache(config=model.config), reserved_cache(model, 3)):
        mask, ids, logits = enc["attention_mask"], enc["input_ids"], []
        position = (mask.cumsum(-1) - 1).clamp(min=0)
        for step in range(9):
            if step == 4:  # the first row leaves, the last position is dropped
                cache.batch_select_indices(torch.tensor([1, 2]))
                cache.crop(-1)
                mask, position, ids = mask[1:, :-1], position[1:] - 1, ids[1:]
            out = model(input_ids=ids, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
            logits.append(out.logits[:, -1])
            ids = out.logits[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            position = position[:, -1:] + 1
        runs.append(logits)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert all(isinstance(layer, ReservedLayer) and layer.filled() for layer in cache.layers)
    layer, k, v = ReservedLayer(1), torch.randn(2, 3, 4, 8), torch.randn(2, 3, 4, 5)  # value heads of another size
    for step in range(3):  # past the room: the buffers grow
        keys, values = layer.update(k[:, :, step : step + 2], v[:, :, step : step + 2])
    assert torch.equal(keys, torch.cat([k[:, :, :2], k[:, :, 1:3], k[:, :, 2:4]], dim=2)) and values.shape[-1] == 5


def test_a_generation_config_with_logits_processors_keeps_transformers_generate(tok_model):
    from inilora.evaluate.generate import plain_greedy

    tok, model = tok_model
    assert plain_greedy(model)
    model.generation_config.repetition_penalty = 1.3
    try:
        assert not plain_greedy(model)
        prompts = ["12 + 7 =", "Below is 1 2 3 4"]
        assert generate(model, tok, prompts, 8, stops=[]) == generate(model, tok, prompts, 8, stops=[],
                                                                       drop_finished=False)
    finally:
        model.generation_config.repetition_penalty = 1.0


def test_sampling_returns_n_seeded_samples_per_prompt(tok_model):
    tok, model = tok_model
    a = generate(model, tok, ["12 + 7 =", "Below"], 5, samples=3, temperature=1.0, top_p=0.95, seed=4, stops=[])
    b = generate(model, tok, ["12 + 7 =", "Below"], 5, samples=3, temperature=1.0, top_p=0.95, seed=4, stops=[])
    assert a == b and [len(x) for x in a] == [3, 3]
    assert len({s for x in a for s in x}) > 1  # a random model at T=1 does not repeat itself
    with pytest.raises(ValueError, match="set a temperature"):
        generate(model, tok, ["x"], 2, samples=2, temperature=0.0)


def test_stop_strings_cut_the_output():
    assert cut_at_stop("The answer is: 4\n### Instruction: more", STOP_STRINGS) == "The answer is: 4\n### "


def test_humaneval_kind_scores_pass_at_k_in_the_sandbox(tok_model):
    tok, model = tok_model
    spec = {"benchmark": "he", "kind": "humaneval", "data": {"loader": "humaneval", "n": 2}, "samples": 2,
            "temperature": 0.8, "top_p": 0.95, "max_new_tokens": 8, "ks": [1, 10], "timeout": 3.0,
            "batch_size": 2, "max_length": 64}
    out = run_benchmark(model, tok, spec)
    assert out["n"] == 2 and set(out["metrics"]) == {"pass@1"}  # a random model's code fails; k=10 > 2 samples
    assert out["metrics"]["pass@1"] == 0.0
    assert any("pass@10" in note for note in out["notes"])
    assert all(len(r["completions"]) == 2 for r in out["records"])


def test_mmlu_kind_reports_accuracy_and_groups(tok_model):
    tok, model = tok_model
    spec = {"benchmark": "mc", "kind": "mmlu", "data": {"loader": "mmlu_standin", "n": 12, "seed": 0},
            "batch_size": 4, "chat_format": "tulu", "max_length": 64}
    out = run_benchmark(model, tok, spec)
    assert out["n"] == 12 and 0 <= out["metrics"]["accuracy"] <= 1
    assert out["per_category"] == {"standin": out["metrics"]["accuracy"]}


def test_math_kind_uses_hendrycks_equivalence(tok_model, monkeypatch):
    """A model that always answers '\\frac{1}{2}' is right exactly on the items whose gold is 0.5."""
    from inilora.evaluate import kinds as ev
    from inilora.data import Example

    tok, model = tok_model
    half = lambda *a, **k: [["... The answer is: \\frac{1}{2}.\n"]] * 2  # noqa: E731 (another backend's generate)
    monkeypatch.setattr(ev, "heldout_losses", lambda model, tok, examples, *a, **k: [(1.0, 1)] * len(examples))
    examples = [Example("q1", "r", "0.5"), Example("q2", "r", "\\frac{1}{3}")]
    out = ev.evaluate(model, tok, examples, "", 8, 64, kind="math", gen=half)
    assert [r["correct"] for r in out["records"]] == [True, False]
    numeric = ev.evaluate(model, tok, examples, "", 8, 64, kind="numeric", gen=half)
    assert not numeric["records"][0]["correct"]  # the GSM8K rule reads the number 1, not 1/2


def test_vllm_backend_without_vllm_fails_naming_the_fix():
    import importlib.util

    from inilora.evaluate.generate import vllm_generator

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    with pytest.raises(ValueError, match="backend 'vllm' needs the vllm package"):
        vllm_generator("/nonexistent")


def test_run_benchmark_uses_the_given_backend(tok_model):
    """Any generate-compatible backend (vLLM on a cluster) gets the same prompts and scoring."""
    tok, model = tok_model
    seen = []

    def fake(prompts, max_new_tokens, batch_size=None, desc=None, **kw):
        seen.extend(prompts)
        return [["The answer is: 7"] for _ in prompts]

    spec = {"benchmark": "b", "kind": "numeric", "data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 3,
            "seed": 1}, "max_new_tokens": 4, "batch_size": 2, "max_length": 64, "prompt_suffix": ""}
    out = run_benchmark(model, tok, spec, gen=fake)
    assert len(seen) == 3 and seen[0].startswith("Below is an instruction")
    assert all(r["output"] == "The answer is: 7" for r in out["records"])


def test_each_items_heldout_loss_is_recorded_and_the_benchmarks_is_their_token_weighted_mean(tiny_llama, tiny_llama_dir):
    from inilora.data import Example
    from inilora.evaluate.generate import heldout_loss, heldout_losses
    from inilora.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama_dir))
    examples = [Example(f"What is {i} + 2?", f"The answer is: {i + 2}" + " and more" * i, str(i + 2)) for i in range(5)]
    per_item = heldout_losses(tiny_llama, tok, examples, 64, batch_size=2)
    assert len(per_item) == 5 and len({n for _, n in per_item}) > 1  # items of different lengths
    overall = heldout_loss(tiny_llama, tok, examples, 64, batch_size=5)  # another batching, the same number
    assert abs(overall - sum(s for s, _ in per_item) / sum(n for _, n in per_item)) < 1e-5
    import torch

    from inilora.data.encode import IGNORE, Collator, encode

    batch = Collator(tok.pad_token_id)([encode(tok, ex, 64) for ex in examples])
    with torch.no_grad():  # the one-number form every earlier table used: the same value to float precision
        logits = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    labels = batch["labels"][:, 1:]
    summed = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=IGNORE, reduction="sum")
    assert abs(float(summed) / int((labels != IGNORE).sum()) - overall) < 1e-6
    alone = heldout_losses(tiny_llama, tok, examples[3:4], 64, batch_size=1)[0]  # padding changes no item's loss
    assert abs(alone[0] - per_item[3][0]) < 1e-4 and alone[1] == per_item[3][1]


def test_the_heldout_loss_applies_the_lm_head_only_where_a_token_is_scored_and_gets_the_full_pass_numbers(
        tiny_llama, tiny_llama_dir):
    import functools

    import torch

    from inilora.data import Example
    from inilora.data.encode import IGNORE, Collator, encode
    from inilora.data.encode import scored_mask
    from inilora.evaluate.generate import heldout_losses
    from inilora.models import load_tokenizer

    tok = load_tokenizer(str(tiny_llama_dir))
    examples = [Example(f"What is {i} + 2?" + " Think." * (3 * i % 7), f"The answer is: {i + 2}" + " and more" * i,
                        str(i + 2)) for i in range(6)]
    seen = []
    forward = tiny_llama.forward

    @functools.wraps(forward)  # the same signature, so the loss sees that it takes logits_to_keep
    def recording(*a, **k):
        seen.append(k.get("logits_to_keep"))
        return forward(*a, **k)

    tiny_llama.forward = recording
    got = heldout_losses(tiny_llama, tok, examples, 64, batch_size=3)
    tiny_llama.forward = forward
    full = []
    for i in range(0, 6, 3):  # the pass every earlier table used: the head over every position
        batch = Collator(tok.pad_token_id)([encode(tok, ex, 64) for ex in examples[i : i + 3]])
        with torch.no_grad():
            logits = tiny_llama(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
        labels = batch["labels"][:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                 ignore_index=IGNORE, reduction="none").view(labels.shape)
        full.extend(zip(loss.sum(dim=1).tolist(), (labels != IGNORE).sum(dim=1).tolist()))
        keep = seen[i // 3]  # the positions that predict a reference token, and those only
        assert torch.equal(keep, scored_mask(batch["labels"])) and torch.equal(keep[:, :-1], labels != IGNORE)
        assert 0 < int(keep.sum()) < keep.numel() // 2
    assert [n for _, n in got] == [n for _, n in full]
    assert max(abs(a - b) for (a, _), (b, _) in zip(got, full)) <= 1e-6 * max(abs(b) for b, _ in full)

    class NoKeep(torch.nn.Module):  # a model whose forward takes no logits_to_keep gets the full pass, cut
        def __init__(self):
            super().__init__()
            self.inner = tiny_llama

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    assert heldout_losses(NoKeep(), tok, examples, 64, batch_size=3) == got


def test_answers_and_losses_from_one_pass_equal_generation_and_the_heldout_loss_run_apart(tok_model):
    """The held-out loss's forward pass is also the greedy decoding's prefill: the same answers and the
    same losses as generate and heldout_losses run one after the other, with one forward over each
    prompt instead of two; a prompt that fills max_length is answered by generate."""
    from inilora.data import Example, prompt
    from inilora.evaluate.generate import LOSS_BATCH, answers_and_losses, heldout_losses
    from inilora.evaluate.kinds import HFGenerate

    tok, model = tok_model
    examples = [Example(f"What is {i} + {i % 5}?" + " Then add one." * (i % 4), "The answer is: " + "1 2" * (i % 3),
                        "0") for i in range(37)]
    examples[20] = Example("Long " * 150, "The answer is: 5", "5")  # its prompt alone fills max_length
    prompts = [prompt(ex.question) for ex in examples]
    assert [len(ids) >= 96 for ids in tok(prompts)["input_ids"]].count(True) == 1
    free = generate(model, tok, prompts, 10, batch_size=32, stops=[])
    stops = [free[0][0][3:5], "Below is"]  # ends some answers early; the second occurs in every prompt
    apart = (generate(model, tok, prompts, 10, batch_size=32, stops=stops, drop_finished=False, by_length=False),
             heldout_losses(model, tok, examples, 96))  # transformers' generate, and the loss's own pass
    widths = []
    forward = model.forward

    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]

    def recording(*args, **kwargs):
        cache = kwargs.get("cache")  # a decode step's holds the prompts already
        widths.append((*kwargs["input_ids"].shape, cache is not None and cache.get_seq_length() > 0,
                       sum("forward" in vars(m) for m in linears)))  # layers on packed weights
        return forward(*args, **kwargs)

    model.forward = recording
    try:
        answers, losses = answers_and_losses(model, tok, examples, 96, "", 10, batch_size=32, stops=stops)
    finally:
        model.forward = forward
    assert [[a] for a in answers] == apart[0] and answers != [f[0] for f in free]
    assert losses == apart[1] and losses[20] == (0.0, 0)  # the digits of heldout_losses; nothing left to score
    whole = [n for n, _, decoding, _ in widths if not decoding]  # forwards over prompts: the 3 loss batches, then item 20
    assert whole == [LOSS_BATCH, LOSS_BATCH, 37 - 2 * LOSS_BATCH, 1]
    assert max(n for n, _, decoding, _ in widths if decoding) == 2 * LOSS_BATCH - 1  # two loss batches decode as one
    # the loss batches on MKL's products, so their digits stay, and the decode steps on packed weights (item 20
    # goes to transformers' generate here: the recording forward hides that the model takes logits_to_keep)
    assert [p for *_, p in widths] == [len(linears) if d and n > 1 else 0 for n, _, d, _ in widths]
    with pytest.raises(ValueError, match="at least the loss's batch"):
        answers_and_losses(model, tok, examples, 96, "", 10, batch_size=8)
    assert HFGenerate(model, tok).one_pass(32) and not HFGenerate(model, tok).one_pass(8)
    assert not HFGenerate(model, tok, kv_cache="static").one_pass(32)
    from types import SimpleNamespace

    from transformers import MistralConfig

    from inilora.evaluate.generate import full_attention

    assert full_attention(model)  # a sliding window drops positions: no cache to cut back to a prompt's end
    assert not full_attention(SimpleNamespace(config=MistralConfig(num_hidden_layers=2, sliding_window=64)))
    assert full_attention(SimpleNamespace(config=MistralConfig(num_hidden_layers=2, sliding_window=None)))
