"""pipeforge.Runtime against `pipeforge run`: the same losses and weights
from the same plan, batch, seed and optimizer; batches checked; state dicts
and checkpoints that continue training exactly."""

import re

import numpy as np
import pytest

import pipeforge
from conftest import MLP, MLP_BIND, mlp_batch, read_safetensors, run_command, write_safetensors


@pytest.fixture(scope="module")
def plan():
    return pipeforge.compile(MLP, devices="cpu:2", microbatches=4, schedule="1f1b", bind=MLP_BIND)


@pytest.fixture
def plan_file(plan, tmp_path):
    path = tmp_path / "plan.json"
    plan.save(path)
    return path


def trained(plan, steps, batch, seed=3, **options):
    runtime = pipeforge.Runtime(plan, seed=seed, **options)
    runtime.initialize()
    return runtime, [runtime.train_step(batch) for _ in range(steps)]


def assert_same_state(a, b):
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype == np.float32, name
        assert np.array_equal(a[name], b[name]), name


@pytest.mark.parametrize("optimizer,lr", [("adamw", None), ("sgd", 0.05)])
def test_trains_as_the_command_does(pipeforge_exe, plan, plan_file, tmp_path, optimizer, lr):
    batch = mlp_batch(seed=11)
    write_safetensors(tmp_path / "batch.safetensors", {"x": batch["x"], "labels": batch["labels"].astype(np.int32)})
    lr_flag = [] if lr is None else ["--lr", lr]
    done = run_command(pipeforge_exe, "run", plan_file, "--steps", 3, "--data", tmp_path / "batch.safetensors",
                       "--seed", 3, "--optimizer", optimizer, *lr_flag, "--save-weights", tmp_path / "w.safetensors")
    printed = re.findall(r"^step\s+\d+\s+loss (\S+)", done.stdout, re.MULTILINE)
    assert len(printed) == 3, done.stdout

    # The int64 labels are converted to the model's int32; the rest is read in place.
    for source in (plan, plan_file):
        runtime, losses = trained(source, 3, batch, optimizer=optimizer, lr=lr)
        assert [f"{loss:.6f}" for loss in losses] == printed
        assert runtime.step == 3
        # The same weights, bit for bit: the same computation.
        assert_same_state(runtime.state_dict(), read_safetensors(tmp_path / "w.safetensors"))
    assert losses[2] < losses[0]


def test_describes_its_batch_and_plan(plan):
    runtime = pipeforge.Runtime(plan)
    assert runtime.batch_inputs() == {"x": ((32, 64), np.dtype("float32")), "labels": ((32,), np.dtype("int32"))}
    assert runtime.stages == 2
    assert runtime.devices == 2
    assert runtime.plan.dump() == plan.dump()


def test_converted_arrays_give_the_same_loss(plan):
    batch = mlp_batch(seed=5)
    expected = pipeforge.Runtime(plan, seed=1)
    expected.initialize()
    runtime = pipeforge.Runtime(plan, seed=1)
    runtime.initialize()
    converted = {"x": np.asfortranarray(batch["x"]).astype(np.float64), "labels": list(batch["labels"])}
    contiguous = {"x": batch["x"], "labels": batch["labels"].astype(np.int32)}
    assert runtime.forward(converted) == expected.forward(contiguous)
    assert runtime.train_step(converted) == expected.train_step(contiguous)


def test_a_wrong_batch_raises_value_error(plan):
    runtime = pipeforge.Runtime(plan)
    runtime.initialize()
    batch = mlp_batch(seed=1)
    cases = [
        ({"x": batch["x"][:16], "labels": batch["labels"]},
         "input 'x': expected shape (32, 64) float32, got (16, 64) float32"),
        ({"x": batch["x"], "labels": batch["labels"].reshape(4, 8)},
         "input 'labels': expected shape (32,) int32, got (4, 8) int64"),
        ({"x": batch["x"], "labels": batch["labels"].astype(np.float32)},
         "input 'labels': expected shape (32,) int32, got (32,) float32: float arrays are not converted to int32"),
        ({"x": batch["x"].astype(np.int32), "labels": batch["labels"]},
         "input 'x': expected shape (32, 64) float32, got (32, 64) int32: integer arrays are not converted to "
         "float32"),
        ({"x": batch["x"], "labels": batch["labels"] + 2**32},
         f"input 'labels': {batch['labels'].max() + 2**32} does not fit in int32"),
        ({"x": batch["x"]}, "batch: missing input 'labels' (i32[32])"),
        ({"x": batch["x"], "labels": batch["labels"], "y": batch["labels"]},
         "batch: unknown input 'y' (expected 'x', 'labels')"),
    ]
    for bad, message in cases:
        for call in (runtime.train_step, runtime.forward):
            with pytest.raises(ValueError) as caught:
                call(bad)
            assert str(caught.value) == message
    with pytest.raises(TypeError, match=r"^batch: expected a dict of numpy arrays by input name, not list$"):
        runtime.train_step([batch["x"], batch["labels"]])
    assert runtime.step == 0


def test_runtime_errors_carry_the_commands_message(pipeforge_exe, plan, plan_file, tmp_path):
    batch = mlp_batch(seed=2)
    batch["labels"][5] = 12  # out of range for 10 classes: the last stage's cross_entropy fails
    write_safetensors(tmp_path / "bad.safetensors", {"x": batch["x"], "labels": batch["labels"].astype(np.int32)})
    done = run_command(pipeforge_exe, "run", plan_file, "--steps", 1, "--data", tmp_path / "bad.safetensors",
                       ok=False)
    assert done.returncode == 1
    runtime = pipeforge.Runtime(plan)
    with pytest.raises(pipeforge.Error) as caught:
        runtime.train_step(batch)
    assert str(caught.value) == ("the runtime has no weights yet: call initialize(), load_weights() or "
                                 "load_checkpoint() first")
    runtime.initialize()
    before = runtime.state_dict()
    with pytest.raises(pipeforge.Error) as caught:
        runtime.train_step(batch)
    assert done.stderr == f"error: {caught.value}\n"
    assert str(caught.value) == ('stage 1: running %loss = cross_entropy %logits, %labels layer="fc_out" : f32[]: '
                                 "cross_entropy: target 12 at position 5 is out of range [0, 10)")
    # A failed step changes nothing.
    assert runtime.step == 0
    assert_same_state(runtime.state_dict(), before)
    with pytest.raises(pipeforge.Error) as caught:
        pipeforge.Runtime(tmp_path / "missing.json")
    assert str(caught.value) == f"cannot open '{tmp_path / 'missing.json'}'"
    with pytest.raises(ValueError, match=r"^momentum applies to sgd, but this runtime trains with adamw; drop it or "
                                         r"pass optimizer='sgd'$"):
        pipeforge.Runtime(plan, momentum=0.5)


def test_pack_weights_changes_no_bit(plan):
    batch = mlp_batch(seed=5)
    unpacked, unpacked_losses = trained(plan, 3, batch, pack_weights="off")
    packed, packed_losses = trained(plan, 3, batch, pack_weights="on")
    assert packed_losses == unpacked_losses
    assert_same_state(packed.state_dict(), unpacked.state_dict())
    with pytest.raises(ValueError, match=r"^pack_weights must be one of auto, on, off, not 'yes'$"):
        pipeforge.Runtime(plan, pack_weights="yes")


def test_state_dict_round_trip(plan, tmp_path):
    batch = mlp_batch(seed=7)
    # Plain sgd keeps no optimizer state: a runtime given another's weights
    # trains on exactly as that one does.
    a, _ = trained(plan, 2, batch, seed=1, optimizer="sgd", lr=0.05, momentum=0.0)
    state = a.state_dict()
    b = pipeforge.Runtime(plan, seed=2, optimizer="sgd", lr=0.05, momentum=0.0)
    b.initialize()
    b.load_state_dict(state)
    assert b.step == 0
    assert_same_state(b.state_dict(), state)
    assert [b.train_step(batch) for _ in range(2)] == [a.train_step(batch) for _ in range(2)]
    assert_same_state(b.state_dict(), a.state_dict())

    # On CPU stages the arrays are the weights themselves, read-only: a step
    # changes them; copy=True gives a snapshot, which changes nothing.
    view, snapshot = a.state_dict(), a.state_dict(copy=True)
    assert not view["fc_in.w"].flags.writeable and not view["fc_in.w"].flags.owndata
    with pytest.raises(ValueError):
        view["fc_in.w"][0, 0] = 1.0
    a.train_step(batch)
    assert_same_state(view, a.state_dict(copy=True))
    assert not np.array_equal(view["fc_in.w"], snapshot["fc_in.w"])
    held = snapshot["fc_in.w"][0, 0]
    snapshot["fc_in.w"][0, 0] = held + 1
    assert a.state_dict()["fc_in.w"][0, 0] != held + 1

    # Loading is load_weights without the file: fresh AdamW state, step 0.
    c, _ = trained(plan, 2, batch, seed=1)
    c.save_weights(tmp_path / "c.safetensors")
    from_dict = pipeforge.Runtime(plan)
    from_dict.load_state_dict({name: value.astype(np.float64) for name, value in c.state_dict().items()})
    from_file = pipeforge.Runtime(plan)
    from_file.load_weights(tmp_path / "c.safetensors")
    assert [from_dict.train_step(batch) for _ in range(2)] == [from_file.train_step(batch) for _ in range(2)]

    # A wrong dict changes nothing.
    before = c.state_dict()
    bad = dict(before)
    del bad["fc_out.b"]
    bad["extra"] = before["fc_out.b"]
    with pytest.raises(ValueError) as caught:
        c.load_state_dict(bad)
    assert str(caught.value) == ("state_dict: missing parameter 'fc_out.b' (f32[10]); unknown parameter 'extra' "
                                 "(expected 'fc_in.w', 'fc_in.b', 'fc.0.w', 'fc.0.b', 'fc_out.w', 'fc_out.b')")
    bad = dict(before, **{"fc_in.w": before["fc_in.w"][:, :63]})
    with pytest.raises(ValueError) as caught:
        c.load_state_dict(bad)
    assert str(caught.value) == "parameter 'fc_in.w': expected shape (64, 64) float32, got (64, 63) float32"
    assert c.step == 2
    assert_same_state(c.state_dict(), before)


def test_checkpoint_round_trip(plan, tmp_path):
    batch, later = mlp_batch(seed=8), mlp_batch(seed=9)
    a, _ = trained(plan, 2, batch)
    a.save_checkpoint(tmp_path / "ck")
    expected = [a.train_step(later), a.train_step(batch)]
    b = pipeforge.Runtime(plan, seed=99)
    b.load_checkpoint(tmp_path / "ck")
    assert b.step == 2
    assert [b.train_step(later), b.train_step(batch)] == expected
    assert_same_state(b.state_dict(), a.state_dict())
    assert b.last_step()["loss"] == expected[1]
    with pytest.raises(pipeforge.Error) as caught:
        pipeforge.Runtime(plan, optimizer="sgd").load_checkpoint(tmp_path / "ck")
    assert str(caught.value) == f"{tmp_path / 'ck'}: the checkpoint holds adamw state but this run trains with sgd"


def test_a_sharded_optimizer_trains_and_checkpoints_as_a_replicated_one(tmp_path):
    # Two replicas of two stages; sharing the optimizer state out changes
    # neither the losses nor the weights, and either resumes from the other.
    batch, later = mlp_batch(seed=8), mlp_batch(seed=9)
    whole = pipeforge.compile(MLP, devices="cpu:2", microbatches=2, data_parallel=2, bind=MLP_BIND)
    shared = pipeforge.compile(MLP, devices="cpu:2", microbatches=2, data_parallel=2, bind=MLP_BIND,
                               shard_optimizer=True)
    a, losses_a = trained(whole, 2, batch)
    b, losses_b = trained(shared, 2, batch)
    assert losses_a == losses_b
    assert_same_state(a.state_dict(), b.state_dict())
    b.save_checkpoint(tmp_path / "shared")
    c = pipeforge.Runtime(whole, seed=99)
    c.load_checkpoint(tmp_path / "shared")
    assert [c.train_step(later)] == [a.train_step(later)]
    assert_same_state(c.state_dict(), a.state_dict())


def test_a_tensor_parallel_plan_trains_as_the_unsplit_one(tmp_path):
    # Each device a group of two ranks splitting every layer (the MLP's
    # products by columns then rows, the loss over each rank's classes):
    # the unsplit plan's losses, with the rows between the products cut over
    # the ranks too (sequence parallelism), and a checkpoint either one resumes.
    batch, later = mlp_batch(seed=8), mlp_batch(seed=9)
    whole = pipeforge.compile(MLP, devices="cpu:2", microbatches=2, bind=MLP_BIND)
    split = pipeforge.compile(MLP, devices="cpu:4", microbatches=2, bind=MLP_BIND, tensor_parallel=2)
    rows = pipeforge.compile(MLP, devices="cpu:4", microbatches=2, bind=MLP_BIND, tensor_parallel=2,
                             sequence_parallel=True)
    assert split.tensor_parallel == 2 and whole.tensor_parallel == 1
    assert rows.sequence_parallel and not split.sequence_parallel
    a, losses_a = trained(whole, 2, batch)
    b, losses_b = trained(split, 2, batch)
    assert losses_b == pytest.approx(losses_a, rel=1e-5)
    assert trained(rows, 2, batch)[1] == pytest.approx(losses_a, rel=1e-5)
    b.save_checkpoint(tmp_path / "split")
    c = pipeforge.Runtime(whole, seed=99)
    c.load_checkpoint(tmp_path / "split")
    assert c.train_step(later) == pytest.approx(a.train_step(later), rel=1e-5)


def test_a_bf16_plan_rounds_only_its_products(tmp_path):
    # dtype="bf16" on CPU devices: the products take operands rounded to
    # bf16, so the losses move off the f32 plan's by bf16's rounding (8
    # significant bits), not by float32's; the weights stay float32.
    batch = mlp_batch(seed=10)
    f32 = pipeforge.compile(MLP, devices="cpu:2", microbatches=2, bind=MLP_BIND)
    bf16 = pipeforge.compile(MLP, devices="cpu:2", microbatches=2, bind=MLP_BIND, dtype="bf16")
    assert (f32.dtype, bf16.dtype) == ("f32", "bf16")
    a, losses_a = trained(f32, 3, batch)
    b, losses_b = trained(bf16, 3, batch)
    assert losses_b != losses_a
    assert losses_b == pytest.approx(losses_a, rel=2e-2)
    assert all(v.dtype == np.float32 for v in b.state_dict().values())
    with pytest.raises(ValueError, match="dtype must be one of f32, bf16, not .f16."):
        pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, dtype="f16")
