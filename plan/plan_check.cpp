// A plan checked whole before it runs: devices, stages, ranks, hand-offs, tied parameters and programs agree.
#include "plan/plan.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <optional>
#include <set>

#include "ir/diagnostic.h"
#include "ir/module.h"
#include "ir/parser.h"
#include "ir/verifier.h"

namespace pf {

namespace {

std::string tensor_text(const PlanTensor& t) { return t.name + " " + t.type.str(); }

class PlanChecker {
 public:
  PlanChecker(const Plan& plan, const JsonReader& r, std::vector<Module>* programs)
      : plan_(plan), r_(r), programs_(programs) {}

  void check() {
    check_devices();
    check_stage_numbers();
    check_ranks();
    for (const PlanStage& s : plan_.stages) check_tensor_lists(s);
    check_batch_inputs();
    for (const PlanStage& s : plan_.stages) check_received(s);
    for (const PlanStage& s : plan_.stages) check_sent(s);
    check_tied_params();
    std::vector<Module> parts;  // the stages' parts (PlanStage::shards), kept after every stage's program
    for (const PlanStage& s : plan_.stages) {
      Module m = check_programs(s);
      if (programs_) programs_->push_back(std::move(m));
      for (Module& part : check_shards(s))
        if (programs_) parts.push_back(std::move(part));
    }
    if (programs_) std::move(parts.begin(), parts.end(), std::back_inserter(*programs_));
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { r_.fail(what); }
  int stage_count() const { return static_cast<int>(plan_.stages.size()); }

  void check_devices() const {
    if (plan_.devices.empty()) fail("the plan has no devices");
    for (size_t i = 0; i < plan_.devices.size(); ++i)
      for (size_t k = 0; k < i; ++k)
        if (plan_.devices[k].name == plan_.devices[i].name)
          fail(fmt::format("devices {} and {} are both named {}", k, i, plan_.devices[i].name));
  }

  void check_stage_numbers() const {
    if (plan_.stages.empty()) fail("the plan has no stages");
    int n = stage_count();
    for (int i = 0; i < n; ++i) {
      const PlanStage& s = plan_.stages[i];
      if (s.index != i)
        fail(fmt::format("stages[{}] has index {}; stages must be numbered 0..{} in order", i, s.index, n - 1));
      int devices = static_cast<int>(plan_.devices.size());
      if (s.device >= devices)
        fail(fmt::format("stage {} runs on device {}, but the plan has {} device{} (0..{})", i, s.device, devices,
                         devices == 1 ? "" : "s", devices - 1));
    }
  }

  // The topology: ranks 0.. in order, replica after replica, each replica
  // running every stage in exactly one rank; the k-th rank of every replica
  // runs the same stages, those of replica 0 on the stages' own devices, and
  // no two ranks share a device.
  void check_ranks() const {
    if (plan_.ranks.empty()) fail("the plan has no ranks");
    if (plan_.sequence_parallel && plan_.tensor_parallel < 2)
      fail("sequence_parallel cuts the tokens over a tensor-parallel group, but the plan's tensor_parallel is 1");
    const int replicas = replica_count(plan_);
    if (plan_.expert_parallel > 1 && replicas % plan_.expert_parallel != 0)
      fail(fmt::format("expert_parallel is {}, which does not divide the {} data-parallel replicas the plan's ranks "
                       "form into groups sharing the experts out",
                       plan_.expert_parallel, replicas));
    if (plan_.expert_parallel > 1 && plan_.tensor_parallel > 1)
      fail("expert_parallel shares the experts out over replicas, and tensor_parallel cuts them over each "
           "group already: a plan has one or the other");
    const size_t places = static_cast<size_t>(plan_.tensor_parallel);
    if (plan_.ranks.size() % (static_cast<size_t>(replicas) * places) != 0)
      fail(fmt::format("{} ranks do not make {} replicas{} of equal size", plan_.ranks.size(), replicas,
                       places > 1 ? fmt::format(" of {} tensor-parallel places", places) : ""));
    const size_t per_replica = plan_.ranks.size() / static_cast<size_t>(replicas);
    const size_t per_place = per_replica / places;
    // Per (replica, place): the rank running each stage.
    std::vector<std::vector<int>> rank_of(per_replica / per_place * static_cast<size_t>(replicas),
                                          std::vector<int>(plan_.stages.size(), -1));
    std::set<std::pair<int, int>> devices;  // (device, place)
    for (size_t i = 0; i < plan_.ranks.size(); ++i) {
      const PlanRank& r = plan_.ranks[i];
      if (r.rank != static_cast<int>(i))
        fail(fmt::format("ranks[{}] has rank {}; ranks must be numbered 0..{} in order", i, r.rank,
                         plan_.ranks.size() - 1));
      if (r.replica != static_cast<int>(i / per_replica))
        fail(fmt::format("rank {} belongs to replica {}, but with {} ranks per replica it is in replica {}; list "
                         "the ranks replica after replica",
                         r.rank, r.replica, per_replica, i / per_replica));
      if (r.shard != static_cast<int>(i % per_replica / per_place))
        fail(fmt::format("rank {} has place {} in its tensor-parallel group, but with {} ranks per place it has "
                         "place {}; list the ranks place after place",
                         r.rank, r.shard, per_place, i % per_replica / per_place));
      if (r.device >= static_cast<int>(plan_.devices.size()))
        fail(fmt::format("rank {} runs device {}, but the plan has {} devices", r.rank, r.device,
                         plan_.devices.size()));
      if (!devices.insert({r.device, r.shard}).second)
        fail(fmt::format("rank {} runs device {}, which another rank runs", r.rank, r.device));
      if (r.stages.empty()) fail(fmt::format("rank {} runs no stage", r.rank));
      const PlanRank& first = plan_.ranks[i % per_place];
      if (r.stages != first.stages)
        fail(fmt::format("rank {} of replica {} runs other stages than rank {} of replica 0", r.rank, r.replica,
                         first.rank));
      std::vector<int>& owner = rank_of[i / per_place];
      for (size_t k = 0; k < r.stages.size(); ++k) {
        const int s = r.stages[k];
        if (s >= stage_count()) fail(fmt::format("rank {} runs stage {}, but the plan has {} stages", r.rank, s,
                                                 stage_count()));
        if (k > 0 && s <= r.stages[k - 1])
          fail(fmt::format("rank {} lists its stages out of order: {} after {}", r.rank, s, r.stages[k - 1]));
        if (owner[static_cast<size_t>(s)] >= 0)
          fail(fmt::format("stage {} is run by ranks {} and {}", s, owner[static_cast<size_t>(s)], r.rank));
        owner[static_cast<size_t>(s)] = r.rank;
        if (r.replica == 0 && plan_.stages[static_cast<size_t>(s)].device != r.device)
          fail(fmt::format("rank {} runs device {}, but its stage {} is placed on device {}", r.rank, r.device, s,
                           plan_.stages[static_cast<size_t>(s)].device));
      }
    }
    for (size_t s = 0; s < plan_.stages.size(); ++s)
      if (rank_of[0][s] < 0) fail(fmt::format("no rank runs stage {}", s));
    if (plan_.shard_optimizer && replicas == 1)
      fail("the optimizer state is sharded over the data-parallel replicas, but the plan has one replica");
  }

  void check_peer(const PlanStage& s, const PlanTensor& t, std::string_view verb, std::string_view dir) const {
    if (t.peer == s.index) fail(fmt::format("stage {} {} {} {} itself", s.index, verb, t.name, dir));
    if (t.peer >= stage_count())
      fail(fmt::format("stage {} {} {} {} stage {}, but the plan has {} stages", s.index, verb, t.name, dir, t.peer,
                       stage_count()));
  }

  // Names a stage's forward graph takes must be distinct; so must what it
  // sends to one peer.
  void check_tensor_lists(const PlanStage& s) const {
    std::set<std::string> inputs, received;
    for (const PlanTensor& t : s.inputs)
      if (!inputs.insert(t.name).second) fail(fmt::format("stage {} reads {} from the batch twice", s.index, t.name));
    for (const PlanTensor& t : s.recv) {
      check_peer(s, t, "receives", "from");
      if (inputs.count(t.name))
        fail(fmt::format("stage {} both reads {} from the batch and receives it", s.index, t.name));
      if (!received.insert(t.name).second) fail(fmt::format("stage {} receives {} twice", s.index, t.name));
    }
    std::set<std::pair<std::string, int>> sent;
    for (const PlanTensor& t : s.send) {
      check_peer(s, t, "sends", "to");
      if (!sent.insert({t.name, t.peer}).second)
        fail(fmt::format("stage {} sends {} to stage {} twice", s.index, t.name, t.peer));
    }
  }

  // Stages reading the same batch input read it alike: one micro-batch type,
  // split or whole; a split one has an axis to split.
  void check_batch_inputs() const {
    std::map<std::string, const PlanTensor*> first;
    for (const PlanStage& s : plan_.stages)
      for (const PlanTensor& t : s.inputs) {
        if (!t.whole && t.type.shape.empty())
          fail(fmt::format("stage {} reads {} {} split into micro-batches, but it has no axis to split; mark it "
                           "whole",
                           s.index, t.name, t.type.str()));
        auto [it, added] = first.emplace(t.name, &t);
        if (!added && (it->second->type != t.type || it->second->whole != t.whole))
          fail(fmt::format("stages read batch input {} differently: {}{} and {}{}", t.name, it->second->type.str(),
                           it->second->whole ? " whole" : "", t.type.str(), t.whole ? " whole" : ""));
      }
  }

  static const PlanTensor* find(const std::vector<PlanTensor>& list, const std::string& name, int peer) {
    for (const PlanTensor& t : list)
      if (t.name == name && t.peer == peer) return &t;
    return nullptr;
  }

  // Every tensor received is sent by its peer with the same type.
  void check_received(const PlanStage& s) const {
    for (const PlanTensor& t : s.recv) {
      const PlanStage& from = plan_.stages[t.peer];
      const PlanTensor* sent = find(from.send, t.name, s.index);
      if (!sent) {
        std::string others;
        for (const PlanTensor& o : from.send)
          if (o.name == t.name) others += (others.empty() ? "" : ", ") + std::to_string(o.peer);
        fail(fmt::format("stage {} receives {} from stage {}, but stage {} sends {}", s.index, tensor_text(t), t.peer,
                         t.peer, others.empty() ? "no " + t.name : fmt::format("{} only to stage {}", t.name, others)));
      }
      if (sent->type != t.type)
        fail(fmt::format("stage {} receives {} from stage {}, but stage {} sends {} as {}", s.index, tensor_text(t),
                         t.peer, t.peer, t.name, sent->type.str()));
    }
  }

  // Every tensor sent is received (its type was compared above).
  void check_sent(const PlanStage& s) const {
    for (const PlanTensor& t : s.send)
      if (!find(plan_.stages[t.peer].recv, t.name, s.index))
        fail(fmt::format("stage {} sends {} to stage {}, but stage {} receives no {} from stage {}", s.index,
                         tensor_text(t), t.peer, t.peer, t.name, s.index));
  }

  static const PlanParam* find_param(const PlanStage& s, const std::string& name) {
    for (const PlanParam& p : s.params)
      if (p.name == name) return &p;
    return nullptr;
  }

  static bool lists(const PlanParam& p, int stage) {
    return std::find(p.shared_with.begin(), p.shared_with.end(), stage) != p.shared_with.end();
  }

  // A parameter's name is its checkpoint key: stages holding the same name
  // hold one tied parameter, and each copy lists every other.
  void check_tied_params() const {
    std::map<std::string, std::vector<int>> holders;
    for (const PlanStage& s : plan_.stages) {
      std::set<std::string> names;
      for (const PlanParam& p : s.params) {
        if (!names.insert(p.name).second) fail(fmt::format("stage {} lists parameter {} twice", s.index, p.name));
        holders[p.name].push_back(s.index);
        for (size_t k = 0; k < p.shared_with.size(); ++k) {
          int other = p.shared_with[k];
          if (other == s.index) fail(fmt::format("stage {} shares parameter {} with itself", s.index, p.name));
          if (other >= stage_count())
            fail(fmt::format("stage {} shares parameter {} with stage {}, but the plan has {} stages", s.index, p.name,
                             other, stage_count()));
          if (k > 0 && other <= p.shared_with[k - 1])
            fail(fmt::format("stage {}: the shared_with list of parameter {} must be increasing", s.index, p.name));
          if (!find_param(plan_.stages[other], p.name))
            fail(fmt::format("stage {} shares parameter {} with stage {}, but stage {} has no parameter {}", s.index,
                             p.name, other, other, p.name));
        }
      }
    }
    for (const auto& [name, stages] : holders) {
      const PlanParam& first = *find_param(plan_.stages[stages[0]], name);
      for (int a : stages) {
        const PlanParam& pa = *find_param(plan_.stages[a], name);
        for (int b : stages) {
          if (a == b || lists(pa, b)) continue;
          if (lists(*find_param(plan_.stages[b], name), a))
            fail(
                fmt::format("stage {} shares parameter {} with stage {}, but stage {} does not list stage {} in its "
                            "shared_with",
                            b, name, a, a, b));
          fail(
              fmt::format("stages {} and {} both hold a parameter {} without listing each other in shared_with; a "
                          "parameter's name is its checkpoint key, so they must be one tied parameter or be renamed",
                          std::min(a, b), std::max(a, b), name));
        }
        if (pa.type != first.type)
          fail(fmt::format("parameter {} is {} on stage {} but {} on stage {}", name, first.type.str(), stages[0],
                           pa.type.str(), a));
        if (pa.init != first.init)
          fail(fmt::format("parameter {} is initialized with {} on stage {} but {} on stage {}", name, first.init,
                           stages[0], pa.init, a));
      }
    }
  }

  // Parses and verifies a stage's program; its errors are located in the
  // program's own text (line and column of the IR, the line quoted).
  Module program(const PlanStage& s) const {
    if (s.program.empty()) fail(fmt::format("stage {} has no program", s.index));
    try {
      Module m = stage_program(plan_, s);
      for (const Function& f : m.functions)
        for (const Op& op : f.ops)
          if (op.kind == OpKind::call)
            throw Error(fmt::format("calls @{}; stage programs must be inlined", op.callee), op.loc);
      return m;
    } catch (const Error& e) {
      std::string message = e.message();
      if (e.location().known()) {
        // render() is "name:line:col: error: message\n<line>\n<caret>\n";
        // keep the quoted line and the caret.
        std::string rendered = e.render();
        std::string quote = rendered.substr(rendered.find('\n') + 1);
        if (!quote.empty() && quote.back() == '\n') quote.pop_back();
        message = fmt::format("{}:{}: {}\n{}", e.location().line, e.location().col, message, quote);
      }
      fail(fmt::format("stage {}'s program: {}", s.index, message));
    }
  }

  static std::vector<std::string> names(const Function& f, const std::vector<ValueId>& values) {
    std::vector<std::string> out;
    for (ValueId v : values) out.push_back(f.values[v].name);
    return out;
  }

  /// `f`'s arguments or results (`what`) must be the names `want`, in order.
  void check_names(const PlanStage& s, const Function& f, const char* what, const std::vector<ValueId>& values,
                   const std::vector<std::string>& want, std::string_view meaning) const {
    const std::vector<std::string> have = names(f, values);
    if (have != want)
      fail(fmt::format("stage {}'s program: @{} {} ({}); the stage's gradient table says {}: ({})", s.index, f.name,
                       what, fmt::join(have, ", "), meaning, fmt::join(want, ", ")));
  }

  const Function& function(const PlanStage& s, const Module& m, const std::string& name, const char* role) const {
    const Function* f = m.find_function(name);
    if (!f) fail(fmt::format("stage {}'s program has no @{} ({})", s.index, name, role));
    return *f;
  }

  /// A tensor-parallel stage's parts: one per rank of the group (or none, in
  /// a plan written before they were), each program agreeing with its
  /// tables; under expert parallelism, one per block of the experts.
  std::vector<Module> check_shards(const PlanStage& s) const {
    const bool experts = plan_.expert_parallel > 1;
    const size_t t = static_cast<size_t>(experts ? plan_.expert_parallel : plan_.tensor_parallel);
    std::vector<Module> modules;
    if (s.shards.empty()) {
      if (experts)
        fail(fmt::format("stage {} holds no block of the experts, but the plan shares them out over groups of {} "
                         "replicas",
                         s.index, t));
      return modules;
    }
    if (s.shards.size() != t)
      fail(experts ? fmt::format("stage {} holds {} blocks of the experts, but the plan's expert_parallel is {}",
                                 s.index, s.shards.size(), t)
                   : fmt::format("stage {} holds the parts of {} tensor-parallel ranks, but the plan's "
                                 "tensor_parallel is {}",
                                 s.index, s.shards.size(), t));
    for (size_t r = 0; r < t; ++r) {
      try {
        modules.push_back(check_programs(shard_stage(s, static_cast<int>(r), plan_.sequence_parallel)));
      } catch (const Error& e) {
        throw Error(experts ? fmt::format("{} (in the part of the replicas holding block {} of the experts)",
                                          e.message(), r)
                            : fmt::format("{} (in the part of rank {} of its tensor-parallel group)", e.message(), r));
      }
    }
    return modules;
  }

  Module check_programs(const PlanStage& s) const {
    Module m = program(s);
    const Function& g = m.graph();

    // Arguments: exactly the batch inputs and the received tensors.
    std::map<std::string, const PlanTensor*> takes;
    for (const PlanTensor& t : s.inputs) takes[t.name] = &t;
    for (const PlanTensor& t : s.recv) takes[t.name] = &t;
    for (ValueId a : g.args) {
      const std::string& name = g.values[a].name;
      auto it = takes.find(name);
      if (it == takes.end())
        fail(fmt::format("stage {}'s program takes %{} {}, but the stage neither receives it nor reads it from the "
                         "batch",
                         s.index, name, g.type_of(a).str()));
      if (it->second->type != g.type_of(a))
        fail(fmt::format("stage {} takes {}, but its program takes %{} {}", s.index, tensor_text(*it->second), name,
                         g.type_of(a).str()));
      takes.erase(it);
    }
    if (!takes.empty())
      fail(fmt::format("stage {} takes {}, but its program has no argument %{}", s.index,
                       tensor_text(*takes.begin()->second), takes.begin()->first));

    // Sent tensors: values the graph returns as its own results (not the stash).
    const size_t own = s.gradients ? static_cast<size_t>(s.gradients->original_results) : g.returns.size();
    if (own > g.returns.size())
      fail(fmt::format("stage {}'s gradient table counts {} results, but @{} returns {}", s.index, own, g.name,
                       g.returns.size()));
    std::map<std::string, ValueId> results;
    for (size_t r = 0; r < own; ++r) results.emplace(g.values[g.returns[r]].name, g.returns[r]);
    for (const PlanTensor& t : s.send) {
      auto it = results.find(t.name);
      if (it == results.end())
        fail(fmt::format("stage {} sends {}, but its program does not return %{}", s.index, t.name, t.name));
      if (g.type_of(it->second) != t.type)
        fail(fmt::format("stage {} sends {}, but its program returns %{} {}", s.index, tensor_text(t), t.name,
                         g.type_of(it->second).str()));
    }

    // The loss: a float scalar returned by the last stage.
    const std::string& loss = plan_.loss_stage_output;
    if (s.index == stage_count() - 1 && !loss.empty()) {
      auto it = results.find(loss);
      if (it == results.end())
        fail(fmt::format("the loss is %{}, but the program of the last stage ({}) does not return it", loss, s.index));
      const TensorType& type = g.type_of(it->second);
      if (!type.is_scalar() || !is_float(type.dtype))
        fail(fmt::format("the loss %{} is {}; it must be a float scalar", loss, type.str()));
    }

    // Parameters: exactly the graph's `param` ops.
    std::map<std::string, const Op*> param_ops;
    for (const Op& op : g.ops)
      if (op.kind == OpKind::param) param_ops[g.values[op.results[0]].name] = &op;
    for (const PlanParam& p : s.params) {
      auto it = param_ops.find(p.name);
      if (it == param_ops.end())
        fail(fmt::format("stage {} lists parameter {}, but its program has no 'param' op %{}", s.index, p.name,
                         p.name));
      const TensorType& type = g.type_of(it->second->results[0]);
      if (type != p.type)
        fail(fmt::format("stage {} lists parameter {} as {}, but its program declares it {}", s.index, p.name,
                         p.type.str(), type.str()));
      std::string init = it->second->attr("init")->init.str();
      if (init != p.init)
        fail(fmt::format("stage {} lists parameter {} with init {}, but its program has init={}", s.index, p.name,
                         p.init, init));
      if (param_piece(*it->second) != p.piece)
        fail(fmt::format("stage {} lists parameter {} {}, but its program declares it {}", s.index, p.name,
                         p.piece ? "as a piece" : "whole", p.piece ? "otherwise" : "as a piece"));
      param_ops.erase(it);
    }
    if (!param_ops.empty())
      fail(fmt::format("stage {}'s program has parameter %{}, which the stage does not list", s.index,
                       param_ops.begin()->first));

    check_gradients(s, m);
    return m;
  }

  // The layout of the backward functions, which the runtime binds buffers
  // by: the graph returns its own results, then the stash; the backward
  // takes the seeds, then the stash, and returns the input gradients, then
  // the parameters'; its two parts likewise, with the deferred values
  // between them.
  void check_gradients(const PlanStage& s, const Module& m) const {
    const bool training = !plan_.loss_stage_output.empty();
    if (!s.gradients) {
      if (training)
        fail(fmt::format("stage {} has no gradients, but the plan trains (its loss is %{}); compile it again",
                         s.index, plan_.loss_stage_output));
      if (s.split) fail(fmt::format("stage {} splits a backward it does not have", s.index));
      return;
    }
    if (!training) fail(fmt::format("stage {} has gradients, but the plan has no loss to train", s.index));
    const GradientProgram& gp = *s.gradients;
    const Function& g = m.graph();
    if (gp.seeds.size() != gp.outputs.size())
      fail(fmt::format("stage {}'s gradient table has {} seeds for {} differentiated results", s.index,
                       gp.seeds.size(), gp.outputs.size()));
    for (const std::string& name : gp.input_grads)
      if (std::none_of(s.recv.begin(), s.recv.end(), [&](const PlanTensor& t) { return t.name == name; }))
        fail(fmt::format("stage {}'s gradient table differentiates %{}, which the stage does not receive", s.index,
                         name));
    std::vector<std::string> declared;  // differentiation's order of the parameters' gradients
    for (const Op& op : g.ops)
      if (op.kind == OpKind::param) declared.push_back(g.values[op.results[0]].name);
    if (gp.params != declared)
      fail(fmt::format("stage {}'s gradient table lists parameters ({}); its program declares them in the order ({})",
                       s.index, fmt::join(gp.params, ", "), fmt::join(declared, ", ")));
    std::vector<std::string> returns = names(g, {g.returns.begin(), g.returns.begin() + gp.original_results});
    returns.insert(returns.end(), gp.stash.begin(), gp.stash.end());
    check_names(s, g, "returns", g.returns, returns, "its results, then the stash");

    std::vector<std::string> args = gp.seeds;
    args.insert(args.end(), gp.stash.begin(), gp.stash.end());
    const Function& backward = function(s, m, gp.backward, "the backward");
    check_names(s, backward, "takes", backward.args, args, "the seeds, then the stash");
    check_param_grads(s, backward, gp.input_grads.size(), gp.params);
    // Sequence parallelism gathers a column product's input again under every setting.
    const auto chosen = std::count_if(gp.recomputed.begin(), gp.recomputed.end(), [&](const std::string& name) {
      const ValueId v = g.find_value(name);
      return v < 0 || g.values[v].def_op < 0 || g.ops[g.values[v].def_op].kind != OpKind::tp_all_gather;
    });
    if (plan_.recompute == "none" && chosen > 0)
      fail(fmt::format("stage {}'s gradient table recomputes {} values, but the plan recomputes none", s.index,
                       chosen));
    for (const std::string& name : gp.recomputed)
      if (g.find_value(name) < 0 || backward.find_value(name) < 0)
        fail(fmt::format("stage {}'s gradient table recomputes %{}, which its forward and backward do not both compute",
                         s.index, name));

    if (schedule_splits_backward(plan_.schedule, plan_.schedule_actions) != s.split.has_value())
      fail(fmt::format("stage {} {} its backward, but schedule {} runs it {}", s.index,
                       s.split ? "splits" : "does not split", plan_.schedule, s.split ? "whole" : "in two parts"));
    if (!s.split) return;
    const BackwardSplit& split = *s.split;
    const Function& input = function(s, m, split.input, "the backward's input part");
    check_names(s, input, "takes", input.args, args, "the seeds, then the stash");
    if (input.returns.size() != gp.input_grads.size() + split.deferred.size())
      fail(fmt::format("stage {}'s program: @{} returns {} values; the stage's gradient table says {} input "
                       "gradients, then {} deferred values",
                       s.index, input.name, input.returns.size(), gp.input_grads.size(), split.deferred.size()));
    std::vector<std::string> weight_args = args;
    weight_args.insert(weight_args.end(), split.deferred.begin(), split.deferred.end());
    const Function& weight = function(s, m, split.weight, "the backward's weight part");
    check_names(s, weight, "takes", weight.args, weight_args, "the seeds, the stash, then the deferred values");
    check_param_grads(s, weight, 0, gp.params);
  }

  /// `f`'s results from `first` on: one per parameter of `params`, of its type.
  void check_param_grads(const PlanStage& s, const Function& f, size_t first,
                         const std::vector<std::string>& params) const {
    if (f.returns.size() != first + params.size())
      fail(fmt::format("stage {}'s program: @{} returns {} values; the stage's gradient table says {}", s.index,
                       f.name, f.returns.size(), first + params.size()));
    for (size_t p = 0; p < params.size(); ++p) {
      auto it = std::find_if(s.params.begin(), s.params.end(), [&](const PlanParam& q) { return q.name == params[p]; });
      if (it == s.params.end())
        fail(fmt::format("stage {}'s gradient table names parameter {}, which the stage does not list", s.index,
                         params[p]));
      const TensorType& type = f.type_of(f.returns[first + p]);
      if (type.shape != it->type.shape)
        fail(fmt::format("stage {}'s program: @{} returns {} as the gradient of {} {}", s.index, f.name, type.str(),
                         params[p], it->type.str()));
    }
  }

  const Plan& plan_;
  const JsonReader& r_;
  std::vector<Module>* programs_;
};

}  // namespace

void check_plan(const Plan& plan, const std::string& path, std::vector<Module>* programs) {
  if (programs) programs->clear();
  PlanChecker(plan, JsonReader(path), programs).check();
}

Module stage_program(const Plan& plan, const PlanStage& stage) {
  Module m = parse_module_text(fmt::format("stage {} program", stage.index), stage.program);
  DimBinding binding = m.binding();
  for (auto& [dim, value] : binding)
    if (auto it = plan.binding.find(dim); it != plan.binding.end()) value = it->second;
  verify_module(m, binding);
  return m;
}

}  // namespace pf
