"""pipeforge.schedule, pipeforge.read_schedule and pipeforge.Schedule against `pipeforge schedule`."""

import pytest

import pipeforge
from conftest import MLP, MLP_BIND, run_command


def test_a_schedule_is_the_commands_lists_picture_and_file(pipeforge_exe):
    s = pipeforge.schedule("zbv", devices=4, microbatches=8)
    assert (s.kind, s.devices, s.microbatches, s.virtual_stages) == ("zbv", 4, 8, 2)
    assert (s.placement, s.split_backward) == ("v", True)
    listed = run_command(pipeforge_exe, "schedule", "-s", "zbv", "-p", 4, "-m", 8, "--format", "list").stdout
    assert str(s) == listed
    assert [" ".join(row) for row in s.actions] == [line.split(": ")[1] for line in listed.splitlines()[2:]]
    assert s.draw() == run_command(pipeforge_exe, "schedule", "-s", "zbv", "-p", 4, "-m", 8).stdout
    svg = run_command(pipeforge_exe, "schedule", "-s", "zbv", "-p", 4, "-m", 8, "--format", "svg").stdout
    assert s.draw("svg") == svg
    # F = B = W: 1 - 6m / (6m + p - 1).
    assert s.bubble() == pytest.approx(3 / 51, abs=1e-12)
    one_f_one_b = pipeforge.schedule("1f1b", devices=4, microbatches=8)
    assert (one_f_one_b.placement, one_f_one_b.split_backward, one_f_one_b.virtual_stages) == ("round-robin", False, 1)
    assert one_f_one_b.actions[3][:4] == ["F0", "B0", "F1", "B1"]
    assert one_f_one_b.bubble() == pytest.approx(3 / 11, abs=1e-12)


def test_costs_choose_zbis_order_and_time_any_schedule(pipeforge_exe):
    z = pipeforge.schedule("zbi", devices=4, microbatches=8, virtual_stages=2, costs=(1, 2, 1))
    cli = run_command(pipeforge_exe, "schedule", "-s", "zbi", "-p", 4, "-m", 8, "-v", 2, "--costs", "1,2,1")
    assert z.draw(costs=(1, 2, 1)) == cli.stdout
    assert f"bubble: {100 * z.bubble(costs=(1, 2, 1)):.1f}%" in cli.stdout
    with pytest.raises(pipeforge.Error, match=r"^costs: an input gradient takes 0, expected a finite number > 0$"):
        z.bubble(costs=(1, 0, 1))
    with pytest.raises(pipeforge.Error, match=r"^costs: give F,B,W or F,B,W,C \(a forward, an input gradient, a "
                                              r"weight gradient and a hand-off\), not 2 values$"):
        z.bubble(costs=(1, 2))


def test_read_schedule_checks_as_compile_does(tmp_path):
    text = "dev 0: F0 F1 B0 F2 B1 W0 F3 B2 W1 B3 W2 W3\ndev 1: F0 B0 W0 F1 B1 W1 F2 B2 W2 F3 B3 W3\n"
    from_text = pipeforge.read_schedule(text)
    path = tmp_path / "mine.schedule"
    path.write_text(text)
    from_file = pipeforge.read_schedule(path)
    assert from_text.kind == from_file.kind == "custom"
    assert from_text.actions == from_file.actions == [line.split(": ")[1].split() for line in text.splitlines()]
    assert (from_file.microbatches, from_file.virtual_stages, from_file.split_backward) == (4, 1, True)
    with pytest.raises(pipeforge.Error) as caught:
        pipeforge.read_schedule("dev 0: F0 B0 F1 B1\ndev 1: F1 B1 F0 B0\n")
    assert str(caught.value).startswith("<string>:1:11: error: the schedule deadlocks: ")


def test_a_placement_line_puts_each_stage_where_it_says():
    wave = pipeforge.read_schedule(
        "placement 0 1 1 0 0 1 1 0\n"
        "dev 0: F0 F0c1 F0c2 F0c3 B0c3 B0c2 B0c1 B0\n"
        "dev 1: F0 F0c1 F0c2 F0c3 B0c3 B0c2 B0c1 B0\n")
    assert (wave.placement, wave.virtual_stages) == ("0 1 1 0 0 1 1 0", 4)
    assert wave.stage_devices == [0, 1, 1, 0, 0, 1, 1, 0]
    assert "\nplacement 0 1 1 0 0 1 1 0\n" in str(wave)
    assert pipeforge.schedule("zbv", devices=3, microbatches=3).stage_devices == [0, 1, 2, 2, 1, 0]
    assert pipeforge.schedule("1f1b", devices=3, microbatches=3).stage_devices == [0, 1, 2]
    # Written as the devices of a V, it is the V.
    v = pipeforge.read_schedule("placement 0 1 1 0\ndev 0: F0c0 F0c1 B0c1 B0c0\ndev 1: F0c0 F0c1 B0c1 B0c0\n")
    assert v.placement == "v"


def test_pytorchs_schedule_csv_goes_out_and_comes_back(pipeforge_exe, tmp_path):
    s = pipeforge.schedule("zbv", devices=2, microbatches=4)
    csv = run_command(pipeforge_exe, "schedule", "-s", "zbv", "-p", 2, "-m", 4, "--format", "csv").stdout
    assert s.torch_csv() == csv
    assert csv.splitlines()[0].split(",")[:4] == ["0F0", "0F1", "0F2", "3F0"]
    path = tmp_path / "zbv.csv"
    path.write_text(csv)
    back = pipeforge.read_schedule(path)
    assert (back.kind, back.placement, back.split_backward) == ("custom", "v", True)
    assert back.actions == s.actions
    plan = pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, schedule_file=str(path))
    assert (plan.schedule, plan.microbatches, plan.virtual_stages) == ("custom", 4, 2)
    path.write_text("0F0,0B0\n2F0,2B0\n")
    with pytest.raises(pipeforge.Error) as caught:
        pipeforge.read_schedule(path)
    assert str(caught.value).startswith(f"{path}:1:1: error: no rank runs stage 1: ")


def test_compile_takes_a_schedule_as_its_file(tmp_path):
    s = pipeforge.schedule("dualpipev", devices=2, microbatches=4)
    plan = pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, schedule_file=s)
    assert (plan.schedule, plan.microbatches, plan.virtual_stages) == ("custom", 4, 2)
    assert plan.schedule_actions.splitlines()[1:] == str(s).splitlines()[1:]
    with pytest.raises(ValueError, match=r"^give schedule or schedule_file, not both \('zb1' and <pipeforge\."
                                         r"Schedule dualpipev devices=2 microbatches=4 virtual_stages=2>\)$"):
        pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, schedule="zb1", schedule_file=s)


def test_forwards_run_ahead_absorb_jitter():
    tight = pipeforge.schedule("1f1b", devices=2, microbatches=8)
    eager = pipeforge.schedule("1f1b", devices=2, microbatches=8, extra_warmup=1)
    assert eager.kind == "custom"
    assert eager.actions[0][:4] == ["F0", "F1", "F2", "B0"]
    assert eager.actions[1] == tight.actions[1]
    assert eager.bubble() == pytest.approx(tight.bubble())
    steady = tight.jitter(sigma=1e-9, trials=2)
    assert steady["mean"] == pytest.approx(27) and steady["steady"] == 27
    late, slack = tight.jitter(sigma=0.15, trials=400), eager.jitter(sigma=0.15, trials=400)
    assert late["mean"] > 1.02 * late["steady"]
    assert slack["mean"] < 1.01 * slack["steady"]
    assert slack["bubble"] < late["bubble"]
    assert late["median"] <= late["p90"]
    assert tight.jitter(0.2, 10, seed=3) == tight.jitter(0.2, 10, seed=3)


def test_compile_runs_forwards_ahead():
    plan = pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, microbatches=4, extra_warmup=1)
    assert plan.schedule == "custom"
    assert "dev 0: F0 F1 F2 B0 F3 B1 B2 B3" in plan.schedule_actions
    with pytest.raises(pipeforge.Error, match=r"^--extra-warmup runs forwards ahead in 1f1b or zb1, and the schedule "
                                              r"is zbv: give --schedule 1f1b, zb1 or auto, or drop the flag$"):
        pipeforge.compile(MLP, devices="cpu:2", bind=MLP_BIND, schedule="zbv", extra_warmup=1)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"^kind must be one of gpipe, 1f1b, interleaved, zb1, zbv, zbi, dualpipev, "
                                         r"loopedbfs, not 'custom'$"):
        pipeforge.schedule("custom")
    with pytest.raises(ValueError, match=r"^microbatches must be positive, not 0$"):
        pipeforge.schedule("1f1b", microbatches=0)
    with pytest.raises(pipeforge.Error, match=r"^dualpipev needs at least 2 micro-batches per device \(8 on 4 "
                                              r"devices\), got 4$"):
        pipeforge.schedule("dualpipev", devices=4, microbatches=4)
    with pytest.raises(ValueError, match=r"^format must be one of text, svg, not 'png'$"):
        pipeforge.schedule("1f1b").draw("png")
    with pytest.raises(pipeforge.Error, match=r"^extra warm-up forwards run ahead on devices of one model chunk, and "
                                              r"zbv gives each device 2$"):
        pipeforge.schedule("zbv", extra_warmup=1)
    with pytest.raises(pipeforge.Error, match=r"^simulate: the jitter's spread must be between 0 and 1, got 3$"):
        pipeforge.schedule("1f1b").jitter(3)
