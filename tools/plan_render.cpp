// Plan pictures (Graphviz) and tables (text).
#include "tools/plan_render.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "ir/diagnostic.h"
#include "ir/units.h"

extern char** environ;

namespace pf::tools {

namespace {

// ---------------------------------------------------------------------------
// What the table and the text show per stage.

// Whether stage `s` begins inside a layer that the stage before it began:
// the compiler cut between two ops of that layer.
bool begins_inside_layer(const Plan& plan, size_t s) {
  if (s == 0 || s >= plan.stages.size()) return false;
  const PlanStage &before = plan.stages[s - 1], &stage = plan.stages[s];
  return !before.layers.empty() && !stage.layers.empty() && before.layers.back() == stage.layers.front() &&
         !stage.layers.front().empty();
}

// "embed..h.2", with the part of a layer split between stages marked:
// "embed..part of h.2", "rest of h.2..head".
std::string layer_range(const Plan& plan, size_t index) {
  const PlanStage& s = plan.stages[index];
  if (s.layers.empty()) return "-";
  std::string first = s.layers.front(), last = s.layers.back();
  const bool rest = begins_inside_layer(plan, index), part = begins_inside_layer(plan, index + 1);
  if (s.layers.size() == 1) {
    if (rest && part) return "middle of " + first;
    return (rest ? "rest of " : part ? "part of " : "") + first;
  }
  if (rest) first.insert(0, "rest of ");
  if (part) last.insert(0, "part of ");
  return first + ".." + last;
}

int64_t param_count(const PlanStage& s) {
  int64_t n = 0;
  for (const PlanParam& p : s.params) n += p.type.numel();
  return n;
}

// How far the time of a stage's device (its stages together) is from the
// mean device's, in percent: the plan's imbalance is the largest of these.
// With one stage per device, the stage's own time against the mean stage's.
std::string imbalance(const Plan& plan, const PlanStage& s) {
  std::map<int, double> busy;
  double total = 0;
  for (const PlanStage& t : plan.stages) {
    busy[t.device] += t.predicted.time_s;
    total += t.predicted.time_s;
  }
  const double mean = total / static_cast<double>(busy.size());
  if (mean <= 0) return "-";
  return fmt::format("{:+.1f}%", 100 * (busy[s.device] - mean) / mean);
}

std::string device_name(const Plan& plan, const PlanStage& s) { return plan.devices[s.device].name; }

std::string compute_ms(const PlanStage& s) {
  return fmt::format("{:.3f}", 1e3 * (s.predicted.forward_s + s.predicted.backward_s));
}

std::string bytes(int64_t n) { return format_bytes(static_cast<double>(n)); }

// "1 stage", "4 stages".
std::string count(size_t n, std::string_view noun, std::string_view plural) {
  return fmt::format("{} {}", n, n == 1 ? noun : plural);
}

std::string summary(const Plan& plan) {
  const int replicas = replica_count(plan);
  return fmt::format("@{}: {} on {}, {}{}, {}", plan.model_name, count(plan.stages.size(), "stage", "stages"),
                     count(plan.devices.size(), "device", "devices"),
                     replicas > 1 ? fmt::format("{} data-parallel replicas{}, ", replicas,
                                                plan.shard_optimizer ? " sharing the optimizer state" : "")
                                  : "",
                     plan.schedule,
                     count(static_cast<size_t>(plan.microbatches), "micro-batch", "micro-batches")) +
         (plan.virtual_stages > 1 ? fmt::format(", {} virtual stages", plan.virtual_stages) : "") +
         (plan.tensor_parallel > 1 ? fmt::format(", {} GPUs per device (tensor parallel, modelled)",
                                                 plan.tensor_parallel)
                                   : "") +
         (plan.dtype != DType::f32 ? fmt::format(", {}", dtype_name(plan.dtype)) : "");
}

std::string prediction(const Plan& plan) {
  const Plan::Summary& p = plan.predicted;
  return fmt::format("period {:.3f} ms per micro-batch, imbalance {:.1f}%, bubble {:.1f}%, speedup {:.2f}x vs "
                     "equal layers, {:.2f}x vs equal params",
             1e3 * p.period_s, p.imbalance_pct, 100 * p.bubble_fraction, p.speedup_vs_equal_layers,
             p.speedup_vs_equal_params) +
         // Plans written before these were predicted have zeros.
         (p.step_s > 0 ? fmt::format("; step {}, MFU {:.1f}%", format_seconds(p.step_s), 100 * p.mfu) : "");
}

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
              label = fmt::format("{}\n{}\n{}", value.name, received->type.str(), bytes(received->type.bytes()));
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
            bytes(s.predicted.memory_bytes), bytes(s.predicted.bytes_sent), imbalance(plan_, s)})
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

// ---------------------------------------------------------------------------
// Running Graphviz.

// A directory removed with everything in it when the scope ends.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "pipeforge-dump-XXXXXX").string();
    if (!::mkdtemp(pattern.data()))
      throw Error(fmt::format("cannot create a temporary directory: {}", std::strerror(errno)));
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const char* name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

std::string render_plan_dot(const Plan& plan, bool ops) { return Drawing(plan, ops).dot(); }

std::string render_plan_text(const Plan& plan) {
  std::vector<std::vector<std::string>> rows = {
      {"stage", "device", "layers", "params", "fwd+bwd ms", "peak mem", "sent", "imbalance"}};
  for (const PlanStage& s : plan.stages)
    rows.push_back({std::to_string(s.index), device_name(plan, s), layer_range(plan, static_cast<size_t>(s.index)),
                    format_count(param_count(s)),
                    compute_ms(s), bytes(s.predicted.memory_bytes), bytes(s.predicted.bytes_sent), imbalance(plan, s)});
  std::vector<size_t> width(rows[0].size());
  for (const auto& row : rows)
    for (size_t c = 0; c < row.size(); ++c) width[c] = std::max(width[c], row[c].size());
  // Text columns to the left, numbers to the right.
  constexpr bool kLeft[] = {false, true, true, false, false, false, false, false};
  std::string out = "plan for " + summary(plan) + "\npredicted: " + prediction(plan) + "\n\n";
  for (const auto& row : rows) {
    std::string line;
    for (size_t c = 0; c < row.size(); ++c)
      line += (c ? "  " : "") +
              (kLeft[c] ? fmt::format("{:<{}}", row[c], width[c]) : fmt::format("{:>{}}", row[c], width[c]));
    while (!line.empty() && line.back() == ' ') line.pop_back();
    out += line + "\n";
  }
  for (size_t s = 1; s < plan.stages.size(); ++s)
    if (begins_inside_layer(plan, s)) {
      std::vector<std::string> sent;
      for (const PlanTensor& t : plan.stages[s - 1].send) sent.push_back(t.name);
      out += fmt::format("layer {} is cut between stages {} and {}, which hand over {}\n", plan.stages[s].layers.front(),
                         s - 1, s, fmt::join(sent, ", "));
    }
  // A product split between stages: which rows of its weight each holds.
  std::map<std::string, std::vector<std::string>> pieces;
  for (const PlanStage& s : plan.stages)
    for (const PlanParam& p : s.params)
      if (p.piece)
        pieces[p.piece->whole].push_back(
            fmt::format("rows {}..{} on stage {}", p.piece->begin, p.piece->end, s.index));
  for (const auto& [whole, where] : pieces)
    out += fmt::format("parameter {} is split by rows: {}\n", whole, fmt::join(where, ", "));
  // Recomputation: what each stage's backward computes again instead of stashing.
  std::vector<std::string> recomputed;
  for (const PlanStage& s : plan.stages)
    if (s.gradients && !s.gradients->recomputed.empty())
      recomputed.push_back(fmt::format("stage {}: {}", s.index, s.gradients->recomputed.size()));
  if (!recomputed.empty())
    out += fmt::format("the backward computes forward values again instead of stashing them ({})\n",
                       fmt::join(recomputed, ", "));
  if (replica_count(plan) > 1) {
    // Who runs what: each stage's copies average their gradients after the
    // step (predicted: their share per micro-batch).
    out += "\nranks (rank: device, replica, stages):\n";
    for (const PlanRank& r : plan.ranks)
      out += fmt::format("  {}: {}, replica {}, stage{} {}\n", r.rank, plan.devices[static_cast<size_t>(r.device)].name,
                         r.replica, r.stages.size() == 1 ? "" : "s", fmt::join(r.stages, ","));
    for (const PlanStage& s : plan.stages) {
      std::vector<int> copies;
      for (int k = 0; k < replica_count(plan); ++k) copies.push_back(rank_of_stage(plan, s.index, k));
      out += fmt::format("  stage {} all-reduces its gradients over ranks {} ({:.3f} ms per micro-batch)\n", s.index,
                         fmt::join(copies, ","), 1e3 * s.predicted.sync_s);
    }
  }
  for (const PlanStage& s : plan.stages) {
    out += fmt::format("\nstage {} on {}:\n", s.index, device_name(plan, s));
    // Batch inputs are sliced per micro-batch; only the exceptions are listed.
    for (const PlanTensor& t : s.inputs)
      if (t.whole) out += fmt::format("  input {} {} whole: every micro-batch reads all of it\n", t.name, t.type.str());
    if (s.recv.empty() && s.send.empty()) out += "  no cut tensors\n";
    for (const PlanTensor& t : s.recv)
      out += fmt::format("  recv {} {} ({}) from stage {}\n", t.name, t.type.str(), bytes(t.type.bytes()), t.peer);
    for (const PlanTensor& t : s.send)
      out += fmt::format("  send {} {} ({}) to stage {}\n", t.name, t.type.str(), bytes(t.type.bytes()), t.peer);
  }
  return out;
}

std::string dot_to_svg(const std::string& dot_text) {
  TempDir dir;
  std::string in = dir.file("plan.dot"), out = dir.file("plan.svg"), err = dir.file("dot.err");
  {
    std::ofstream f(in, std::ios::binary);
    f << dot_text;
    if (!f.flush()) throw Error("cannot write the temporary file '" + in + "'");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<std::string> args = {"dot", "-Tsvg", "-o", out, in};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  int rc = posix_spawnp(&pid, "dot", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc == ENOENT)
    throw Error(
        "cannot draw SVG: Graphviz's 'dot' is not on the PATH; install the graphviz package "
        "(scripts/setup.sh does) or use --format dot");
  if (rc != 0) throw Error(fmt::format("cannot run Graphviz's 'dot': {}", std::strerror(rc)));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) throw Error(fmt::format("waiting for Graphviz's 'dot' failed: {}", std::strerror(errno)));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string message = read_all(err);
    while (!message.empty() && (message.back() == '\n' || message.back() == '\r')) message.pop_back();
    std::string how = WIFEXITED(status) ? fmt::format("exit status {}", WEXITSTATUS(status))
                                        : fmt::format("signal {}", WTERMSIG(status));
    throw Error(fmt::format("Graphviz's 'dot -Tsvg' failed ({}){}", how, message.empty() ? "" : ": " + message));
  }
  return read_all(out);
}

}  // namespace pf::tools
