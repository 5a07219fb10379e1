import json
import math
import warnings
from collections import Counter
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from conftest import make_llama, make_tokenizer
from inilora.data import DataError
from inilora.evaluate.mmlu import (
    CATEGORY_SUBCATEGORIES, LETTERS, STANDIN_LABEL, SUBJECT_SUBCATEGORY, MMLUItem, build_prompt, groups,
    letter_probs, letter_token_ids, load_hub, load_standin, score,
)

ITEM = MMLUItem("high_school_us_history", "Who was the first US president?",
                ("Adams", "Washington", "Jefferson", "Lincoln"), 1)
RAW = ("The following are multiple choice questions (with answers) about  high school us history.\n\n"
       "Who was the first US president?\nA. Adams\nB. Washington\nC. Jefferson\nD. Lincoln\nAnswer:")

HUB_ROWS = [
    {"question": "2 + 2 = ?", "subject": "elementary_mathematics", "choices": ["3", "4", "5", "6"], "answer": 1},
    {"question": "Largest planet?", "subject": "astronomy", "choices": ["Mars", "Venus", "Jupiter", "Earth"],
     "answer": "C"},
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def tokenizer_with_single_letter_tokens():
    """A byte-level BPE whose training text makes " A" ... " D" merge into single tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["The answer is: A B C D"] * 50, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", pad_token="</s>")


# ---------------------------------------------------------------------------- prompt


def test_raw_prompt_is_open_instructs_zero_shot_text():
    assert build_prompt(ITEM, "none") == RAW


def test_tulu_prompt_wraps_the_whole_prompt_and_opens_the_answer():
    assert build_prompt(ITEM) == f"<|user|>\n{RAW}\n<|assistant|>\nThe answer is:"


def test_unknown_chat_format_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"chat_format='alpaca'; allowed: \['tulu', 'none'\]"):
        build_prompt(ITEM, "alpaca")


def test_letters_fall_back_to_the_last_piece_with_a_warning_on_the_tiny_tokenizer():
    tok = make_tokenizer()
    assert len(tok.encode(" A", add_special_tokens=False)) == 2  # "Ġ" + "A" in this tiny vocabulary
    with pytest.warns(UserWarning, match="not a single token"):
        ids = letter_token_ids(tok)
    assert ids == tok.convert_tokens_to_ids(list(LETTERS))


def test_letters_are_single_tokens_where_the_vocabulary_has_them():
    tok = tokenizer_with_single_letter_tokens()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids = letter_token_ids(tok)
    assert [tok.encode(" " + x, add_special_tokens=False) for x in LETTERS] == [[i] for i in ids]
    assert len(set(ids)) == 4


# ---------------------------------------------------------------------------- data


def test_hub_loader_reads_local_jsonl_with_index_and_letter_answers(tmp_path):
    items = load_hub(data_files=write_jsonl(tmp_path / "test.jsonl", HUB_ROWS))
    assert items == [MMLUItem("elementary_mathematics", "2 + 2 = ?", ("3", "4", "5", "6"), 1),
                     MMLUItem("astronomy", "Largest planet?", ("Mars", "Venus", "Jupiter", "Earth"), 2)]


def test_hub_loader_reads_parquet(tmp_path):
    f = tmp_path / "test-00000-of-00001.parquet"
    pd.DataFrame([{**r, "answer": i} for i, r in enumerate(HUB_ROWS)]).to_parquet(f)
    items = load_hub(data_files=f)  # a Path works as well as a str
    assert [(i.subject, i.answer, i.choices[i.answer]) for i in items] == [
        ("elementary_mathematics", 0, "3"), ("astronomy", 1, "Venus")]


def test_hub_loader_subsamples_n_in_order(tmp_path):
    rows = [{**HUB_ROWS[0], "question": f"q{i}"} for i in range(20)]
    items = load_hub(data_files=write_jsonl(tmp_path / "t.jsonl", rows), n=5, seed=3)
    idx = [int(i.question[1:]) for i in items]
    assert len(idx) == 5 and idx == sorted(idx) and idx != list(range(5))
    assert items == load_hub(data_files=write_jsonl(tmp_path / "t.jsonl", rows), n=5, seed=3)


def test_missing_field_names_missing_and_present(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"question": "x", "choices": ["a", "b", "c", "d"], "answer": 0}])
    present = r"present: \['answer', 'choices', 'question'\]"
    with pytest.raises(DataError, match=r"lacks field\(s\) \['subject'\]; " + present):
        load_hub(data_files=f)


def test_bad_answer_names_value_and_allowed(tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{**HUB_ROWS[0], "answer": "E"}])
    with pytest.raises(DataError, match=r"answer 'E' is not allowed; use an index 0-3 or a letter A-D"):
        load_hub(data_files=f)


def test_hendrycks_csv_folder_takes_subject_from_file_name(tmp_path):
    pd.DataFrame([["What is 1, plus 1?", "1", "2", "3", "4", "B"]]).to_csv(
        tmp_path / "abstract_algebra_test.csv", header=False, index=False)
    pd.DataFrame([["Bone count?", "206", "306", "106", "6", "A"], ["Heart chambers?", "1", "2", "3", "4", "D"]]).to_csv(
        tmp_path / "anatomy_test.csv", header=False, index=False)
    pd.DataFrame([["dev row", "a", "b", "c", "d", "A"]]).to_csv(tmp_path / "anatomy_dev.csv", header=False, index=False)
    items = load_hub(format="hendrycks_csv", data_files=str(tmp_path))
    assert items == [MMLUItem("abstract_algebra", "What is 1, plus 1?", ("1", "2", "3", "4"), 1),
                     MMLUItem("anatomy", "Bone count?", ("206", "306", "106", "6"), 0),
                     MMLUItem("anatomy", "Heart chambers?", ("1", "2", "3", "4"), 3)]


def test_standin_is_seeded_labelled_and_well_formed():
    a, b = load_standin(60, seed=1), load_standin(60, seed=1)
    assert a == b and len(a) == 60 and a != load_standin(60, seed=2)
    assert "not MMLU" in STANDIN_LABEL and STANDIN_LABEL in load_standin.__doc__
    for item in a:
        assert len(set(item.choices)) == 4
    positions = Counter(item.answer for item in a)
    assert set(positions) == {0, 1, 2, 3} and min(positions.values()) >= 8
    assert Counter(item.subject for item in a) == {s: 10 for s in Counter(i.subject for i in a)}
    assert all(groups(item.subject) == ("standin", "standin") for item in a)


def test_subject_mapping_has_the_57_hendrycks_subjects_in_4_categories():
    assert len(SUBJECT_SUBCATEGORY) == 57
    assert list(CATEGORY_SUBCATEGORIES) == ["STEM", "humanities", "social sciences", "other (business, health, misc.)"]
    subcats = [s for subs in CATEGORY_SUBCATEGORIES.values() for s in subs]
    assert len(subcats) == len(set(subcats)) == 17 and set(subcats) == set(SUBJECT_SUBCATEGORY.values())
    assert groups("abstract_algebra") == ("math", "STEM")
    assert groups("professional_law") == ("law", "humanities")
    assert groups("econometrics") == ("economics", "social sciences")
    assert groups("virology") == ("health", "other (business, health, misc.)")


# ---------------------------------------------------------------------------- scoring


class LetterStub(torch.nn.Module):
    """A causal-LM look-alike whose next-token logits are fixed: ``logit`` per token id."""

    def __init__(self, vocab_size: int, logit: dict[int, float]):
        super().__init__()
        self.vocab_size, self.logit = vocab_size, logit
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # gives the model a device
        self.calls = []

    def forward(self, input_ids, attention_mask, position_ids, logits_to_keep=0):
        self.calls.append((attention_mask.clone(), position_ids.clone(), logits_to_keep))
        logits = torch.zeros(input_ids.shape[0], 1, self.vocab_size)
        for i, v in self.logit.items():
            logits[..., i] = v
        return SimpleNamespace(logits=logits)


def item(subject, letter):
    return MMLUItem(subject, f"q about {subject}?", ("w", "x", "y", "z"), LETTERS.index(letter))


def test_score_with_controlled_logits_gives_exact_accuracies():
    tok = tokenizer_with_single_letter_tokens()
    ids = letter_token_ids(tok)
    model = LetterStub(len(tok), {ids[0]: 1.0, ids[1]: 3.0})  # always prefers B, then A
    items = [item("abstract_algebra", "B"), item("abstract_algebra", "B"), item("abstract_algebra", "A"),
             item("high_school_us_history", "B"), item("high_school_us_history", "C"),
             item("college_physics", "B"), item("gcd", "D")]
    out = score(model, tok, items, batch_size=3, progress=False)
    assert out["n"] == 7 and out["accuracy"] == pytest.approx(4 / 7)
    assert out["accuracy_se"] == pytest.approx(math.sqrt(4 / 7 * 3 / 7 / 7))
    assert out["per_subject"] == pytest.approx(
        {"abstract_algebra": 2 / 3, "high_school_us_history": 1 / 2, "college_physics": 1.0, "gcd": 0.0})
    assert out["per_subcategory"] == pytest.approx({"math": 2 / 3, "history": 1 / 2, "physics": 1.0, "standin": 0.0})
    # question-weighted: STEM is 3 of 4 questions, not the mean (2/3 + 1) / 2 of its subcategories
    assert out["per_category"] == pytest.approx({"STEM": 3 / 4, "humanities": 1 / 2, "standin": 0.0})
    e = math.exp(1) + math.exp(3) + 2
    assert out["records"][6] == {"subject": "gcd", "answer": "D", "prediction": "B", "correct": False,
                                 "probs": pytest.approx([math.exp(1) / e, math.exp(3) / e, 1 / e, 1 / e], abs=1e-6)}
    # left padding: every row's last column is a real token; positions count real tokens only
    for mask, pos, keep in model.calls:
        assert keep == 1 and bool(mask[:, -1].all())
        assert torch.equal(pos[:, -1], mask.sum(-1) - 1) and bool((pos[mask == 0] == 0).all())
    assert len(model.calls) == 3


def test_batched_equals_one_at_a_time_with_the_tiny_llama():
    tok = make_tokenizer()
    model = make_llama(len(tok))
    prompts = [build_prompt(i) for i in load_standin(10, seed=1)]
    assert len({len(tok.encode(p)) for p in prompts}) > 1  # lengths differ, so batches are padded
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny vocabulary's letter fallback
        one = letter_probs(model, tok, prompts, batch_size=1, progress=False)
        batched = letter_probs(model, tok, prompts, batch_size=4, progress=False)
    assert torch.allclose(one, batched, atol=1e-5)
    assert torch.equal(one.argmax(-1), batched.argmax(-1))
    assert torch.allclose(one.sum(-1), torch.ones(10))
    assert tok.padding_side == "right"  # restored for the training code that shares the tokenizer
