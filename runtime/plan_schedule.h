// The schedule a plan runs: its kind, devices, micro-batches and chunks as action lists.
#pragma once

#include "plan/plan.h"
#include "runtime/schedule.h"

namespace pf {

/// The plan's schedule kind; throws pf::Error naming the model for a name
/// this pipeforge does not run.
ScheduleKind plan_schedule_kind(const Plan& plan);

/// The costs the compiler predicted for the plan's stages, as its step
/// prediction simulates them (stage_action_costs of each stage's forward,
/// backward and transfer time, and its backward's weight share).
ActionCosts plan_action_costs(const Plan& plan);

/// The action lists the runtime walks for `plan`: one list per device of a
/// replica (stages / virtual stages), the plan's micro-batches and chunks,
/// in the order the compiler chose on plan_action_costs where the kind's
/// order depends on costs (zbi): every rank reads the same.
Schedule plan_schedule(const Plan& plan);

}  // namespace pf
