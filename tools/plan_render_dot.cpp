// The plan as a Graphviz digraph: a cluster per stage, a node per layer or op.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <tuple>

#include "ir/units.h"
#include "tools/plan_facts.h"
#include "tools/plan_render.h"

namespace pf::tools {

namespace {

// ---------------------------------------------------------------------------
// DOT.

// A DOT string literal.
std::string dot_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

// Text inside a Graphviz HTML-like label.
std::string html(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '&')
      out += "&amp;";
    else if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '"')
      out += "&quot;";
    else
      out += c;
  }
  return out;
}

// A colour from hue (degrees), saturation and lightness, as #rrggbb.
std::string hsl(double h, double s, double l) {
  double c = (1 - std::fabs(2 * l - 1)) * s;
  double x = c * (1 - std::fabs(std::fmod(h / 60, 2) - 1));
  double m = l - c / 2;
  double r = 0, g = 0, b = 0;
  if (h < 60)
    r = c, g = x;
  else if (h < 120)
    r = x, g = c;
  else if (h < 180)
    g = c, b = x;
  else if (h < 240)
    g = x, b = c;
  else if (h < 300)
    r = x, b = c;
  else
    r = c, b = x;
  auto byte = [&](double v) { return static_cast<int>(std::lround(255 * (v + m))); };
  return fmt::format("#{:02x}{:02x}{:02x}", byte(r), byte(g), byte(b));
}

// Stage i's hue steps by the golden angle: neighbours differ strongly and no
// two of the first dozens coincide, however many stages there are.
double stage_hue(int stage) { return std::fmod(stage * 137.508, 360.0); }
std::string stage_fill(int stage) { return hsl(stage_hue(stage), 0.6, 0.9); }
std::string stage_border(int stage) { return hsl(stage_hue(stage), 0.35, 0.55); }

bool is_source(const Op& op) { return op.operands.empty() && op.kind != OpKind::call; }

class Drawing {
 public:
  Drawing(const Plan& plan, bool ops) : plan_(plan), ops_(ops) {
    for (const PlanStage& s : plan.stages) {
      programs_.push_back(stage_program(plan, s));
      collect_layers(s);
    }
    add_edges();
  }

  std::string dot() const {
    std::string out = "digraph plan {\n";
    out += fmt::format("  graph [fontname=\"Helvetica\", labelloc=t, label={}, newrank=true];\n",
                       dot_quote(summary(plan_) + "\npredicted: " + prediction(plan_)));
    out += "  node [fontname=\"Helvetica\", fontsize=11, shape=box, style=\"rounded,filled\", fillcolor=white];\n";
    out += "  edge [fontname=\"Helvetica\", fontsize=9, color=\"#555555\"];\n\n";
    for (const auto& [name, type] : inputs_)
      out += fmt::format("  {} [label={}, shape=ellipse, style=solid];\n", dot_quote("in:" + name),
                         dot_quote(name + "\n" + type.str()));
    for (size_t s = 0; s < plan_.stages.size(); ++s) out += cluster(static_cast<int>(s));
    if (!loss_from_.empty())
      out += fmt::format("  {} [label={}, shape=ellipse, style=solid];\n", dot_quote("out:loss"),
                         dot_quote(plan_.loss_stage_output));
    for (const Edge& e : edges_) {
      out += fmt::format("  {} -> {}", dot_quote(e.from), dot_quote(e.to));
      if (e.cut)
        out += fmt::format(" [style=bold, penwidth=2.5, color=\"#222222\"{}]",
                           e.label.empty() ? "" : ", label=" + dot_quote(e.label));
      else if (e.tied)
        out += fmt::format(
            " [style=dashed, dir=none, constraint=false, color=\"#888888\", fontcolor=\"#666666\", "
            "label={}]",
            dot_quote(e.label));
      out += ";\n";
    }
    if (!loss_from_.empty()) out += fmt::format("  {} -> {};\n", dot_quote(loss_from_), dot_quote("out:loss"));
    out += table();
    return out + "}\n";
  }

 private:
  struct Edge {
    std::string from, to, label;
    bool cut = false;   // a tensor sent between stages
    bool tied = false;  // the copies of a tied parameter on two stages
  };

  // The layers of a stage, in order: the plan's list, then any other layer
  // its ops name ("" for ops that name none).
  void collect_layers(const PlanStage& s) {
    std::vector<std::string> names = s.layers;
    const Function& g = programs_.back().graph();
    std::vector<int> ops_per_layer(names.size());
    for (const Op& op : g.ops) {
      std::string layer = op.layer();
      if (layer.empty() && is_source(op)) continue;  // an unlabelled parameter or constant: no node of its own
      auto it = std::find(names.begin(), names.end(), layer);
      if (it == names.end()) {
        names.push_back(layer);
        ops_per_layer.push_back(0);
        it = names.end() - 1;
      }
      ++ops_per_layer[it - names.begin()];
    }
    layers_.push_back(names);
    layer_ops_.push_back(ops_per_layer);
  }

  // The node an op of `stage` belongs to; "" for one not drawn.
  std::string node_of(int stage, int op_index) const {
    if (ops_) return fmt::format("s{}.op{}", stage, op_index);
    const Op& op = programs_[stage].graph().ops[op_index];
    std::string layer = op.layer();
    if (layer.empty() && is_source(op)) return "";
    const std::vector<std::string>& names = layers_[stage];
    return fmt::format("s{}.layer{}", stage, std::find(names.begin(), names.end(), layer) - names.begin());
  }

  // The node that produces `name` for `stage`: its own op, or, for an
  // argument, the batch input node or (following relays) the sender's op.
  std::string origin(int stage, const std::string& name, int depth = 0) const {
    const Function& g = programs_[stage].graph();
    ValueId v = g.find_value(name);
    if (v < 0 || depth > static_cast<int>(plan_.stages.size())) return "";
    if (g.values[v].def_op >= 0) return node_of(stage, g.values[v].def_op);
    for (const PlanTensor& t : plan_.stages[stage].recv)
      if (t.name == name) return origin(t.peer, name, depth + 1);
    return "in:" + name;
  }

  void add_edge(std::string from, std::string to, std::string label, bool cut, bool tied = false) {
    if (from.empty() || to.empty() || from == to) return;
    // One edge per pair of nodes and kind: tensors that cross between the
    // same two nodes share it, their labels stacked.
    auto [it, fresh] = edge_index_.emplace(std::make_tuple(from, to, cut, tied), edges_.size());
    if (!fresh) {
      std::string& merged = edges_[it->second].label;
      if (!label.empty()) merged += (merged.empty() ? "" : "\n") + label;
      return;
    }
    edges_.push_back({std::move(from), std::move(to), std::move(label), cut, tied});
  }

  // The node of the `param` op named `name` in `stage`.
  std::string param_node(int stage, const std::string& name) const {
    const Function& g = programs_[stage].graph();
    ValueId v = g.find_value(name);
    return v < 0 || g.values[v].def_op < 0 ? "" : node_of(stage, g.values[v].def_op);
  }

  void add_edges() {
    for (size_t si = 0; si < plan_.stages.size(); ++si) {
      int s = static_cast<int>(si);
      const PlanStage& stage = plan_.stages[si];
      const Function& g = programs_[si].graph();
      for (size_t i = 0; i < g.ops.size(); ++i) {
        std::string to = node_of(s, static_cast<int>(i));
        for (ValueId v : g.ops[i].operands) {
          const Value& value = g.values[v];
          if (value.def_op >= 0) {
            add_edge(node_of(s, value.def_op), to, "", false);
            continue;
          }
          const PlanTensor* received = nullptr;
          for (const PlanTensor& t : stage.recv)
            if (t.name == value.name) received = &t;
          if (received) {
            // The tensor crosses once: its first edge into the stage carries the label.
            std::string label;
            if (labelled_.insert({s, value.name}).second)
              label = fmt::format("{}\n{}\n{}", value.name, received->type.str(), bytes_text(received->type.bytes()));
            add_edge(origin(received->peer, value.name), to, label, true);
          } else {
            inputs_.emplace(value.name, g.type_of(v));
            add_edge("in:" + value.name, to, "", false);
          }
        }
      }
    }
    for (const PlanStage& stage : plan_.stages)
      for (const PlanParam& p : stage.params)
        for (int other : p.shared_with)
          if (other > stage.index)
            add_edge(param_node(stage.index, p.name), param_node(other, p.name), "tied " + p.name, false, true);
    if (!plan_.loss_stage_output.empty())
      loss_from_ = origin(static_cast<int>(plan_.stages.size()) - 1, plan_.loss_stage_output);
  }

  std::string op_label(const Function& g, const Op& op) const {
    std::string names, types;
    for (size_t r = 0; r < op.results.size(); ++r) {
      names += (r ? ", %" : "%") + g.values[op.results[r]].name;
      types += (r ? ", " : "") + g.type_of(op.results[r]).str();
    }
    return fmt::format("{} {}\n{}", op_name(op.kind), names, types);
  }

  std::string cluster(int s) const {
    const PlanStage& stage = plan_.stages[s];
    std::string out = fmt::format("  subgraph cluster_{} {{\n", s);
    out += fmt::format("    label={};\n", dot_quote(fmt::format("stage {} on {}", s, device_name(plan_, stage))));
    out +=
        fmt::format("    style=\"filled,rounded\"; fillcolor=\"{}\"; color=\"{}\";\n", stage_fill(s), stage_border(s));
    if (ops_) {
      const Function& g = programs_[s].graph();
      for (size_t i = 0; i < g.ops.size(); ++i)
        out += fmt::format("    {} [label={}];\n", dot_quote(node_of(s, static_cast<int>(i))),
                           dot_quote(op_label(g, g.ops[i])));
    } else {
      for (size_t l = 0; l < layers_[s].size(); ++l) {
        const std::string& name = layers_[s][l];
        int n = layer_ops_[s][l];
        out += fmt::format(
            "    {} [label={}];\n", dot_quote(fmt::format("s{}.layer{}", s, l)),
            dot_quote(fmt::format("{}\n{} op{}", name.empty() ? "(no layer)" : name, n, n == 1 ? "" : "s")));
      }
    }
    return out + "  }\n";
  }

  // The stage table, as a Graphviz HTML-like label.
  std::string table() const {
    std::string rows =
        "<tr><td><b>stage</b></td><td><b>device</b></td><td><b>layers</b></td><td><b>params</b></td>"
        "<td><b>fwd+bwd ms</b></td><td><b>peak mem</b></td><td><b>sent</b></td>"
        "<td><b>imbalance</b></td></tr>";
    for (const PlanStage& s : plan_.stages) {
      rows += fmt::format("<tr><td bgcolor=\"{}\">{}</td>", stage_fill(s.index), s.index);
      for (const std::string& cell :
           {device_name(plan_, s), layer_range(plan_, static_cast<size_t>(s.index)), format_count(param_count(s)), compute_ms(s),
            bytes_text(s.predicted.memory_bytes), bytes_text(s.predicted.bytes_sent), imbalance(plan_, s)})
        rows += "<td>" + html(cell) + "</td>";
      rows += "</tr>";
    }
    return fmt::format(
        "  \"stages\" [shape=plain, style=solid, label=<<table border=\"0\" cellborder=\"1\" "
        "cellspacing=\"0\" cellpadding=\"4\">{}</table>>];\n",
        rows);
  }

  const Plan& plan_;
  bool ops_;
  std::vector<Module> programs_;
  std::vector<std::vector<std::string>> layers_;  // per stage
  std::vector<std::vector<int>> layer_ops_;       // per stage, per layer: its op count
  std::map<std::string, TensorType> inputs_;      // batch inputs, by name
  std::vector<Edge> edges_;
  std::map<std::tuple<std::string, std::string, bool, bool>, size_t> edge_index_;  // into edges_
  std::set<std::pair<int, std::string>> labelled_;  // (stage, tensor) whose cut edge has its label
  std::string loss_from_;
};

}  // namespace

std::string render_plan_dot(const Plan& plan, bool ops) { return Drawing(plan, ops).dot(); }

}  // namespace pf::tools
