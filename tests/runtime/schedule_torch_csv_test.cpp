// PyTorch's schedule CSV: every generated schedule written as torch.distributed.pipelining writes its compute-only
// CSV and read back to the same lists; what PyTorch's files hold beside the compute actions; diagnostics in its
// words, at the row and column of the cell at fault.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <string>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"
#include "tests/error_of.h"
#include "tests/runtime/schedule_test_util.h"

namespace pf {
namespace {

/// `file:line:col: error: message` and the quoted row with its caret, or "(no error)".
std::string rendered_error_of(const std::string& csv) {
  return testing_support::rendered_error_of([&] { read_torch_schedule_csv(csv, "s.csv"); });
}

TEST(TorchScheduleCsv, EveryGeneratedScheduleReadsBackToItsLists) {
  for (const testing_support::GeneratedShape& shape : testing_support::generated_shapes()) {
    SCOPED_TRACE(fmt::format("{} p={} m={} v={}", schedule_kind_name(shape.kind), shape.devices, shape.microbatches,
                             shape.chunks));
    const Schedule generated = make_schedule(shape.kind, shape.devices, shape.microbatches, shape.chunks);
    const std::string csv = write_torch_schedule_csv(generated);
    testing_support::expect_same_lists(read_torch_schedule_csv(csv, "s.csv"), generated);
    EXPECT_EQ(write_torch_schedule_csv(read_torch_schedule_csv(csv, "s.csv")), csv);
  }
}

TEST(TorchScheduleCsv, WritesTheModelStageTheKindAndTheMicroBatch) {
  EXPECT_EQ(write_torch_schedule_csv(make_schedule(ScheduleKind::one_f_one_b, 2, 3)),
            "0F0,0F1,0B0,0F2,0B1,0B2\n"
            "1F0,1B0,1F1,1B1,1F2,1B2\n");
  // A V: device 0 holds stages 0 and 3; the backward split into I and W,
  // device 1 deferring its Ws.
  EXPECT_EQ(write_torch_schedule_csv(make_schedule(ScheduleKind::zb_v, 2, 1, 2)),
            "0F0,3F0,3I0,3W0,0I0,0W0\n"
            "1F0,2F0,2I0,1I0,2W0,1W0\n");
}

TEST(TorchScheduleCsv, ReadsWhatPyTorchWrites) {
  // Interleaved 1F1B on 2 ranks as a schedule's _dump_csv may hold it: idle
  // steps as empty cells, quoted cells, the transfers and FSDP actions of a
  // file with its communication, an overlapped forward and backward, CRLF.
  const Schedule s = read_torch_schedule_csv(
      "0F0,,\"0F1\",0SEND_F0,2F0, 0UNSHARD ,2F1,0F2,(2B0;0F3)OVERLAP_F_B,2B1,2F2,0B0,2F3,0B1,2B2,2B3,0B2,0B3,"
      "0REDUCE_GRAD\r\n"
      "1RECV_F0,1F0,1F1,3F0,3B0,3F1,3B1,1F2,1B0,1F3,1B1,3F2,3B2,3F3,3B3,1B2,1B3\r\n",
      "s.csv");
  const Schedule interleaved = make_schedule(ScheduleKind::interleaved, 2, 4, 2);
  EXPECT_EQ(s.placement, StagePlacement::round_robin());
  EXPECT_FALSE(s.split_backward);
  EXPECT_EQ(s.per_device, interleaved.per_device);
  // A file saved as UTF-8 with a byte-order mark.
  EXPECT_EQ(read_torch_schedule_csv("\xEF\xBB\xBF" "0F0,0B0\n1F0,1B0\n", "s.csv").per_device,
            read_schedule_text("dev 0: F0 B0\ndev 1: F0 B0\n", "s.txt").per_device);
  // A whole backward among split ones runs as its input gradient, then its
  // weight's (DualPipeV's files mix them).
  const Schedule mixed = read_torch_schedule_csv(
      "0F0,0F1,0I0,0W0,0B1\n"
      "1F0,1I0,1F1,1I1,1W0,1W1\n",
      "s.csv");
  const Schedule spelled = read_schedule_text(
      "dev 0: F0 F1 B0 W0 B1 W1\n"
      "dev 1: F0 B0 F1 B1 W0 W1\n",
      "s.txt");
  EXPECT_TRUE(mixed.split_backward);
  EXPECT_EQ(mixed.per_device, spelled.per_device);
  // Each rank's stages are its chunks, wherever they lie: a wave.
  const Schedule wave = read_torch_schedule_csv(
      "0F0,3F0,4F0,7F0,7B0,4B0,3B0,0B0\n"
      "1F0,2F0,5F0,6F0,6B0,5B0,2B0,1B0\n",
      "s.csv");
  EXPECT_EQ(wave.placement.name(), "0 1 1 0 0 1 1 0");
  EXPECT_EQ(wave.virtual_stages, 4);
}

TEST(TorchScheduleCsv, SaysWhereAWrongCellIs) {
  const std::string syntax =
      "a cell is the model stage, F (forward), I (input gradient), W (weight gradient) or B (whole backward), then "
      "the micro-batch: 0F3, 5I3";
  EXPECT_EQ(rendered_error_of("0F0,0X0\n"),
            "s.csv:1:5: error: '0X0' is not an action: " + syntax + "\n0F0,0X0\n    ^\n");
  EXPECT_EQ(rendered_error_of("0F0, 0B\n"),
            "s.csv:1:6: error: '0B' is not an action: " + syntax + "\n0F0, 0B\n     ^\n");
  EXPECT_EQ(rendered_error_of("0F0,(0B0)OVERLAP\n"),
            "s.csv:1:5: error: '(0B0)OVERLAP' is not an action: a cell of several runs them as "
            "(0F3;1B2)OVERLAP_F_B\n"
            "0F0,(0B0)OVERLAP\n"
            "    ^\n");
  EXPECT_EQ(rendered_error_of("0F0,1F0,0B0,1B0\n1F1\n"),
            "s.csv:2:1: error: stage 1 runs on rank 1 here and on rank 0 at 1:5: each stage belongs to one rank\n"
            "1F1\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("0F0,1F0,1B0,0B0\n2F0,2B0\n"),
            "s.csv:2:1: error: rank 1 runs 1 of the 3 stages and rank 0 runs 2: each rank holds as many\n"
            "2F0,2B0\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("0F0,0B0\n2F0,2B0\n"),
            "s.csv:1:1: error: no rank runs stage 1: the rows name stages up to 2, and each of 0 to 2 needs a rank\n"
            "0F0,0B0\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("0F0,0B0\n,,\n1F0,1B0\n"),
            "s.csv:2:1: error: rank 1 runs no action\n,,\n^\n");
  EXPECT_EQ(rendered_error_of("\n\n"),
            "error: s.csv: no rank's actions: write a row of cells such as 0F0,0B0 for each rank\n");
}

TEST(TorchScheduleCsv, NamesActionsAsPyTorchDoes) {
  EXPECT_EQ(rendered_error_of("0F0,0F1,0I0,0W0,0I1\n1F0,1I0,1W0,1F1,1I1,1W1\n"),
            "s.csv:1:1: error: rank 0 never runs 0W1: each rank runs F, I and W of every one of the 2 "
            "micro-batches\n"
            "0F0,0F1,0I0,0W0,0I1\n"
            "^\n");
  EXPECT_EQ(rendered_error_of("0F0,0B0,0F0\n1F0,1B0\n"),
            "s.csv:1:9: error: rank 0 runs 0F0 twice (first at 1:1)\n0F0,0B0,0F0\n        ^\n");
  EXPECT_EQ(rendered_error_of("0F0,0W0,0I0\n1F0,1I0,1W0\n"),
            "s.csv:1:5: error: 0W0 comes before 0I0 on rank 0: a micro-batch's weight gradient needs its input "
            "gradient (I) first\n"
            "0F0,0W0,0I0\n"
            "    ^\n");
  // Rank 0 runs its backward before rank 1 sent it the gradient, and rank 1
  // holds that back behind a forward rank 0 has not sent.
  EXPECT_EQ(rendered_error_of("0F0,0B0,0F1,0B1\n1F1,1F0,1B0,1B1\n"),
            "s.csv:1:5: error: the schedule deadlocks: rank 0 waits at 0B0 for rank 1's 1B0, rank 1 waits at 1F1 for "
            "rank 0's 0F1; move an action after the ones it needs\n"
            "0F0,0B0,0F1,0B1\n"
            "    ^\n");
}

}  // namespace
}  // namespace pf
