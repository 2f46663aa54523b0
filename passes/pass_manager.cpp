// The pass manager: runs named passes in order, verifying between them.
#include <fmt/format.h>

#include "ir/verifier.h"
#include "passes/pass.h"

namespace pf {

const std::vector<PassInfo>& known_passes() {
  static const std::vector<PassInfo> passes = {
      {"autodiff", make_autodiff_pass},
      {"cost", make_cost_pass},
      {"cse", make_cse_pass},
      {"dce", make_dce_pass},
      {"decode-step", make_decode_step_pass},
      {"expert-parallel", make_expert_parallel_pass},
      {"fuse-attention", make_fuse_attention_pass},
      {"fuse-swiglu", make_fuse_swiglu_pass},
      {"inline", make_inline_pass},
      {"shape", make_shape_pass},
      {"split-backward", make_split_backward_pass},
      {"tensor-parallel", make_tensor_parallel_pass},
  };
  return passes;
}

std::vector<std::string> split_pass_list(std::string_view list) {
  std::vector<std::string> names;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string_view::npos) comma = list.size();
    std::string name(list.substr(pos, comma - pos));
    if (name.empty()) throw Error(fmt::format("--passes: empty pass name in '{}'", list));
    names.push_back(std::move(name));
    pos = comma + 1;
  }
  return names;
}

std::vector<std::string> run_passes(Module& m, const std::vector<std::string>& names, PassContext& ctx,
                                    const PassRunOptions& options) {
  // Resolve every name first: a typo late in the list should not leave the
  // module half-transformed.
  std::vector<std::unique_ptr<Pass>> passes;
  for (const std::string& name : names) {
    const PassInfo* found = nullptr;
    for (const PassInfo& info : known_passes())
      if (info.name == name) found = &info;
    if (!found) {
      std::string known;
      for (const PassInfo& info : known_passes()) known += (known.empty() ? "" : ", ") + std::string(info.name);
      throw Error(fmt::format("unknown pass '{}'; known passes: {}", name, known));
    }
    passes.push_back(found->make());
  }
  std::vector<std::string> changed;
  for (auto& pass : passes) {
    const bool pass_changed = pass->run(m, ctx);
    if (pass_changed) changed.emplace_back(pass->name());
    if (options.after_each) options.after_each(pass->name(), pass_changed);
    if (options.verify_each) {
      try {
        verify_module(m, ctx.binding);
      } catch (const Error& e) {
        throw Error(fmt::format("after pass '{}': {}", pass->name(), e.message()), e.location());
      }
    }
  }
  return changed;
}

}  // namespace pf
