import json
import math
import random

import pytest
import torch

from inilora.data import glue
from inilora.data.glue import (
    TASKS,
    accuracy,
    arith_claim,
    arith_closeness,
    champ_topic,
    closeness,
    compute_metrics,
    f1,
    load_glue,
    matthews_corr,
    pearson,
    spearman,
    tuning_split,
    wrong_answer,
)
from inilora.train.glue import best_epoch, finetune_classifier, item_losses

# ----------------------------------------------------------------------------- metrics


def test_accuracy_and_f1_by_hand():
    p, y = [1, 1, 0, 0, 1], [1, 0, 0, 1, 1]
    assert accuracy(p, y) == pytest.approx(3 / 5)
    # TP 2, FP 1, FN 1: precision 2/3, recall 2/3
    assert f1(p, y) == pytest.approx(2 / 3)
    assert f1([0, 0, 0], [0, 1, 1]) == 0.0  # no predicted positives
    assert f1([0, 0], [0, 0]) == 0.0  # no positives anywhere (sklearn's zero_division)


def test_matthews_by_hand():
    p, y = [1, 1, 0, 0, 1, 0], [1, 0, 0, 1, 1, 0]
    tp, tn, fp, fn = 2, 2, 1, 1
    expected = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corr(p, y) == pytest.approx(expected) == pytest.approx(1 / 3)
    assert matthews_corr([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0  # constant predictor
    assert matthews_corr([0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx(-1.0)
    # 3 classes, Gorodkin's form: c=4, s=6, p=(2,2,2), t=(2,2,2): (24-12)/(36-12) = 0.5
    assert matthews_corr([0, 0, 1, 1, 2, 2], [0, 1, 1, 0, 2, 2]) == pytest.approx(0.5)


def test_pearson_and_spearman_by_hand():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    # x=(1,2,3,4), y=(1,3,2,4): cov 4, var 5 each -> 0.8
    assert pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))
    # monotone but not linear: rho 1, r < 1
    assert spearman([1, 2, 3, 4], [1, 4, 9, 100]) == pytest.approx(1.0)
    # ties: x ranks (1.5, 1.5, 3, 4), y ranks (1, 2, 3, 4); r of the ranks = 4.5 / sqrt(4.5 * 5)
    assert spearman([10, 10, 20, 30], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([3.0, 1.0, 3.0, 3.0], [3.0, 1.0, 3.0, 3.0]) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", [accuracy, f1, matthews_corr, pearson, spearman])
def test_every_metric_on_a_stack_of_resamples_equals_it_on_each(metric):
    """The statistics resample items and score every resample at once (the last axis is the items)."""
    import numpy as np

    rng = np.random.default_rng(0)
    p, y = rng.integers(0, 3, size=(7, 40)), rng.integers(0, 3, size=40)
    p[0] = 1  # a constant predictor among them
    if metric is f1:
        p, y = p % 2, y % 2
    stacked = metric(p, y)
    each = [metric(row, y) for row in p]
    assert np.asarray(stacked).shape == (7,)
    np.testing.assert_allclose(stacked, each, equal_nan=True)
    np.testing.assert_allclose(metric(p, np.broadcast_to(y, p.shape)), each, equal_nan=True)  # labels resampled too


def test_compute_metrics_per_task():
    logits = [[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]]  # argmax 0, 1, 1, 0
    assert compute_metrics("mrpc", logits, [0, 1, 0, 0]) == pytest.approx({"accuracy": 0.75, "f1": 2 / 3})
    assert set(compute_metrics("cola", [1, 0, 1], [1, 0, 0])) == {"matthews_correlation"}
    out = compute_metrics("stsb", [[0.5], [1.5], [4.0]], [0.0, 2.0, 5.0])
    assert out["spearman"] == pytest.approx(1.0) and 0.9 < out["pearson"] < 1.0
    with pytest.raises(ValueError, match="unknown task 'wnli'.*'cola'"):
        compute_metrics("wnli", [1], [1])


def test_task_table_follows_the_paper():
    assert TASKS["mnli"].validation_split == "validation_mismatched" and TASKS["mnli"].num_labels == 3
    assert TASKS["stsb"].num_labels == 1 and TASKS["stsb"].main_metric == "pearson"
    assert TASKS["cola"].main_metric == "matthews_correlation"
    assert TASKS["qnli"].text_fields == ("question", "sentence")
    assert TASKS["qqp"].metrics == ("accuracy", "f1")
    for name in ("arith_claim", "champ_topic", "arith_closeness"):
        assert not TASKS[name].glue and "not GLUE" in TASKS[name].label


def test_best_epoch_takes_the_max_and_skips_nan():
    per = [{"epoch": 1, "pearson": float("nan")}, {"epoch": 2, "pearson": 0.7}, {"epoch": 3, "pearson": 0.7}]
    assert best_epoch(per, "pearson")["epoch"] == 2


# ----------------------------------------------------------------------------- load_glue


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_load_glue_from_local_files_in_hub_format(tmp_path):
    cola = write_jsonl(tmp_path / "cola.jsonl", [{"sentence": f"s{i}", "label": i % 2, "idx": i} for i in range(5)])
    out = load_glue("cola", "validation", data_files=str(cola), n=3)
    assert out == {"sentence": ["s0", "s1", "s2"], "label": [0, 1, 0]}

    mrpc = tmp_path / "mrpc.csv"
    mrpc.write_text("sentence1,sentence2,label,idx\na b,c d,1,0\ne f,g h,0,1\n")
    assert load_glue("mrpc", "train", data_files={"train": str(mrpc)}) == {
        "sentence1": ["a b", "e f"], "sentence2": ["c d", "g h"], "label": [1, 0]}

    stsb = write_jsonl(tmp_path / "stsb.json", [{"sentence1": "x", "sentence2": "y", "label": 3.2, "idx": 0}])
    assert load_glue("stsb", "validation", data_files=str(stsb))["label"] == [3.2]


def test_load_glue_errors(tmp_path):
    bad = write_jsonl(tmp_path / "mrpc.jsonl", [{"sentence1": "a", "label": 1}])
    with pytest.raises(ValueError, match=r"needs field\(s\) \['sentence2'\]; the data has \['label', 'sentence1'\]"):
        load_glue("mrpc", "train", data_files=str(bad))
    with pytest.raises(ValueError, match="unknown task 'sts'; valid: GLUE .*'stsb'"):
        load_glue("sts", "train", data_files=str(bad))
    with pytest.raises(ValueError, match="extension '.txt' unknown"):
        load_glue("mrpc", "train", data_files=str(tmp_path / "x.txt"))
    with pytest.raises(ValueError, match="stand-in, not GLUE"):
        load_glue("arith_claim", "train")


# ----------------------------------------------------------------------------- stand-ins


def test_arith_claim_is_deterministic_balanced_and_right():
    a, b = arith_claim(40, 20, seed=3), arith_claim(40, 20, seed=3)
    assert a == b and arith_claim(40, 20, seed=4) != a
    for split, n in (("train", 40), ("validation", 20)):
        cols = a[split]
        assert len(cols["label"]) == n and sum(cols["label"]) == n // 2
        assert set(cols) >= {"sentence1", "sentence2", "label"}
        for _q, claim, y, kind in zip(cols["sentence1"], cols["sentence2"], cols["label"], cols["perturbation"]):
            assert (kind == "none") == (y == 1) and claim.startswith("The answer is ")
    assert not set(a["train"]["sentence1"]) & set(a["validation"]["sentence1"])
    # the label is the truth: evaluate the chain sums
    prefix = "State the final answer to the following arithmetic problem: "
    checked = 0
    for q, claim, y in zip(a["train"]["sentence1"], a["train"]["sentence2"], a["train"]["label"]):
        if q.startswith(prefix):
            value = eval(q[len(prefix):].rstrip("= "))  # only digits, + and -
            assert (int(claim[len("The answer is "):-1]) == value) == (y == 1)
            checked += 1
    assert checked >= 10


def test_arith_claim_can_restrict_the_kinds_of_wrong_answers():
    d = arith_claim(20, 10, seed=0, perturbations=("sign",))
    assert set(d["train"]["perturbation"]) == {"none", "sign"}
    with pytest.raises(ValueError, match=r"perturbations \['typo'\]: need some of \['near'"):
        arith_claim(20, 10, perturbations=("typo",))


@pytest.mark.parametrize("kind", glue.PERTURBATIONS)
def test_wrong_answers_are_wrong(kind):
    rng = random.Random(0)
    for a in (0, 1, -7, 10, 11, 100, 123, -450, 9000):
        assert wrong_answer(a, kind, rng) != a


def test_arith_closeness_scores_on_a_0_5_scale():
    assert closeness(10, 10) == 5.0 and closeness(15, 10) == 2.5 and closeness(-10, 10) == 0.0
    d = arith_closeness(60, 20, seed=0)
    assert d == arith_closeness(60, 20, seed=0)
    labels = d["train"]["label"]
    assert min(labels) >= 0 and max(labels) <= 5 and len(set(round(x) for x in labels)) >= 4


def test_champ_topic_split_is_stratified_and_seeded():
    d = champ_topic(seed=0)
    assert len(d["train"]["label"]) + len(d["validation"]["label"]) == 270
    assert len(d["validation"]["label"]) == 54 and set(d["validation"]["label"]) == set(range(5))
    assert not set(d["train"]["sentence"]) & set(d["validation"]["sentence"])
    assert d == champ_topic(seed=0) and d["validation"] != champ_topic(seed=1)["validation"]


def test_tuning_split_is_held_out_stratified_and_seeded():
    d = champ_topic(seed=0)["train"]
    train, tune = tuning_split(d, "champ_topic", 0.2, seed=3)
    assert len(train["label"]) + len(tune["label"]) == len(d["label"]) == 216
    assert not set(train["sentence"]) & set(tune["sentence"])
    for c in range(5):  # each class gives round(0.2 x its count)
        assert tune["label"].count(c) == round(d["label"].count(c) * 0.2)
    # the rows keep their order, and the draw follows the seed
    assert tune["sentence"] == [x for x in d["sentence"] if x in set(tune["sentence"])]
    assert tuning_split(d, "champ_topic", 0.2, seed=3) == (train, tune)
    assert tuning_split(d, "champ_topic", 0.2, seed=4)[1] != tune
    rows = [{"sentence1": f"a{i}", "sentence2": "b", "label": i / 10} for i in range(10)]  # regression: a plain draw
    train, tune = tuning_split(rows, "stsb", 0.3, seed=0)
    assert len(tune["label"]) == 3 and sorted(train["label"] + tune["label"]) == [r["label"] for r in rows]
    with pytest.raises(ValueError, match="leaves 0 to tune on"):
        tuning_split(rows[:2], "stsb", 0.2, seed=0)


def test_item_losses_are_the_training_losses():
    logits = torch.randn(7, 3, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2])
    ce = torch.nn.functional.cross_entropy(logits.double(), labels, reduction="none")
    assert item_losses("mnli", logits.numpy(), labels.numpy()) == pytest.approx(ce.numpy(), rel=1e-9)
    scores, targets = torch.randn(5, 1), torch.randn(5)
    assert item_losses("stsb", scores.numpy(), targets.numpy()) == pytest.approx(
        ((scores[:, 0] - targets) ** 2).numpy(), rel=1e-6)


# ----------------------------------------------------------------------------- fine-tuning

WORDS = ["red", "blue", "green", "cat", "dog", "tree", "house", "road", "sun", "moon", "sky", "sea",
         "big", "small", "old", "new", "fast", "slow", "hot", "cold"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny matrices: one thread is ~10x faster than two contending ones on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def tiny_bert(path):
    """A tiny random BERT encoder (no head, like a pretrained checkpoint) and a WordPiece vocab, saved in ``path``."""
    from transformers import BertConfig, BertModel, BertTokenizer

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "apple", *WORDS]
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}).save_pretrained(path)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    BertModel(cfg).save_pretrained(path)
    return path


def apple_rows(n, seed, regression=False):
    """Label = whether "apple" occurs (half of the rows); as a 0 / 5 score for regression."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        words = rng.choices(WORDS, k=6)
        if i % 2:
            words[rng.randrange(6)] = "apple"
        pair = " ".join(rng.choices(WORDS, k=3))
        rows.append({"sentence": " ".join(words), "sentence1": " ".join(words), "sentence2": pair,
                     "label": 5.0 * (i % 2) if regression else i % 2})
    return rows


FAST = dict(rank=4, alpha=8, epochs=3, lr=3e-2, batch_size=16, max_length=16, progress=False)


def test_finetune_learns_a_trivial_task_and_reports_best_and_last(tiny_bert_dir):
    res = finetune_classifier(tiny_bert_dir, "sst2", train_rows=apple_rows(256, 0), eval_rows=apple_rows(64, 1),
                              **FAST)
    assert [e["epoch"] for e in res["per_epoch"]] == [1, 2, 3]
    assert all(math.isfinite(e["train_loss"]) for e in res["per_epoch"])
    assert res["best"]["accuracy"] >= 0.8  # chance is 0.5
    assert res["best"]["accuracy"] == max(e["accuracy"] for e in res["per_epoch"]) >= res["last"]["accuracy"]
    assert res["last"] == res["per_epoch"][-1] and res["main_metric"] == "accuracy"
    assert any(n.startswith("base_model.model.classifier") for n in res["head_parameters"])  # modules_to_save
    assert res["train_examples"] == 256 and res["eval_examples"] == 64
    # each validation example's label and its predictions at the reported epochs, in the split's order
    pred = res["predictions"]
    assert pred["labels"] == [r["label"] for r in apple_rows(64, 1)]
    assert accuracy(pred["best"], pred["labels"]) == pytest.approx(res["best"]["accuracy"])
    assert accuracy(pred["last"], pred["labels"]) == pytest.approx(res["last"]["accuracy"])


def test_finetune_regression_reports_pearson_and_spearman(tiny_bert_dir):
    res = finetune_classifier(tiny_bert_dir, "stsb", train_rows=apple_rows(96, 0, True),
                              eval_rows=apple_rows(32, 1, True), **{**FAST, "epochs": 2})
    assert len(res["per_epoch"]) == 2 and res["main_metric"] == "pearson"
    for e in res["per_epoch"]:
        assert set(e) == {"epoch", "pearson", "spearman", "train_loss"}
        assert -1 <= e["pearson"] <= 1 and -1 <= e["spearman"] <= 1
    assert res["best"]["pearson"] >= res["last"]["pearson"]
    assert pearson(res["predictions"]["best"], res["predictions"]["labels"]) == pytest.approx(res["best"]["pearson"])
    assert all(isinstance(v, float) for v in res["predictions"]["last"])  # scores, not class ids


def test_tuning_rows_are_scored_after_the_last_epoch(tiny_bert_dir):
    """Scored on the validation rows too, the tuning record is the last epoch's validation record."""
    rows = apple_rows(32, 1)
    res = finetune_classifier(tiny_bert_dir, "sst2", train_rows=apple_rows(64, 0), eval_rows=rows, tuning_rows=rows,
                              **{**FAST, "epochs": 2})
    tuning = res["tuning"]
    assert tuning["examples"] == 32 and tuning["metrics"] == pytest.approx(
        {k: res["last"][k] for k in tuning["metrics"]})
    assert tuning["items"]["correct"] == [float(p == y) for p, y in zip(res["predictions"]["last"],
                                                                         res["predictions"]["labels"])]
    losses = tuning["items"]["heldout_loss"]
    assert len(losses) == 32 and all(x > 0 for x in losses) and tuning["loss"] == pytest.approx(sum(losses) / 32)
    assert "tuning" not in finetune_classifier(tiny_bert_dir, "sst2", train_rows=apple_rows(16, 0), eval_rows=rows,
                                               **{**FAST, "epochs": 1})


@pytest.mark.parametrize("method,options", [("pissa", {}), ("loraga", {"batches": 2})])
def test_residual_inits_run_through_the_same_path(tiny_bert_dir, method, options):
    """loraga also gets its gradient batches from the task's training rows."""
    res = finetune_classifier(tiny_bert_dir, "mrpc", method=method, init_options=options,
                              train_rows=apple_rows(48, 0), eval_rows=apple_rows(32, 1), **{**FAST, "epochs": 2})
    assert len(res["per_epoch"]) == 2 and set(res["best"]) == {"epoch", "accuracy", "f1", "train_loss"}


def test_finetune_names_missing_fields(tiny_bert_dir):
    with pytest.raises(ValueError, match=r"needs field\(s\) \['sentence2'\]"):
        finetune_classifier(tiny_bert_dir, "rte", train_rows=[{"sentence1": "a", "label": 0}],
                            eval_rows=[{"sentence1": "a", "label": 0}], **FAST)


@pytest.mark.workflow
def test_table1_runs_every_encoder_of_glue_model_and_sets_the_papers_scores_beside(tmp_path, tiny_bert_dir):
    """glue.model as a list (the paper: RoBERTa base and large): a block of rows per encoder, and the
    paper's Table 1 score beside each, through the workflow's own table1 rule."""
    import pandas as pd
    import yaml

    from test_workflow import snakemake

    sst2 = {"train": str(write_jsonl(tmp_path / "train.jsonl", apple_rows(32, 0))),
            "validation": str(write_jsonl(tmp_path / "validation.jsonl", apple_rows(16, 1)))}
    config = table1_config(tmp_path, {"base": {"path": str(tiny_bert_dir), "paper_name": "RoBERTa Base"},
                                      "large": {"path": str(tiny_bert_dir), "paper_name": "RoBERTa Large"}},
                           {"model": ["base", "large"], "tasks": ["sst2"], "data": {"sst2": {"data_files": sst2}},
                            "methods": ["lora"], "ranks": [4], "seeds": [0], "epochs": 1, "batch_size": 16,
                            "max_length": 16})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    snakemake(tmp_path, cfg, "--cores", "2", "results/table1.csv")
    table = pd.read_csv(tmp_path / "results/table1.csv").set_index("model")
    assert sorted(table.index) == ["base", "large"]
    assert table.loc["base", "sst2:accuracy:paper"] == pytest.approx(0.947)  # LoRA, RoBERTa Base, SST-2
    assert table.loc["large", "sst2:accuracy:paper"] == pytest.approx(0.965)  # LoRA, RoBERTa Large
    assert table.loc["large", "sst2:accuracy:ours_minus_paper"] == pytest.approx(
        table.loc["large", "sst2:accuracy"] - 0.965)


def table1_config(work, encoders: dict, glue: dict, **top) -> dict:
    """A workflow config for Table 1 alone: the causal-LM sections the schema requires are a tiny
    model and task that no Table 1 job reads."""
    from conftest import save_tiny_llama

    return {"models": {"tiny": {"path": str(save_tiny_llama(work / "llama"))}}, "encoders": encoders, "glue": glue,
            "methods": glue["methods"], "ranks": [4], "seeds": [1], "threads": 1,
            "tasks": {"t": {"train": [{"loader": "reasoning_gym", "dataset": "chain_sum", "n": 8, "seed": 1}],
                            "benchmarks": ["b"]}},
            "benchmarks": {"b": {"data": {"loader": "reasoning_gym", "dataset": "chain_sum", "n": 2}}}, **top}
