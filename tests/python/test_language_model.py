"""pipeforge.LanguageModel against `pipeforge sample`: a model trained on a
repeated sentence goes on with it; the same draws as the command for the same
weights, prompt and seed; and errors that say what is wrong."""

import re
from pathlib import Path

import numpy as np
import pytest

import pipeforge
from conftest import MLP, SOURCE_DIR, read_safetensors, run_command

GPT = str(SOURCE_DIR / "examples" / "gpt.pf")
BIND = "L=1,C=32,H=2,T=16,S=16,V=256"


@pytest.fixture(scope="module")
def weights(pipeforge_exe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("language_model")
    text = folder / "cat.txt"
    text.write_text("the cat sat on the mat. " * 60)
    run_command(pipeforge_exe, "run", GPT, "--bind", "B=8," + BIND, "--text", text, "--steps", 150, "--lr", 1e-2,
                "--save-weights", folder / "w.safetensors")
    return folder / "w.safetensors"


@pytest.fixture(scope="module")
def lm(weights):
    return pipeforge.LanguageModel(GPT, weights, bind=BIND)


def test_goes_on_with_what_it_learnt(lm):
    assert (lm.name, lm.context, lm.vocabulary) == ("gpt", 16, 256)
    logits = lm.logits("on the m")
    assert logits.dtype == np.float32 and logits.shape == (256,)
    assert int(np.argmax(logits)) == ord("a")
    assert lm.logits(b"on the m").tolist() == logits.tolist()
    assert lm.logits([ord(c) for c in "on the m"]).tolist() == logits.tolist()
    assert bytes(lm.generate("the c", 46, temperature=0)) == b"at sat on the mat. the cat sat on the mat. the"


def test_reads_each_drawn_token_alone_over_a_cache(lm, pipeforge_exe, tmp_path):
    assert lm.uncached is None
    for prompt, seed in (("the mat", 3), ("t", 4), ("at on the mat. t", 5)):  # 7, 1 and 16 = T tokens
        cached = lm.generate(prompt, 9, temperature=3, seed=seed)
        assert lm.generate(prompt, 9, temperature=3, seed=seed, cache=False) == cached
    text = tmp_path / "cat.txt"
    text.write_text("the cat sat on the mat. " * 10)
    shift = SOURCE_DIR / "tests" / "lit" / "commands" / "Inputs" / "token_shift_lm.pf"
    run_command(pipeforge_exe, "run", shift, "--text", text, "--steps", 1, "--save-weights", tmp_path / "s.safetensors")
    uncached = pipeforge.LanguageModel(str(shift), tmp_path / "s.safetensors").uncached
    assert re.fullmatch(r"its logits read token by token differ from the whole sequence's by \S+: an op besides "
                        r"attention mixes positions", uncached)


def test_draws_several_samples_side_by_side(lm):
    # 7 + 20 tokens: past T = 16 the samples are read whole, each on its own.
    together = lm.generate("the mat", 20, temperature=3, seed=7, samples=3)
    assert together == [lm.generate("the mat", 20, temperature=3, seed=s) for s in (7, 8, 9)]
    assert together == lm.generate("the mat", 20, temperature=3, seed=7, samples=3, cache=False)
    assert len(set(map(tuple, together))) == 3
    assert lm.generate("the mat", 4, temperature=0, samples=1) == [list(b". th")]
    with pytest.raises(ValueError, match=r"^samples must be 1 or more, not 0$"):
        lm.generate("the mat", 4, samples=0)


def test_decodes_several_prompts_side_by_side(lm):
    # 7, 1 and 12 tokens, then 10 more: each sequence from its own position,
    # the longest past T = 16 read whole from there; each prompt's draws are
    # its own alone.
    prompts = ["the mat", b"t", [ord(c) for c in "sat on the m"]]
    together = lm.generate(prompts, 10, temperature=3, seed=2)
    assert together == [lm.generate(p, 10, temperature=3, seed=2) for p in prompts]
    assert together == lm.generate(prompts, 10, temperature=3, seed=2, cache=False)
    sampled = lm.generate(("the c", "on"), 6, temperature=3, seed=5, samples=2)
    assert sampled == [lm.generate(p, 6, temperature=3, seed=5, samples=2) for p in ("the c", "on")]
    greedy = lm.generate(["the c", "sat"], 12, temperature=0, stop=".")
    assert [bytes(g) for g in greedy] == [b"at sat on th", b" on the mat."]
    with pytest.raises(pipeforge.Error, match=r"^the prompt is empty: give the model at least one token to go on "
                                              r"from$"):
        lm.generate(["the c", ""], 4)


def test_a_bounded_batch_takes_the_next_sequence_where_one_ends(lm):
    # Samples that stop at their first space or full stop make room for the
    # next: the same draws at any bound, in a batch of 1, 2 or all six.
    prompts = ["the c", "m", b"sat on"]
    every = lm.generate(prompts, 20, temperature=3, seed=3, samples=2, stop=[" ", "."])
    for bound in (1, 2, 5):
        assert lm.generate(prompts, 20, temperature=3, seed=3, samples=2, stop=[" ", "."], max_batch=bound) == every
    assert lm.generate("the c", 20, temperature=3, seed=3, samples=2, stop=" ", max_batch=1) == \
        lm.generate("the c", 20, temperature=3, seed=3, samples=2, stop=" ")
    with pytest.raises(ValueError, match=r"^max_batch must be 1 or more, not 0$"):
        lm.generate("the c", 4, max_batch=0)


def test_stops_after_a_stop_sequence(lm):
    assert bytes(lm.generate("the c", 46, temperature=0, stop="mat")) == b"at sat on the mat"
    assert bytes(lm.generate("the c", 46, temperature=0, stop=[b"xyz", "on"])) == b"at sat on"
    assert bytes(lm.generate("the c", 46, temperature=0, stop=[ord(".")])) == b"at sat on the mat."
    assert bytes(lm.generate("th", 46, temperature=0, stop=[[116, 104, 101]])) == b"e"  # begun in the prompt
    hot = lm.generate("the c", 30, temperature=3, seed=4, samples=3, stop=[" ", "."])
    assert hot == [lm.generate("the c", 30, temperature=3, seed=s, stop=[" ", "."]) for s in (4, 5, 6)]
    assert all(bytes(h).endswith((b" ", b".")) and len(h) < 30 for h in hot)
    with pytest.raises(pipeforge.Error, match=r"^a stop sequence is empty: it would end a sample before its first "
                                              r"token$"):
        lm.generate("the c", 4, stop="")
    with pytest.raises(TypeError, match=r"^stop: expected str, bytes or a list of them, not float$"):
        lm.generate("the c", 4, stop=1.5)


def test_takes_a_runtimes_weights_in_memory(lm, weights):
    plan = pipeforge.compile(GPT, devices="cpu:1", microbatches=2, bind="B=8," + BIND)
    runtime = pipeforge.Runtime(plan)
    runtime.load_state_dict(read_safetensors(weights))
    in_memory = pipeforge.LanguageModel(GPT, runtime.state_dict(), bind=BIND)
    assert in_memory.logits("the cat").tolist() == lm.logits("the cat").tolist()
    state = read_safetensors(weights)
    state["wte"] = state["wte"][:, :16]
    shapes = r"^weights: wte is f32\[256,16\] here but the model expects f32\[256,32\]$"
    with pytest.raises(pipeforge.Error, match=shapes):
        pipeforge.LanguageModel(GPT, state, bind=BIND)
    state["wte"] = "not an array"
    with pytest.raises(TypeError, match=r"^weights 'wte': expected an array of numbers, not str$"):
        pipeforge.LanguageModel(GPT, state, bind=BIND)


def test_draws_as_the_command_does(pipeforge_exe, lm, weights):
    done = run_command(pipeforge_exe, "sample", GPT, "--bind", BIND, "--weights", weights, "--ids", "--prompt",
                       "116,104,101", "--tokens", 30, "--temperature", 1.5, "--top-k", 5, "--top-p", 0.95, "--seed",
                       9)
    printed = [int(t) for t in done.stdout.split()]
    drawn = lm.generate([116, 104, 101], 30, temperature=1.5, top_k=5, top_p=0.95, seed=9)
    assert printed == [116, 104, 101] + drawn
    assert lm.generate([116, 104, 101], 30, temperature=1.5, top_k=5, top_p=0.95, seed=10) != drawn


def test_a_short_sequence_gets_the_logits_of_the_whole_context(pipeforge_exe, tmp_path):
    # A sequence shorter than T runs a program compiled for fewer positions;
    # the same model with T written as a number runs every sequence at T.
    bind = "L=1,C=32,H=2,S=64,V=256"
    text = tmp_path / "cat.txt"
    text.write_text("the cat sat on the mat. " * 60)
    run_command(pipeforge_exe, "run", GPT, "--bind", "B=4,T=64," + bind, "--text", text, "--steps", 20, "--lr", 1e-2,
                "--save-weights", tmp_path / "w.safetensors")
    shortened = pipeforge.LanguageModel(GPT, tmp_path / "w.safetensors", bind="T=64," + bind)
    at_64 = re.sub(r"\bT\b", "64", re.sub(r"^dim T = .*$", "", Path(GPT).read_text(), flags=re.M))
    whole = pipeforge.LanguageModel(at_64, tmp_path / "w.safetensors", bind=bind)
    assert shortened.context == whole.context == 64
    rng = np.random.default_rng(0)
    for n in (1, 5, 16, 17, 40, 64):
        tokens = rng.integers(32, 127, size=n).tolist()
        np.testing.assert_allclose(shortened.logits(tokens), whole.logits(tokens), rtol=1e-5, atol=1e-5,
                                   err_msg=f"{n} tokens")


def test_says_what_it_cannot_read(lm, weights):
    with pytest.raises(pipeforge.Error, match=r"^@gpt reads 1 to 16 tokens at once, not 17$"):
        lm.logits(list(range(17)))
    with pytest.raises(pipeforge.Error, match=r"^@gpt reads 1 to 16 tokens at once, not 0$"):
        lm.logits([])
    with pytest.raises(pipeforge.Error, match=r"^token 300 is not in @gpt's vocabulary of 256 ids$"):
        lm.logits([1, 300])
    with pytest.raises(pipeforge.Error, match=r"^the prompt is empty: give the model at least one token"):
        lm.generate("", 5)
    with pytest.raises(ValueError, match=r"^tokens must be 0 or more, not -1$"):
        lm.generate("a", -1)
    with pytest.raises(TypeError, match=r"^tokens: expected a sequence of token ids, or str or bytes, not float$"):
        lm.logits(3.5)
    with pytest.raises(pipeforge.Error, match=r"^@mlp does not read tokens: its first input %x is f32\[B,I\]"):
        pipeforge.LanguageModel(MLP, weights)
