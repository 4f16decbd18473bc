"""Harness: protocols, embedding cache hit and resume, fit isolation, contracts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import cxrbench
from cxrbench.benchmark.harness import patient_folds
from cxrbench.encoders import EmbeddingSpec, Encoder, InputSpec
from cxrbench.testing import OracleEncoder, TinyDataset


class CountingRaw(Encoder):
    """Raw 8x8 pixels that counts embedded images and can fail on purpose."""

    name = "counting"

    def __init__(self, fail_after: int | None = None, **params):
        super().__init__(**params)
        self.input_spec = InputSpec(size=(8, 8))
        self.embedding_spec = EmbeddingSpec(dim=64)
        self.embedded = 0
        self.fail_after = fail_after

    def embed(self, batch):
        if self.fail_after is not None and self.embedded + len(batch) > self.fail_after:
            raise KeyboardInterrupt("simulated crash")
        self.embedded += len(batch)
        return batch.reshape(len(batch), -1).numpy()


def test_holdout_queries_test_split_against_train(tiny, tmp_path):
    r = cxrbench.run(CountingRaw(), tiny, out=None, n_boot=0, cache_dir=str(tmp_path))
    t = r._table
    ix = tiny.index
    assert set(ix.splits[t.queries]) == {"test"}
    assert set(ix.splits[t.neighbors[t.neighbors >= 0]]) == {"train"}
    assert r.protocol["n_queries"] == (ix.splits == "test").sum()


def test_leave_one_out_excludes_self_and_patient(tiny, tmp_path):
    r = cxrbench.run(CountingRaw(), tiny, out=None, n_boot=0, protocol="leave-one-out",
                     cache_dir=str(tmp_path), k=[1, 5])
    t = r._table
    pids = tiny.index.patient_ids
    assert len(t.queries) == len(tiny)
    assert not (t.neighbors == t.queries[:, None]).any()
    for q, row in zip(t.queries, t.neighbors):
        assert all(pids[n] != pids[q] for n in row)
    assert r.exclusions["same_patient"] is True
    r2 = cxrbench.run(CountingRaw(), tiny, out=None, n_boot=0, protocol="leave-one-out",
                      cache_dir=str(tmp_path), k=[1, 5], exclude_same_patient=False)
    assert r2.exclusions["excluded_same_patient"] == 0
    same = sum(pids[n] == pids[q] for q, row in zip(r2._table.queries, r2._table.neighbors)
               for n in row)
    # every same-patient image in the unfiltered top k was counted as excluded
    assert 0 < same <= r.exclusions["excluded_same_patient"]


def test_kfold_folds_are_patient_level_and_cover_everything(tiny, tmp_path):
    folds = patient_folds(tiny.index.patient_ids, 4, seed=0)
    for p in np.unique(tiny.index.patient_ids):
        assert len(set(folds[tiny.index.patient_ids == p])) == 1
    r = cxrbench.run(CountingRaw(), tiny, out=None, n_boot=0, protocol="kfold", folds=4,
                     cache_dir=str(tmp_path))
    t = r._table
    assert sorted(t.queries.tolist()) == list(range(len(tiny)))
    f = folds
    for q, row in zip(t.queries, t.neighbors):
        assert all(f[n] != f[q] for n in row if n >= 0)


def test_embedding_cache_hit_skips_embedding(tiny, tmp_path):
    enc = CountingRaw()
    r1 = cxrbench.run(enc, tiny, out=None, n_boot=0, cache_dir=str(tmp_path))
    assert enc.embedded == len(tiny)
    assert r1.cache["embeddings"][0]["hit"] is False
    enc2 = CountingRaw()
    # a change of metrics / k / protocol / exclusions must not re-embed
    r2 = cxrbench.run(enc2, tiny, out=None, n_boot=0, cache_dir=str(tmp_path), k=[3],
                      protocol="leave-one-out", exclude_same_patient=False)
    assert enc2.embedded == 0
    assert r2.cache["embeddings"][0]["hit"] is True
    # a cache hit still reports how fast the embeddings were computed
    assert r2.throughput["from_cache"] is True
    assert r2.throughput["seconds_per_image"] == pytest.approx(r1.throughput["seconds_per_image"], rel=0.5)
    # --no-cache embeds again
    enc3 = CountingRaw()
    cxrbench.run(enc3, tiny, out=None, n_boot=0, cache_dir=str(tmp_path), use_cache=False)
    assert enc3.embedded == len(tiny)


def test_interrupted_embedding_resumes_from_finished_chunks(tmp_path):
    ds = TinyDataset(n=200)
    # batch 4 -> chunks of 128 rows; crash after 150 images: chunk 0 is on disk
    with pytest.raises(KeyboardInterrupt):
        cxrbench.run(CountingRaw(fail_after=150), ds, out=None, n_boot=0, batch_size=4,
                     cache_dir=str(tmp_path))
    enc = CountingRaw()
    r = cxrbench.run(enc, ds, out=None, n_boot=0, batch_size=4, cache_dir=str(tmp_path))
    assert enc.embedded == 200 - 128
    info = r.cache["embeddings"][0]
    assert info["rows_computed"] == 72 and info["resumed_rows"] == 128
    # and the resumed embeddings equal a clean run's
    clean = cxrbench.run(CountingRaw(), ds, out=None, n_boot=0, use_cache=False)
    np.testing.assert_array_equal(r._table.neighbors, clean._table.neighbors)


class FitSpy(CountingRaw):
    trainable = True

    def fit(self, train, *, progress=None, seed=0):
        self.seen = [train.dataset_index(j) for j in range(len(train))]
        for j in range(len(train)):
            train.load_image(j)


def test_fit_sees_only_the_train_split(tiny, tmp_path):
    enc = FitSpy()
    cxrbench.run(enc, tiny, out=None, n_boot=0, cache_dir=str(tmp_path))
    assert set(tiny.index.splits[enc.seen]) == {"train"}
    assert sorted(enc.seen) == sorted(tiny.split_indices("train").tolist())


def test_trainable_leave_one_out_scores_only_unseen_queries(tiny, tmp_path):
    r = cxrbench.run(FitSpy(), tiny, out=None, n_boot=0, protocol="leave-one-out",
                     cache_dir=str(tmp_path))
    assert set(tiny.index.splits[r._table.queries]) == {"test"}


def test_input_contract_is_checked(tiny, tmp_path):
    class WrongRange(CountingRaw):
        def preprocess(self, image):
            return super().preprocess(image) * 255

    with pytest.raises(ValueError, match=r"declares inputs in \[0.0, 1.0\]"):
        cxrbench.run(WrongRange(), tiny, out=None, n_boot=0, cache_dir=str(tmp_path))

    class WrongDim(CountingRaw):
        def __init__(self):
            super().__init__()
            self.embedding_spec = EmbeddingSpec(dim=10)

    with pytest.raises(ValueError, match="declares dim 10"):
        cxrbench.run(WrongDim(), tiny, out=None, n_boot=0, cache_dir=str(tmp_path))


def test_oracle_neighbours_share_label_vectors(tiny, tmp_path):
    r = cxrbench.run(OracleEncoder(tiny), tiny, out=None, n_boot=0, protocol="leave-one-out",
                     cache_dir=str(tmp_path), k=[1])
    lab = tiny.index.labels
    t = r._table
    same = (lab[t.queries] == lab[t.neighbors[:, 0]]).all(1)
    # every query whose label vector occurs on another patient finds it at rank 1
    for q, ok in zip(t.queries, same):
        others = [i for i in range(len(tiny)) if tiny.index.patient_ids[i] != tiny.index.patient_ids[q]
                  and (lab[i] == lab[q]).all()]
        assert ok == bool(others)


def test_run_rejects_unknown_protocol_and_config_keys(tiny):
    with pytest.raises(ValueError, match="valid: holdout, leave-one-out, kfold"):
        cxrbench.run(CountingRaw(), tiny, out=None, protocol="loo")
    with pytest.raises(ValueError, match="unknown run config keys"):
        cxrbench.run(CountingRaw(), tiny, out=None, protcol="holdout")


def test_seeded_runs_are_deterministic(tmp_path):
    a = cxrbench.run("random", "tiny", out=None, n_boot=0, use_cache=False)
    b = cxrbench.run("random", "tiny", out=None, n_boot=0, use_cache=False)
    np.testing.assert_array_equal(a._table.neighbors, b._table.neighbors)
    assert a.run_fingerprint == b.run_fingerprint


def test_raw_encoder_contract():
    enc = cxrbench.create_encoder("raw")
    img = np.random.default_rng(0).random((100, 80)).astype(np.float32)
    x = enc.preprocess(img)
    assert tuple(x.shape) == (1, 32, 32)
    emb = enc.embed(x[None])
    assert emb.shape == (1, 1024) and emb.dtype == np.float32
    assert 0 <= emb.min() and emb.max() <= 1
    assert torch.is_tensor(x)
