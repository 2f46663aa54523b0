// Pictures and tables of a plan: Graphviz DOT (SVG through Graphviz's `dot`) and plain text.
#pragma once

#include <string>

#include "plan/plan.h"

namespace pf::tools {

/// The model as a Graphviz digraph: one filled cluster per stage (a distinct
/// pastel per stage, the device in its label) holding one node per layer,
/// or, with `ops`, one per op of the stage's forward program; edges where a
/// value flows; cut edges (between stages) bold and labelled with the
/// tensor's name, type and bytes; and a table node of the stage predictions.
/// The plan must be valid (as load_plan leaves it).
std::string render_plan_dot(const Plan& plan, bool ops);

/// The stage table (stage, device, layers, params, fwd+bwd ms, peak memory,
/// bytes sent, imbalance), then the tensors each stage receives and sends.
std::string render_plan_text(const Plan& plan);

/// Runs Graphviz `dot -Tsvg` on `dot_text` and returns the SVG. Throws
/// pf::Error if `dot` is not on the PATH or fails (quoting what it printed).
std::string dot_to_svg(const std::string& dot_text);

}  // namespace pf::tools
