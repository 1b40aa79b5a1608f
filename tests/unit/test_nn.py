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


def _validation(name, min_tokens=0, max_tokens=None, count=1):
    """The first `count` passages of the validation corpus (inputs/validation/, disjoint
    from the calibration corpus) with a token count in the range."""
    from aegis_hpc.nn.calibrate import read_sentences, validation_corpus_path

    hi = max_tokens or models.config(name).max_positions
    out = []
    for text in read_sentences(validation_corpus_path()):
        n = len(models.tokenize([text], 1 << 20)[0])
        if min_tokens <= n <= hi:
            out.append(text)
            if len(out) == count:
                return out
    raise AssertionError("validation corpus too small")


def test_ops_mirror_is_the_fast_mirror():
    """nn.mirror.run (the encrypted circuit's own slot code, refresh points and all) and
    nn.mirror.encode (the same approximations on matrices) agree to rounding."""
    for name, layers, slots in (("tiny", 2, 1 << 10), ("minilm", 1, 1 << 13)):
        x = models.embed_text(name, _validation(name, 20, 40))[0]
        ops_out, ops_stats = mirror.run(name, [x], layers, slots, max_level=10)
        fast, fast_stats = mirror.encode(name, x, layers)
        assert np.abs(ops_out[0] - fast).max() < 1e-9
        # both saw the same approximation inputs (the ops mirror also sees padding slots)
        for site, use in fast_stats.domain_use.items():
            if site.endswith("#in"):
                assert ops_stats.domain_use[site] >= use - 1e-9


def test_feature_chunks_mirror_is_the_fast_mirror():
    """The feature-chunk layout (hidden features over chunk ciphertexts of S slots per
    row, heads inside a chunk) computes the same encoder: MiniLM in 3 chunks of 128
    and bert-base in 3 of 256 agree with the matrix mirror to rounding, and a chunked
    MiniLM agrees with its one-chunk (S = 512) run."""
    for name, S, slots in (("minilm", 128, 1 << 13), ("bert-base", 256, 1 << 13)):
        x = models.embed_text(name, _validation(name, 20, 40))[0]
        out, stats = mirror.run(name, [x], 1, slots, max_level=10, row_width=S)
        fast, _ = mirror.encode(name, x, 1)
        assert np.abs(out[0] - fast).max() < 1e-9
        assert mirror.prepared(name, slots, 1, S).layout.hidden_chunks == 3


def test_feature_chunk_rule_fills_the_slots():
    """io.token_block_slots takes feature chunks where they need fewer ciphertexts:
    bert-base at 128 tokens in 3 full N=2^16 ciphertexts (slot use 100 %, one chunk
    needs 4: 75 %), MiniLM from 256 tokens; short inputs and MiniLM at 128 keep one
    chunk (fewer ciphertexts)."""
    from aegis_hpc import io
    from aegis_hpc.nn.packing import Layout

    slots = 1 << 15
    bert, minilm = models.config("bert-base"), models.config("minilm")
    L = Layout.for_tokens(bert, slots, 128)
    assert (L.S, L.hidden_chunks, L.tokens_per_ct(128), L.ciphertexts(128)) == (256, 3, 128, 3)
    assert io.slot_use(128 * 768, L.ciphertexts(128), slots) == 1.0
    assert Layout(bert, slots).ciphertexts(128) == 4
    assert Layout.for_tokens(bert, slots, 2048).ciphertexts(2048) == 48
    assert Layout.for_tokens(bert, slots, 9).S == 1024
    assert Layout.for_tokens(minilm, slots, 128).S == 512
    L = Layout.for_tokens(minilm, slots, 256)
    assert (L.S, L.ciphertexts(256)) == (128, 3)
    # a head never straddles two chunks: rows are a multiple of the head size
    assert io.token_block_slots(256, 384, slots, unit=256) == 512


def test_key_shifts_are_made_once_per_layer(monkeypatch):
    """Two query blocks share each key block's rotated K and V (block.SHIFT_CACHE_BLOCKS):
    the same output bit for bit, and 2 key blocks x (K, V) x (B - 1) rotations fewer per
    layer than rotating them again for the second query block."""
    from aegis_hpc.nn import block

    x = models.embed_text("tiny", _validation("tiny", 40, 60))[0]
    slots = 1 << 10
    B = mirror.prepared("tiny", slots, 1).layout.tokens_per_ct(len(x))
    assert len(x) > B                       # two token blocks
    cached, cached_stats = mirror.run("tiny", [x], 1, slots, max_level=10)
    monkeypatch.setattr(block, "SHIFT_CACHE_BLOCKS", 0)
    again, again_stats = mirror.run("tiny", [x], 1, slots, max_level=10)
    assert np.array_equal(cached[0], again[0])
    assert again_stats.ops["rotate"] - cached_stats.ops["rotate"] == 2 * 2 * (B - 1)


def test_mirror_on_validation_passages_minilm():
    """MiniLM, all 6 layers, on validation passages of 9 to 500 tokens: cosine of the
    mean-pooled output with the float model >= 0.999 and every site inside its domain.
    (The full corpus: python -m aegis_hpc.nn.accuracy --mirror-only, bench/results/.)"""
    texts = _validation("minilm", 0, 16) + _validation("minilm", 129, 256) + _validation("minilm", 384, 512)
    for text in texts:
        x = models.embed_text("minilm", [text])[0]
        out, stats = mirror.encode("minilm", x)
        ref = reference.encode("minilm", x)
        c = models.cosine(models.mean_pool(out), models.mean_pool(ref))
        site, use = stats.worst()
        print(f"{len(x)} tokens: cosine {c:.7f}, max |diff| {np.abs(out - ref).max():.2e}, {site} used {use:.5f}")
        assert c >= 0.999 and np.abs(out - ref).max() < 1e-3
        assert use < 1.0, (site, use)


def test_mirror_reports_inputs_outside_the_domain():
    """An input unlike text (embedding rows scaled far beyond a LayerNorm's output) is
    reported: some site's domain use exceeds 1."""
    x = models.embed_text("minilm", ["The cat sat on the mat."])[0]
    with np.errstate(all="ignore"):     # polynomials far outside their interval overflow
        _, stats = mirror.encode("minilm", x * 6.0, 1)
    site, use = stats.worst()
    assert use > 1.0, (site, use)


def test_required_rotations():
    """tiny (S = 32 slots per token, head size 16) at N = 2^11 (1024 slots): row sums
    and their broadcast (+-1..16), head sums (+-1..8), key shifts (31 * 2^j babies,
    16 * 32 = 512 giants), and the block-diagonal transforms' power-of-two steps."""
    from aegis_hpc.ckks import LinearTransform, preset

    r = set(models.required_rotations("tiny", preset("test")))
    pm = {1 << k for k in range(5)} | {1024 - (1 << k) for k in range(5)}
    shifts = {31 << j for j in range(4)} | {512}
    linear = set(LinearTransform.block_diagonal(np.ones((32, 32)), 32, 1024).rotations())
    assert r == pm | shifts | linear and 0 not in r


def _one_layer(ctx, name, emb, row_width=None):
    """Layer 0 of `name` on one sentence, encrypted (client refresh), in the mirror
    and in the float model: (decrypted, mirror, float, key-holder refreshes,
    encrypted run's refreshes, mirror's refreshes). row_width: the layout's S
    (default the client's rule)."""
    from aegis_hpc.nn import encrypted
    from aegis_hpc.nn.ops import KeyHolder

    layout = mirror.prepared(name, ctx.params.slots, 1, row_width).layout if row_width else \
        encrypted.layout_for(ctx, name, [len(emb[0])], 1)
    sk, keys = ctx.keygen(rotations=layout.rotations())
    cts = encrypted.encrypt_blocks(ctx, keys, emb, layout)
    kh = KeyHolder(ctx, sk, seed=bytes(32))
    blocks, ops = encrypted.run(ctx, keys, cts, name, layers=1, key_holder=kh, lengths=[len(emb[0])],
                                row_width=layout.S)
    hidden = models.config(name).hidden
    dec = layout.unpack([[ctx.decrypt(c, sk) for c in b.x] for b in blocks], len(emb[0]), hidden)
    mir, mstats = mirror.run(name, emb, 1, ctx.params.slots, ctx.params.max_level, row_width=layout.S)
    ref = reference.encode(name, emb[0], 1)
    return dec, mir[0], ref, kh.count, ops.stats.refreshes, mstats.refreshes


def test_one_encrypted_layer_matches_mirror(ctx, sentences):
    """One sentence through one full tiny layer at the "test" preset."""
    emb = models.embed_text("tiny", sentences[6:7])   # 7 tokens
    dec, mir, ref, held, refreshes, mirror_refreshes = _one_layer(ctx, "tiny", emb)
    assert held == refreshes == mirror_refreshes > 0
    assert np.abs(dec - mir).max() < 1e-2          # encryption noise
    assert np.abs(mir - ref).max() < 1e-4          # approximation error (GELU_TOL 1e-4)
    assert models.cosine(models.mean_pool(dec), models.mean_pool(ref)) > 0.9999


def test_feature_chunks_encrypted_layer_matches_mirror(ctx, sentences):
    """One tiny layer packed in 2 feature chunks of 16 slots (one head each), encrypted
    at the "test" preset: the same refreshes as the mirror, the decryption within
    encryption noise of it, and the one-chunk run's answer."""
    emb = models.embed_text("tiny", sentences[6:7])   # 7 tokens
    dec, mir, ref, held, refreshes, mirror_refreshes = _one_layer(ctx, "tiny", emb, row_width=16)
    assert mirror.prepared("tiny", ctx.params.slots, 1, 16).layout.hidden_chunks == 2
    assert held == refreshes == mirror_refreshes > 0
    assert np.abs(dec - mir).max() < 1e-2
    assert np.abs(mir - ref).max() < 1e-4
    assert models.cosine(models.mean_pool(dec), models.mean_pool(ref)) > 0.9999


def test_key_holder_refuses_a_value_outside_its_bound(ctx):
    from aegis_hpc.nn.domains import DomainError
    from aegis_hpc.nn.ops import CipherOps, KeyHolder

    sk, keys = ctx.keygen()
    ops = CipherOps(ctx, ctx.evaluator(keys), "client", KeyHolder(ctx, sk, seed=bytes(32)))
    ct = ctx.encrypt(np.full(8, 3.0), sk, level=0, slots=8)
    assert np.allclose(ctx.decrypt(ops.need(ct, 2, "L0/ln1/in/t4", 4.0), sk), 3.0, atol=1e-3)
    with pytest.raises(DomainError, match="value 3 at L0/ln1/in is outside its bound 2"):
        ops.need(ct, 2, "L0/ln1/in/t4", 2.0)


@pytest.mark.parametrize("name,tokens", [("bert-base", 64), ("bert-base", 2), ("minilm", 129)])
def test_bootstrap_schedule_has_a_level_for_every_refresh(name, tokens):
    """Server-only refreshes divide by a power of two first, which takes a level: the
    schedule of every layer must reach each refresh with it (bert-base's LayerNorm at
    layer 6 reached its Newton input at level 0 at every length; a DepthError then)."""
    from aegis_hpc.ckks.params import preset
    from aegis_hpc.nn.ops import bootstrap_level

    p = preset("n16-boot")
    cfg = models.config(name)
    ids = np.concatenate([[101], 1000 + (np.arange(tokens - 2) * 37) % 20000, [102]])
    x = models.embed_ids(name, ids)
    out, stats = mirror.run(name, [x], None, p.slots, p.max_level, "bootstrap", bootstrap_level(p))
    assert out[0].shape == (tokens, cfg.hidden) and np.all(np.isfinite(out[0]))
    assert stats.refreshes > 0


def test_every_plaintext_key_names_one_vector(monkeypatch):
    """CipherOps caches encoded plaintexts by the caller's key, level and slot count: over
    a whole encoder run a key must never stand for two vectors. The softmax mask's key
    once left out the layer's scale, and bert-base layers 8-11 then used layer 1's mask
    (decryption 1.2 away from the mirror on one H200); the mirror records the keys."""
    from aegis_hpc.ckks.params import preset
    from aegis_hpc.nn import ops as nn_ops

    seen, clashes = {}, []

    def recording(fn):
        def wrapper(self, a, vec, key=None):
            if key is not None:
                v = np.resize(np.asarray(vec, dtype=np.float64), a.slots)
                before = seen.setdefault((key, a.level, a.slots), v)
                if not np.array_equal(before, v):
                    clashes.append(key)
            return fn(self, a, vec, key)
        return wrapper

    monkeypatch.setattr(nn_ops.PlainOps, "mul_plain", recording(nn_ops.PlainOps.mul_plain))
    monkeypatch.setattr(nn_ops.PlainOps, "add_plain", recording(nn_ops.PlainOps.add_plain))
    p = preset("n16-boot")
    ids = np.concatenate([[101], 1000 + (np.arange(126) * 37) % 20000, [102]])
    mirror.run("bert-base", [models.embed_ids("bert-base", ids)], None, p.slots, p.max_level, "bootstrap",
               nn_ops.bootstrap_level(p))
    assert len(seen) > 100 and not clashes, sorted(set(map(str, clashes)))[:5]


def test_two_stage_head_sum_choice_and_masks():
    """The head sum's window w (Layout.head_window) minimises count log2(dh/w) +
    min(w, count) log2(w) rotations and keeps the one-stage sum (w = 1, one mask) on
    ties; the window masks of the offsets of one residue class are disjoint and cover
    their compact-score slots' windows exactly."""
    from aegis_hpc.nn.packing import Layout

    minilm, bert = (Layout(models.config(n), 1 << 15) for n in ("minilm", "bert-base"))
    assert minilm.head_window(32) == 8 and bert.head_window(32) == 8 and bert.head_window(64) == 16
    assert minilm.head_window(1) == 1 and minilm.head_window(2) == 1    # no saving: one stage
    L, B, w = minilm, 64, 8
    for rho in (0, 5):
        windows = [L.score_window_mask(B, 60, 50, 1, u, w) for u in range(rho, L.dh, w)]
        total = np.sum(windows, axis=0)
        assert total.max() == 1.0                                        # disjoint
        starts = L.score_residue_mask(B, 60, 50, 1, rho, w)
        # every window is its start slot and the w - 1 slots after it
        assert np.array_equal(total, sum(np.roll(starts, a) for a in range(w)))


def test_input_level_depends_on_the_length_alone_and_is_no_dearer_than_the_top():
    """nn.refresh.input_level picks where the client encrypts from the length alone (the
    refresh schedule is decided by levels, never by values): a real input of that
    length has the same schedule as the zeros it was picked on, and the pick's
    estimated cost is at most the top level's."""
    from aegis_hpc.ckks.params import preset
    from aegis_hpc.nn.ops import bootstrap_level
    from aegis_hpc.nn.refresh import BOOTSTRAP_TOP_KEYSWITCHES, input_level, keyswitch_cost

    p, tokens = preset("test-deep-boot"), 40
    level = input_level("tiny", tokens, p, layers=2)
    assert bootstrap_level(p) <= level <= p.max_level
    cost = keyswitch_cost(p)

    def schedule(x, start):
        stats = mirror.run("tiny", [x], 2, p.slots, start, "bootstrap", bootstrap_level(p), keyswitch_cost=cost)[1]
        return stats.refreshes, stats.ops["work"] + BOOTSTRAP_TOP_KEYSWITCHES * cost(p.max_level) * stats.refreshes

    ids = np.concatenate([[101], 1000 + (np.arange(tokens - 2) * 37) % 20000, [102]])
    real = models.embed_ids("tiny", ids)
    assert schedule(real, level) == schedule(np.zeros_like(real), level)
    assert schedule(real, level)[1] <= schedule(real, p.max_level)[1]
