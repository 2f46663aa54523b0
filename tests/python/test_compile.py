"""pipeforge.compile and pipeforge.Plan against `pipeforge compile` and `pipeforge dump`."""

import shutil
from pathlib import Path

import pytest

import pipeforge
from conftest import MLP, MLP_BIND, run_command


def compile_mlp(**options):
    return pipeforge.compile(MLP, **{"devices": "cpu:2", "microbatches": 4, "schedule": "1f1b", "bind": MLP_BIND,
                                     **options})


@pytest.fixture
def cli_plan(pipeforge_exe, tmp_path):
    """The plan `pipeforge compile` writes for the small mlp."""
    path = tmp_path / "cli.json"
    run_command(pipeforge_exe, "compile", MLP, "--bind", MLP_BIND, "--devices", "cpu:2", "--microbatches", 4,
                "--schedule", "1f1b", "-o", path)
    return path


def test_compiles_the_plan_the_command_compiles(cli_plan, tmp_path):
    compile_mlp().save(tmp_path / "py.json")
    assert (tmp_path / "py.json").read_bytes() == cli_plan.read_bytes()
    # bind as a dict, and the path as a pathlib.Path, are the same.
    bind = dict(item.split("=") for item in MLP_BIND.split(","))
    pipeforge.compile(Path(MLP), devices="cpu:2", microbatches=4, bind={k: int(v) for k, v in bind.items()}).save(
        tmp_path / "dict.json")
    assert (tmp_path / "dict.json").read_bytes() == cli_plan.read_bytes()


def test_batch_binds_the_first_inputs_leading_dimension(pipeforge_exe, tmp_path):
    run_command(pipeforge_exe, "compile", MLP, "--bind", MLP_BIND, "--batch", 64, "--devices", "cpu:2",
                "--microbatches", 4, "-o", tmp_path / "cli.json")
    compile_mlp(batch=64).save(tmp_path / "py.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    assert pipeforge.Plan.load(tmp_path / "py.json").binding["B"] == 16  # per micro-batch


def test_model_text_compiles_as_its_file():
    text = Path(MLP).read_text()
    from_text, from_file = pipeforge.compile(text, devices="cpu:2", microbatches=4, bind=MLP_BIND), compile_mlp()
    assert from_text.dump() == from_file.dump()
    assert from_text.binding == from_file.binding


def test_plan_properties(cli_plan):
    plan = pipeforge.Plan.load(cli_plan)
    assert plan.stages == 2
    assert plan.microbatches == 4
    assert plan.schedule == "1f1b"
    assert plan.devices == ["cpu:0", "cpu:1"]
    assert plan.data_parallel == 1
    assert plan.virtual_stages == 1
    assert plan.model == "mlp"
    assert plan.binding == {"B": 8, "H": 64, "I": 64, "K": 10, "L": 1}
    assert repr(plan) == "<pipeforge.Plan @mlp: 2 stages on cpu:0, cpu:1, 1f1b, 4 micro-batches>"


def test_zbv_places_two_stages_per_device_as_a_v(pipeforge_exe, tmp_path):
    plan = pipeforge.compile(MLP, devices="cpu:2", microbatches=4, schedule="zbv", bind="I=64,H=64,L=2,K=10,B=32")
    assert (plan.schedule, plan.stages, plan.virtual_stages) == ("zbv", 4, 2)
    plan.save(tmp_path / "py.json")
    run_command(pipeforge_exe, "compile", MLP, "--bind", "I=64,H=64,L=2,K=10,B=32", "--devices", "cpu:2",
                "--microbatches", 4, "--schedule", "zbv", "-o", tmp_path / "cli.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()


def test_zbi_interleaves_chunks_round_robin(pipeforge_exe, tmp_path):
    plan = pipeforge.compile(MLP, devices="cpu:2", microbatches=4, schedule="zbi", virtual_stages=2,
                             bind="I=64,H=64,L=4,K=10,B=32")
    assert (plan.schedule, plan.stages, plan.virtual_stages) == ("zbi", 4, 2)
    plan.save(tmp_path / "py.json")
    run_command(pipeforge_exe, "compile", MLP, "--bind", "I=64,H=64,L=4,K=10,B=32", "--devices", "cpu:2",
                "--microbatches", 4, "--schedule", "zbi", "--virtual", 2, "-o", tmp_path / "cli.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()


def test_schedule_auto_keeps_one_of_the_schedules_it_compares(tmp_path):
    bind = "I=64,H=64,L=2,K=10,B=32"
    chosen = pipeforge.compile(MLP, devices="cpu:2", microbatches=4, schedule="auto", bind=bind)
    assert chosen.schedule in ("1f1b", "zb1", "zbv", "dualpipev")
    alone = pipeforge.compile(MLP, devices="cpu:2", microbatches=4, schedule=chosen.schedule, bind=bind)
    chosen.save(tmp_path / "auto.json")
    alone.save(tmp_path / "alone.json")
    assert (tmp_path / "auto.json").read_bytes() == (tmp_path / "alone.json").read_bytes()


def test_load_and_save_round_trip(cli_plan, tmp_path):
    pipeforge.Plan.load(cli_plan).save(tmp_path / "again.json")
    assert (tmp_path / "again.json").read_bytes() == cli_plan.read_bytes()


@pytest.mark.parametrize("fmt,ops", [("text", False), ("dot", False), ("dot", True), ("svg", False)])
def test_dump_draws_what_the_command_draws(pipeforge_exe, cli_plan, fmt, ops):
    if fmt == "svg" and shutil.which("dot") is None:
        pytest.skip("Graphviz's dot is not on the PATH")
    expected = run_command(pipeforge_exe, "dump", cli_plan, "--format", fmt, *(["--ops"] if ops else [])).stdout
    assert pipeforge.Plan.load(cli_plan).dump(fmt, ops=ops) == expected


def test_a_syntax_error_is_the_commands_error(pipeforge_exe, tmp_path):
    bad = tmp_path / "bad.pf"
    bad.write_text("dim B = 4\n\ngraph @g(%x: f32[B]) -> f32[] {\n  %y = frobnicate %x : f32[]\n  return %y\n}\n")
    done = run_command(pipeforge_exe, "compile", bad, "-o", tmp_path / "plan.json", ok=False)
    assert done.returncode == 1
    with pytest.raises(pipeforge.Error) as caught:
        pipeforge.compile(str(bad), devices="cpu:1", microbatches=1)
    assert str(caught.value) == done.stderr.rstrip("\n")
    assert caught.value.message == "unknown op 'frobnicate'"
    assert str(caught.value) == (f"{bad}:4:8: error: unknown op 'frobnicate'\n"
                                 "  %y = frobnicate %x : f32[]\n"
                                 "       ^")
    assert isinstance(caught.value, RuntimeError)
    # Text is named <string>.
    with pytest.raises(pipeforge.Error) as caught:
        pipeforge.compile(bad.read_text(), devices="cpu:1", microbatches=1)
    assert str(caught.value).startswith("<string>:4:8: error: unknown op 'frobnicate'\n")


def test_a_missing_plan_is_the_commands_error(pipeforge_exe, tmp_path):
    missing = tmp_path / "missing.json"
    done = run_command(pipeforge_exe, "dump", missing, ok=False)
    with pytest.raises(pipeforge.Error) as caught:
        pipeforge.Plan.load(missing)
    assert str(caught.value) == f"cannot open '{missing}'"
    assert done.stderr == f"error: {caught.value}\n"


def test_cuts_inside_layers_as_the_command_does(pipeforge_exe, tmp_path):
    # Three layers make at most three stages at layer boundaries; cutting
    # inside them makes four, the plan `pipeforge compile --cuts any` writes.
    with pytest.raises(pipeforge.Error, match=r"cannot cut 3 layers into 4 stages; use at most 3 devices, "
                                              r"or --cuts any to cut inside layers"):
        compile_mlp(devices="cpu:4", cuts="layers")
    run_command(pipeforge_exe, "compile", MLP, "--bind", MLP_BIND, "--devices", "cpu:4", "--microbatches", 4,
                "--cuts", "any", "-o", tmp_path / "cli.json")
    plan = compile_mlp(devices="cpu:4", cuts="any")
    assert plan.stages == 4
    plan.save(tmp_path / "py.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()


def test_recompute_as_the_command_does(pipeforge_exe, tmp_path):
    run_command(pipeforge_exe, "compile", MLP, "--bind", MLP_BIND, "--devices", "cpu:2", "--microbatches", 4,
                "--recompute", "layers", "-o", tmp_path / "cli.json")
    plan = compile_mlp(devices="cpu:2", recompute="layers")
    plan.save(tmp_path / "py.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    assert b'"recomputed"' in (tmp_path / "py.json").read_bytes()
    with pytest.raises(ValueError, match=r"^recompute must be one of none, selective, layers, auto, not 'all'$"):
        compile_mlp(recompute="all")


def test_bad_arguments_raise_value_error(cli_plan):
    with pytest.raises(ValueError, match=r"^schedule must be one of gpipe, 1f1b, interleaved, zb1, zbv, zbi, "
                                         r"dualpipev, loopedbfs, auto, not 'nope'$"):
        compile_mlp(schedule="nope")
    with pytest.raises(ValueError, match=r"^cuts must be one of auto, layers, any, products, not 'ops'$"):
        compile_mlp(cuts="ops")
    with pytest.raises(ValueError, match=r"^microbatches must be positive, not 0$"):
        pipeforge.compile(MLP, microbatches=0)
    with pytest.raises(ValueError, match=r"^format must be one of text, dot, svg, not 'png'$"):
        pipeforge.Plan.load(cli_plan).dump("png")
    with pytest.raises(ValueError, match=r"^ops draws ops; it needs format 'dot' or 'svg'$"):
        pipeforge.Plan.load(cli_plan).dump("text", ops=True)


def test_shard_optimizer_is_the_commands_flag(pipeforge_exe, tmp_path):
    sharded = compile_mlp(data_parallel=2, shard_optimizer=True)
    assert sharded.shard_optimizer and sharded.data_parallel == 2
    assert not compile_mlp(data_parallel=2).shard_optimizer
    sharded.save(tmp_path / "py.json")
    run_command(pipeforge_exe, "compile", MLP, "--bind", MLP_BIND, "--devices", "cpu:2", "--microbatches", 4,
                "--data-parallel", 2, "--shard-optimizer", "-o", tmp_path / "cli.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    with pytest.raises(pipeforge.Error, match="--shard-optimizer shares the optimizer state out"):
        compile_mlp(shard_optimizer=True)


def test_expert_parallel_is_the_commands_flag(pipeforge_exe, tmp_path):
    # The replicas of a mixture of experts share its experts out: the plan
    # the command writes, byte for byte, and its refusal of a dense model.
    moe = Path(MLP).parent / "moe.pf"
    bind = "B=8,L=2,C=32,H=4,R=2,F=48,T=16,V=64,E=4"
    shared = pipeforge.compile(moe, devices="cpu:2", microbatches=2, bind=bind, data_parallel=2, expert_parallel=2)
    assert shared.expert_parallel == 2 and shared.data_parallel == 2
    assert pipeforge.compile(moe, devices="cpu:2", microbatches=2, bind=bind, data_parallel=2).expert_parallel == 1
    shared.save(tmp_path / "py.json")
    run_command(pipeforge_exe, "compile", moe, "--bind", bind, "--devices", "cpu:2", "--microbatches", 2,
                "--data-parallel", 2, "--expert-parallel", 2, "-o", tmp_path / "cli.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    both = pipeforge.compile(moe, devices="cpu:1", microbatches=2, bind=bind, data_parallel=4, expert_parallel=2,
                             shard_optimizer=True)
    assert both.expert_parallel == 2 and both.shard_optimizer
    with pytest.raises(pipeforge.Error, match="routes to none"):
        compile_mlp(data_parallel=2, expert_parallel=2)


def test_fusion_is_the_commands_option(pipeforge_exe, tmp_path):
    # The Llama's SwiGLU is one op unless fusion leaves it out: the plan the
    # command writes, byte for byte.
    llama = Path(MLP).parent / "llama.pf"
    bind = "B=8,L=1,C=32,H=4,R=4,F=64,T=16,V=64"
    fused = pipeforge.compile(llama, devices="cpu:1", microbatches=2, bind=bind)
    chain = pipeforge.compile(llama, devices="cpu:1", microbatches=2, bind=bind, fusion="attention")
    fused.save(tmp_path / "fused.json")
    chain.save(tmp_path / "py.json")
    assert b" = swiglu " in (tmp_path / "fused.json").read_bytes()
    assert b" = swiglu " not in (tmp_path / "py.json").read_bytes()
    run_command(pipeforge_exe, "compile", llama, "--bind", bind, "--devices", "cpu:1", "--microbatches", 2,
                "--fusion", "attention", "-o", tmp_path / "cli.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    with pytest.raises(ValueError, match=r"^fusion must be one of all, none, attention, swiglu, not 'gelu'$"):
        compile_mlp(fusion="gelu")


def test_a_schedule_file_is_the_commands_option(pipeforge_exe, tmp_path):
    # Lists written by hand: the plan the command writes, byte for byte.
    lists = tmp_path / "mine.schedule"
    lists.write_text("dev 0: F0 F1 B0 F2 B1 W0 F3 B2 W1 B3 W2 W3\n"
                     "dev 1: F0 B0 W0 F1 B1 W1 F2 B2 W2 F3 B3 W3\n")
    plan = pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, schedule_file=lists)
    assert (plan.schedule, plan.microbatches, plan.virtual_stages) == ("custom", 4, 1)
    assert plan.schedule_actions.splitlines()[1:] == lists.read_text().splitlines()
    assert compile_mlp().schedule_actions == ""
    plan.save(tmp_path / "py.json")
    run_command(pipeforge_exe, "compile", MLP, "--bind", MLP_BIND, "--devices", "cpu:2", "--schedule-file", lists,
                "-o", tmp_path / "cli.json")
    assert (tmp_path / "py.json").read_bytes() == (tmp_path / "cli.json").read_bytes()
    with pytest.raises(ValueError, match=r"^microbatches 8: .*mine\.schedule runs 4 micro-batches; leave it out$"):
        pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, microbatches=8, schedule_file=lists)
    with pytest.raises(ValueError, match=r"^give schedule or schedule_file, not both \('zb1' and .*mine\.schedule\)$"):
        pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, schedule="zb1", schedule_file=lists)
    lists.write_text("dev 0: F0 X0\n")
    with pytest.raises(pipeforge.Error) as caught:
        pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, schedule_file=lists)
    assert str(caught.value).startswith(f"{lists}:1:11: error: 'X0' is not an action: ")
