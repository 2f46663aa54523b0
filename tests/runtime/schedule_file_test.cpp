// Schedule files: every generated schedule written out and read back to the same lists; user-written lists
// validated, with diagnostics at the line and column of the action at fault.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"
#include "tests/error_of.h"
#include "tests/runtime/schedule_test_util.h"

namespace pf {
namespace {

/// `file:line:col: error: message` and the quoted line with its caret, or "(no error)".
std::string rendered_error_of(const std::string& text) {
  return testing_support::rendered_error_of([&] { read_schedule_text(text, "s.txt"); });
}

TEST(ScheduleFile, EveryGeneratedScheduleReadsBackToItsLists) {
  for (const testing_support::GeneratedShape& shape : testing_support::generated_shapes()) {
    SCOPED_TRACE(fmt::format("{} p={} m={} v={}", schedule_kind_name(shape.kind), shape.devices, shape.microbatches,
                             shape.chunks));
    const Schedule generated = make_schedule(shape.kind, shape.devices, shape.microbatches, shape.chunks);
    const std::string text = write_schedule_text(generated);
    const Schedule read = read_schedule_text(text, "s.txt");
    testing_support::expect_same_lists(read, generated);
    // Written again, only the kind in the heading comment differs.
    const std::string again = write_schedule_text(read);
    EXPECT_EQ(again.substr(again.find('\n')), text.substr(text.find('\n')));
  }
}

TEST(ScheduleFile, WritesEachDevicesComputeActionsInOrder) {
  EXPECT_EQ(write_schedule_text(make_schedule(ScheduleKind::one_f_one_b, 2, 3)),
            "# 1f1b p=2 m=3 v=1: each device's compute actions in order\n"
            "dev 0: F0 F1 B0 F2 B1 B2\n"
            "dev 1: F0 B0 F1 B1 F2 B2\n");
  EXPECT_EQ(write_schedule_text(make_schedule(ScheduleKind::zb_v, 1, 1, 2)),
            "# zbv p=1 m=1 v=2: each device's compute actions in order\n"
            "placement v\n"
            "dev 0: F0c0 F0c1 B0c1 W0c1 B0c0 W0c0\n");
}

TEST(ScheduleFile, ReadsWhatAUserWrites) {
  // One more forward in flight on device 0 than 1F1B keeps, comments, a
  // grid's idle cells and the devices in any order.
  const Schedule s = read_schedule_text(
      "# eager warm-up\n"
      "dev 1: .  F0 B0 F1 B1 F2 B2 F3 B3   # the last stage\n"
      "\n"
      "dev 0:F0 F1 F2 B0 F3 B1 B2 B3\n",
      "s.txt");
  EXPECT_EQ(s.devices, 2);
  EXPECT_EQ(s.microbatches, 4);
  EXPECT_EQ(s.virtual_stages, 1);
  EXPECT_FALSE(s.split_backward);
  EXPECT_EQ(simulate(s).peak_stashed, (std::vector<int>{3, 1}));
  // W actions split the backward: B is then the input gradient.
  const Schedule split = read_schedule_text(
      "dev 0: F0 F1 B0 F2 B1 W0 F3 B2 W1 B3 W2 W3\n"
      "dev 1: F0 B0 W0 F1 B1 W1 F2 B2 W2 F3 B3 W3\n",
      "s.txt");
  EXPECT_TRUE(split.split_backward);
  EXPECT_EQ(split.per_device[1][2], (Action{ActionKind::backward_input, 0, 1, -1}));  // after recv_act, forward
  // A V over one device's two chunks.
  const Schedule v = read_schedule_text("placement v\ndev 0: F0c0 F0c1 B0c1 B0c0\n", "s.txt");
  EXPECT_EQ(v.placement, StagePlacement::v_shape());
  EXPECT_EQ(v.model_stages(), 2);
}

// Hanayo's wave: the stages go down the devices, back up and down again,
// each device holding four; the hand-offs at each turn stay on its device.
TEST(ScheduleFile, PlacesTheStagesWhereItsPlacementLineSays) {
  const std::string lists =
      "dev 0: F0 F1 F0c1 F1c1 F0c2 F1c2 F0c3 F1c3 B0c3 B1c3 B0c2 B1c2 B0c1 B1c1 B0 B1\n"
      "dev 1: F0 F1 F0c1 F1c1 F0c2 F1c2 F0c3 F1c3 B0c3 B1c3 B0c2 B1c2 B0c1 B1c1 B0 B1\n";
  const Schedule wave = read_schedule_text("placement 0 1 1 0 0 1 1 0   # a wave\n" + lists, "s.txt");
  EXPECT_TRUE(wave.placement.is_listed());
  EXPECT_EQ(wave.virtual_stages, 4);
  std::vector<int> devices, chunks;
  for (int s = 0; s < wave.model_stages(); ++s) {
    devices.push_back(wave.device_of(s));
    chunks.push_back(wave.chunk_of(s));
    EXPECT_EQ(wave.stage_at(wave.device_of(s), wave.chunk_of(s)), s);
  }
  EXPECT_EQ(devices, (std::vector<int>{0, 1, 1, 0, 0, 1, 1, 0}));
  EXPECT_EQ(chunks, (std::vector<int>{0, 0, 1, 1, 2, 2, 3, 3}));
  const std::vector<Action>& second = wave.per_device[1];
  EXPECT_NE(std::find(second.begin(), second.end(), Action{ActionKind::send_act, 0, 1, 1}), second.end());
  EXPECT_NE(std::find(second.begin(), second.end(), Action{ActionKind::recv_act, 0, 2, 1}), second.end());
  // Written out with its line, and read back the same.
  const std::string text = write_schedule_text(wave);
  EXPECT_NE(text.find("\nplacement 0 1 1 0 0 1 1 0\n"), std::string::npos) << text;
  const Schedule again = read_schedule_text(text, "s.txt");
  EXPECT_EQ(again.placement, wave.placement);
  EXPECT_EQ(again.per_device, wave.per_device);
  // A list that is round robin's or a V's is that placement.
  EXPECT_EQ(read_schedule_text("placement 0 1 0 1 0 1 0 1\n" + lists, "s.txt").placement,
            StagePlacement::round_robin());
  EXPECT_EQ(StagePlacement::listed({0, 1, 1, 0}), StagePlacement::v_shape());
  EXPECT_EQ(StagePlacement::listed({0, 0, 1, 1}).name(), "0 0 1 1");
  EXPECT_EQ(StagePlacement::listed({0, 0}), StagePlacement::round_robin());  // one device's two chunks
}

TEST(ScheduleFile, SaysWhereAWrongActionIs) {
  EXPECT_EQ(rendered_error_of("dev 0: F0 X1 B0\n"),
            "s.txt:1:11: error: 'X1' is not an action: an action is F (forward), B (backward, or its input gradient "
            "where W follows) or W (weight gradient), then the micro-batch, then c and the chunk where devices hold "
            "several: F3, B3, W3c1\n"
            "dev 0: F0 X1 B0\n"
            "          ^\n");
  // Counts are digits only: no sign, at most six of them.
  for (const std::string token : {"F-1", "F1234567", "F0c", "B+2"}) {
    const std::string head = "s.txt:1:8: error: '" + token + "' is not an action: ";
    EXPECT_EQ(rendered_error_of("dev 0: " + token + " B0\n").substr(0, head.size()), head);
  }
  EXPECT_EQ(rendered_error_of("dev 0: F0 B0\ndev 1: F0 F0 B0 B0\n"),
            "s.txt:2:11: error: dev 1 runs F0 twice (first at 2:8)\n"
            "dev 1: F0 F0 B0 B0\n"
            "          ^\n");
  EXPECT_EQ(rendered_error_of("dev 0: B0 F0\n"),
            "s.txt:1:8: error: B0 comes before F0 on dev 0: a micro-batch's backward needs its forward first\n"
            "dev 0: B0 F0\n"
            "       ^\n");
  EXPECT_EQ(rendered_error_of("dev 0: F0 F1 B0 W1 B1 W0\n"),
            "s.txt:1:17: error: W1 comes before B1 on dev 0: a micro-batch's weight gradient needs its input "
            "gradient (B) first\n"
            "dev 0: F0 F1 B0 W1 B1 W0\n"
            "                ^\n");
}

TEST(ScheduleFile, NamesWhatIsMissing) {
  EXPECT_EQ(rendered_error_of("dev 0: F0 F1 B0 B1\ndev 1: F0 B0 F1\n"),
            "s.txt:2:1: error: dev 1 never runs B1: each device runs F and B of every one of the 2 micro-batches\n"
            "dev 1: F0 B0 F1\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("dev 0: F0 F1 B0 W0 B1\n"),
            "s.txt:1:1: error: dev 0 never runs W1: each device runs F, B and W of every one of the 2 "
            "micro-batches\n"
            "dev 0: F0 F1 B0 W0 B1\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("dev 0: F0 B0\ndev 2: F0 B0\n"),
            "s.txt:2:1: error: dev 1 is missing: the lines name devices up to 2, and each of 0 to 2 needs its own\n"
            "dev 2: F0 B0\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("# nothing\n"),
            "error: s.txt: no device's actions: write a line such as `dev 0: F0 B0` for each device\n");
}

TEST(ScheduleFile, NamesWhatEachDeviceWaitsForInADeadlock) {
  // Device 0 runs B0 before F1, while device 1 holds B0 back behind F1.
  EXPECT_EQ(rendered_error_of("dev 0: F0 B0 F1 B1\ndev 1: F1 F0 B0 B1\n"),
            "s.txt:1:11: error: the schedule deadlocks: dev 0 waits at B0 for dev 1's B0, dev 1 waits at F1 for dev "
            "0's F1; move an action after the ones it needs\n"
            "dev 0: F0 B0 F1 B1\n"
            "          ^\n");
}

TEST(ScheduleFile, ChecksItsLines) {
  EXPECT_EQ(rendered_error_of("device 0: F0 B0\n"),
            "s.txt:1:1: error: expected `dev N: actions...` or `placement round-robin|v|DEVICES`, got 'device'\n"
            "device 0: F0 B0\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("dev 0 F0 B0\n"),
            "s.txt:1:5: error: expected `dev N:`, the device's number and a colon before its actions\n"
            "dev 0 F0 B0\n"
            "    ^\n");
  EXPECT_EQ(rendered_error_of("dev 0: F0 B0\ndev 0: F0 B0\n"),
            "s.txt:2:1: error: dev 0 has a second line (the first is line 1)\n"
            "dev 0: F0 B0\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("placement zigzag\ndev 0: F0 B0\n"),
            "s.txt:1:11: error: placement is round-robin (stage s on device s % p, the default), v (chunk 0 of "
            "device d is stage d, chunk 1 stage 2p - 1 - d), or the device of each stage in model order (0 1 1 0)\n"
            "placement zigzag\n"
            "          ^\n");
  EXPECT_EQ(rendered_error_of("placement 0 1 x\ndev 0: F0 B0\n").substr(0, 45),
            "s.txt:1:15: error: placement is round-robin (");
  const std::string two_devices = "dev 0: F0 B0\ndev 1: F0 B0\n";
  EXPECT_EQ(rendered_error_of("placement 0 1 1\n" + two_devices),
            "s.txt:1:11: error: device 1 holds 2 stages and device 0 holds 1: each of the devices (0 to 1) holds as "
            "many, its chunks\n"
            "placement 0 1 1\n"
            "          ^\n");
  EXPECT_EQ(rendered_error_of("placement 0 1 2 3\n" + two_devices),
            "s.txt:1:1: error: the placement puts stages on 4 devices, but the lines are for 2: list a device of 0 to "
            "1 for each stage\n"
            "placement 0 1 2 3\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("placement 0 1 1 0 0 1\n" + two_devices),
            "s.txt:1:1: error: the placement gives each device 3 chunks, but the actions name 1\n"
            "placement 0 1 1 0 0 1\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("placement v\ndev 0: F0 B0\n"),
            "s.txt:1:1: error: placement v gives each device 2 chunks (the arms of its V), but the actions name 1\n"
            "placement v\n"
            "^\n");
}

TEST(ScheduleFile, APlanRunsTheListsOfItsSize) {
  const std::string text = write_schedule_text(make_schedule(ScheduleKind::one_f_one_b, 2, 4));
  ActionCosts costs;
  costs.stages.assign(2, {1, 2, 1, 1, 0, 0});
  EXPECT_EQ(planned_schedule(ScheduleKind::custom, text, 2, 4, 1, costs).per_device,
            make_schedule(ScheduleKind::one_f_one_b, 2, 4).per_device);
  EXPECT_EQ(testing_support::error_of([&] { planned_schedule(ScheduleKind::custom, text, 2, 8, 1, costs); }),
            "the custom schedule runs 2 devices, 4 micro-batches and 1 chunks per device, not the 2, 8 and 1 of its "
            "plan");
}

}  // namespace
}  // namespace pf
