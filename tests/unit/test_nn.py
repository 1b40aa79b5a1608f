"""nn: model import, float reference, plaintext mirror, one encrypted layer."""

import numpy as np
import pytest

from aegis_hpc.nn import approx, mirror, models, reference
from aegis_hpc.nn.calibrate import default_sentences_path, read_sentences


@pytest.fixture(scope="module")
def sentences():
    s = read_sentences(default_sentences_path())
    assert len(s) == 20
    return s


def test_minilm_reference_is_the_real_model():
    # sentence-transformers reports 0.7553 for this pair with all-MiniLM-L6-v2
    e = reference.sentence_embeddings("minilm", ["A man is eating food.", "A man is eating a piece of bread."])
    assert abs(models.cosine(e[0], e[1]) - 0.7553) < 2e-3


def test_too_long_sequence_is_refused():
    with pytest.raises(models.ModelError, match="longer than"):
        models.embed_text("tiny", ["word " * 80])


def test_mirror_matches_float_model_tiny(sentences):
    emb = models.embed_text("tiny", sentences)
    out, stats = mirror.run("tiny", emb, max_level=10)
    for x, o in zip(emb, out):
        ref = reference.encode("tiny", x)
        assert np.abs(ref - o).max() < 1e-5
    assert stats.refreshes > 0


def test_mirror_matches_float_model_minilm(sentences):
    emb = models.embed_text("minilm", sentences[:2])
    out, _ = mirror.run("minilm", emb, max_level=10)
    for x, o in zip(emb, out):
        ref = reference.encode("minilm", x)
        assert np.abs(ref - o).max() < 1e-4
        assert models.cosine(models.mean_pool(ref), models.mean_pool(o)) > 0.99999


def test_demo_preset_approximations_fit_six_levels():
    for name in ("tiny", "minilm"):
        for a in approx.build(models.load_calibration(name), models.config(name).layers, max_level=6):
            assert max(a.gelu.depth(), a.exp.depth(), a.invsqrt1.depth()) <= 6


def test_required_rotations():
    from aegis_hpc.ckks import preset

    r = models.required_rotations("tiny", preset("test"))
    assert {1, 2, 4, 8, 16, -1, -8, 32} <= set(r)
    assert 0 not in r


def test_one_encrypted_layer_matches_mirror(ctx, sentences):
    """One sentence through one full tiny layer at the "test" preset."""
    from aegis_hpc.nn import encrypted
    from aegis_hpc.nn.ops import KeyHolder

    emb = models.embed_text("tiny", sentences[6:7])   # 7 tokens
    sk, keys = ctx.keygen(rotations=models.required_rotations("tiny", ctx.params))
    S = mirror.prepared("tiny", ctx.params.slots, 1).layout.S
    cts = encrypted.encrypt_rows(ctx, keys, emb, S)
    kh = KeyHolder(ctx, sk, seed=bytes(32))
    toks, ops = encrypted.run(ctx, keys, cts, "tiny", layers=1, key_holder=kh)
    dec = np.stack([ctx.decrypt(t.x, sk)[:32] for t in toks])
    mir, _ = mirror.run("tiny", emb, 1, ctx.params.slots, ctx.params.max_level)
    ref = reference.encode("tiny", emb[0], 1)
    assert kh.count == ops.stats.refreshes > 0
    assert np.abs(dec - mir[0]).max() < 1e-2          # encryption noise
    assert np.abs(mir[0] - ref).max() < 1e-6          # approximation error
    assert models.cosine(models.mean_pool(dec), models.mean_pool(ref)) > 0.9999
