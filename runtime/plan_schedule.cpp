// The schedule a plan runs.
#include "runtime/plan_schedule.h"

#include <fmt/format.h>

#include "ir/diagnostic.h"

namespace pf {

ScheduleKind plan_schedule_kind(const Plan& plan) {
  auto kind = parse_schedule_kind(plan.schedule);
  if (!kind)
    throw Error(fmt::format("plan for @{}: unknown schedule '{}'; this pipeforge runs {}", plan.model_name,
                            plan.schedule, schedule_kind_choices()));
  return *kind;
}

ActionCosts plan_action_costs(const Plan& plan) {
  std::vector<StageTime> times;
  for (const PlanStage& s : plan.stages)
    times.push_back({s.predicted.forward_s, s.predicted.backward_s, s.predicted.comm_s, s.predicted.weight_share()});
  return stage_action_costs(times);
}

Schedule plan_schedule(const Plan& plan) {
  const int stages = static_cast<int>(plan.stages.size());
  if (plan.virtual_stages < 1 || stages % plan.virtual_stages != 0)
    throw Error(fmt::format("plan for @{}: {} stages do not divide into {} virtual stages per device", plan.model_name,
                            stages, plan.virtual_stages));
  return planned_schedule(plan_schedule_kind(plan), plan.schedule_actions, stages / plan.virtual_stages,
                          plan.microbatches, plan.virtual_stages, plan_action_costs(plan));
}

}  // namespace pf
