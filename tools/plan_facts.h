// What the stage table and the plan's picture say about a plan: its
// summary line, its prediction, and per stage its layers, size, time,
// imbalance and device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "plan/plan.h"

namespace pf::tools {

/// Whether stage `s` begins inside a layer that the stage before it began:
/// the compiler cut between two ops of that layer.
bool begins_inside_layer(const Plan& plan, size_t s);
/// "embed..h.2", with the part of a layer split between stages marked:
/// "embed..part of h.2", "rest of h.2..head".
std::string layer_range(const Plan& plan, size_t index);
int64_t param_count(const PlanStage& s);
/// How far the time of a stage's device (its stages together) is from the
/// mean device's, "+4.8%": the plan's imbalance is the largest of these.
std::string imbalance(const Plan& plan, const PlanStage& s);
std::string device_name(const Plan& plan, const PlanStage& s);
/// Its forward and backward per micro-batch, in ms.
std::string compute_ms(const PlanStage& s);
/// "2.5 KiB".
std::string bytes_text(int64_t n);
/// "1 stage", "4 stages".
std::string count(size_t n, std::string_view noun, std::string_view plural);
/// "@gpt: 2 stages on 2 devices, 1f1b, 8 micro-batches" and what else sets the plan apart.
std::string summary(const Plan& plan);
/// "period 0.035 ms per micro-batch, imbalance 0.9%, ..." from the plan's prediction.
std::string prediction(const Plan& plan);

}  // namespace pf::tools
