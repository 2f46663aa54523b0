// Cutting a model graph into pipeline stages.
#include "partitioner/stage_split.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "ir/diagnostic.h"
#include "partitioner/model_cost_graph.h"

namespace pf {

std::vector<StageModule> split_into_stages(const Module& model, const std::vector<int>& cuts,
                                           const std::vector<std::string>& whole_inputs) {
  const Function& g = model.graph();
  int n = static_cast<int>(g.ops.size());
  std::vector<int> starts = {0};
  for (int c : cuts) {
    if (c <= starts.back() || c >= n) throw Error(fmt::format("bad stage cut at op {} of {}", c, n));
    starts.push_back(c);
  }
  int stages = static_cast<int>(starts.size());
  auto stage_of_op = [&](int op) {
    return static_cast<int>(std::upper_bound(starts.begin(), starts.end(), op) - starts.begin()) - 1;
  };

  // The last stage that needs each value (the loss counts as needed at the end).
  auto users = g.users();
  std::vector<int> last_use(g.values.size(), -1);
  for (size_t v = 0; v < g.values.size(); ++v)
    for (int u : users[v]) last_use[v] = std::max(last_use[v], stage_of_op(u));
  ValueId loss = g.returns.at(0);
  last_use[loss] = stages - 1;

  std::vector<StageModule> out(static_cast<size_t>(stages));
  // What crosses boundary s (from stage s-1 to s), in definition order.
  std::vector<std::vector<ValueId>> crossing(static_cast<size_t>(stages) + 1);
  for (size_t v = 0; v < g.values.size(); ++v) {
    const Value& value = g.values[v];
    if (value.def_op < 0 || is_replicated_source(g.ops[value.def_op])) continue;
    int from = stage_of_op(value.def_op);
    for (int s = from + 1; s <= last_use[v]; ++s) crossing[s].push_back(static_cast<ValueId>(v));
  }

  for (int s = 0; s < stages; ++s) {
    int begin = starts[s], end = s + 1 < stages ? starts[s + 1] : n;
    StageModule& stage = out[s];
    Module& m = stage.module;
    m.dims = model.dims;
    Function& f = m.functions.emplace_back();
    f.is_graph = true;
    f.name = fmt::format("{}.stage{}", g.name, s);
    f.loc = g.loc;
    std::map<ValueId, ValueId> map;  // model value -> stage value

    auto add_arg = [&](ValueId v) {
      ValueId id = f.add_value(g.values[v].name, g.values[v].loc);
      f.values[id].type = g.values[v].type;
      f.args.push_back(id);
      f.arg_types.push_back(SymType::from(g.type_of(v)));
      map[v] = id;
    };
    // Model inputs the stage reads, in the model's order.
    for (size_t a = 0; a < g.args.size(); ++a) {
      ValueId v = g.args[a];
      bool used = std::any_of(users[v].begin(), users[v].end(), [&](int u) { return u >= begin && u < end; });
      if (used) {
        add_arg(v);
        stage.inputs.push_back(g.values[v].name);
        if (std::find(whole_inputs.begin(), whole_inputs.end(), g.values[v].name) != whole_inputs.end())
          stage.whole_inputs.push_back(g.values[v].name);
      }
    }
    for (ValueId v : crossing[s]) {
      add_arg(v);
      stage.recv.push_back(g.values[v].name);
    }

    auto copy_op = [&](const Op& op) {
      Op copy = op;
      for (ValueId& v : copy.operands) v = map.at(v);
      int index = static_cast<int>(f.ops.size());
      for (ValueId& r : copy.results) {
        ValueId id = f.add_value(g.values[r].name, g.values[r].loc);
        f.values[id].type = g.values[r].type;
        f.values[id].def_op = index;
        map[r] = id;
        r = id;
      }
      f.ops.push_back(std::move(copy));
    };
    // Sources used here but defined in another stage are copied first.
    for (int i = 0; i < n; ++i) {
      if (i >= begin && i < end) continue;
      const Op& op = g.ops[i];
      if (!is_replicated_source(op)) continue;
      bool used = false;
      for (ValueId r : op.results)
        for (int u : users[r]) used = used || (u >= begin && u < end);
      if (used) copy_op(op);
    }
    for (int i = begin; i < end; ++i) {
      const Op& op = g.ops[i];
      bool used = false;
      for (ValueId r : op.results) used = used || last_use[r] >= s;
      // A source nobody here uses is another stage's business.
      if (is_replicated_source(op) && !used) continue;
      copy_op(op);
    }
    // The stage's layers are those of its own range, not of the sources it
    // copied from elsewhere (a tied embedding does not make it an "embed").
    for (int i = begin; i < end; ++i) {
      std::string layer = g.ops[i].layer();
      if (!layer.empty() && std::find(stage.layers.begin(), stage.layers.end(), layer) == stage.layers.end())
        stage.layers.push_back(layer);
    }
    for (const Op& op : f.ops)
      if (op.kind == OpKind::param) stage.params.push_back(f.values[op.results[0]].name);

    auto add_result = [&](ValueId v) {
      f.returns.push_back(map.at(v));
      f.result_types.push_back(SymType::from(g.type_of(v)));
    };
    if (s == stages - 1) {
      add_result(loss);
      stage.has_loss = true;
    }
    for (ValueId v : crossing[s + 1 <= stages ? s + 1 : s]) {
      if (s + 1 >= stages) break;
      add_result(v);
      stage.send.push_back(g.values[v].name);
    }
    f.return_loc = g.return_loc;
  }
  return out;
}

AutodiffOptions stage_autodiff_options(const StageModule& stage) {
  const Function& g = stage.module.graph();
  AutodiffOptions options;
  options.outputs.clear();
  for (size_t r = 0; r < g.returns.size(); ++r)
    if (is_float(g.type_of(g.returns[r]).dtype)) options.outputs.push_back(static_cast<int>(r));
  for (const std::string& name : stage.recv)
    if (is_float(g.type_of(g.find_value(name)).dtype)) options.wrt_inputs.push_back(name);
  return options;
}

}  // namespace pf
