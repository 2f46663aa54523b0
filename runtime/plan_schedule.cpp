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

Schedule plan_schedule(const Plan& plan) {
  const int stages = static_cast<int>(plan.stages.size());
  if (plan.virtual_stages < 1 || stages % plan.virtual_stages != 0)
    throw Error(fmt::format("plan for @{}: {} stages do not divide into {} virtual stages per device", plan.model_name,
                            stages, plan.virtual_stages));
  return make_schedule(plan_schedule_kind(plan), stages / plan.virtual_stages, plan.microbatches,
                       plan.virtual_stages);
}

}  // namespace pf
