// A user program embedding the Pipeforge runtime: train a compiled plan on a
// synthetic batch, save a checkpoint, load it into a second runtime and check
// that both go on with the same numbers.
//
//   embed PLAN.json [STEPS] [CHECKPOINT]
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ir/diagnostic.h"
#include "runtime/runtime.h"

namespace {

// One fixed batch for the plan's inputs: floats in [-1, 1) from a small
// linear congruential generator (no state shared with anything else), and
// integers (labels, token ids) in {0, 1}, valid for any classifier or
// vocabulary. The same batch every step: the loss must fall.
struct SyntheticBatch {
  std::vector<std::vector<unsigned char>> storage;
  pf::Runtime::Batch batch;

  explicit SyntheticBatch(const pf::Runtime& rt) {
    uint32_t state = 12345;
    auto next = [&state] {
      state = state * 1664525u + 1013904223u;
      return state >> 8;  // 24 random bits
    };
    for (const auto& [name, type] : rt.batch_inputs()) {
      std::vector<unsigned char> bytes(static_cast<size_t>(type.bytes()));
      int64_t n = type.numel();
      if (type.dtype == pf::DType::f32) {
        for (int64_t i = 0; i < n; ++i) {
          float v = static_cast<float>(next()) / static_cast<float>(1u << 24) * 2.0f - 1.0f;
          std::memcpy(bytes.data() + i * sizeof v, &v, sizeof v);
        }
      } else if (type.dtype == pf::DType::i32) {
        for (int64_t i = 0; i < n; ++i) {
          int32_t v = static_cast<int32_t>(next() & 1u);
          std::memcpy(bytes.data() + i * sizeof v, &v, sizeof v);
        }
      } else {
        throw pf::Error("input '" + name + "' is " + type.str() + "; this example makes f32 and i32 inputs only");
      }
      storage.push_back(std::move(bytes));
    }
    auto inputs = rt.batch_inputs();
    for (size_t i = 0; i < inputs.size(); ++i) batch.inputs.emplace_back(inputs[i].first, storage[i].data());
  }
};

int run(const std::string& plan, int steps, const std::string& checkpoint) {
  pf::RuntimeOptions options;
  options.train.lr = 1e-3;
  options.train.steps = steps + 1;
  pf::Runtime rt = pf::Runtime::load(plan, options);
  std::printf("loaded %s: %d stages on %d devices\n", plan.c_str(), rt.stages(), rt.devices());
  for (const auto& [name, type] : rt.batch_inputs()) std::printf("input %s: %s\n", name.c_str(), type.str().c_str());

  rt.initialize(42);
  SyntheticBatch data(rt);
  for (int s = 1; s <= steps; ++s) {
    double loss = rt.train_step(data.batch);
    std::printf("step %d loss %.6f grad_norm %.4g bubble %.1f%%\n", s, loss, rt.last_step().grad_norm,
                100 * rt.last_step().bubble);
  }
  rt.save_checkpoint(checkpoint);
  std::printf("saved %s at step %lld\n", checkpoint.c_str(), static_cast<long long>(rt.step()));

  // A second runtime from the checkpoint: same evaluation loss, and one more
  // training step gives the same loss bit for bit.
  pf::Runtime resumed = pf::Runtime::load(plan, options);
  resumed.load_checkpoint(checkpoint);
  double eval_a = rt.forward(data.batch), eval_b = resumed.forward(data.batch);
  double next_a = rt.train_step(data.batch), next_b = resumed.train_step(data.batch);
  if (resumed.step() != rt.step() || eval_a != eval_b || next_a != next_b) {
    std::fprintf(stderr, "checkpoint round trip: mismatch (step %lld vs %lld, eval %.9g vs %.9g, next %.9g vs %.9g)\n",
                 static_cast<long long>(rt.step()), static_cast<long long>(resumed.step()), eval_a, eval_b, next_a,
                 next_b);
    return 1;
  }
  std::printf("checkpoint round trip: ok (step %lld, eval loss %.6f, next loss %.6f)\n",
              static_cast<long long>(resumed.step()), eval_b, next_b);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 4) {
    std::fprintf(stderr, "usage: %s PLAN.json [STEPS] [CHECKPOINT]\n", argv[0]);
    return 2;
  }
  int steps = argc > 2 ? std::atoi(argv[2]) : 5;
  if (steps < 1) {
    std::fprintf(stderr, "STEPS must be a positive integer, not '%s'\n", argv[2]);
    return 2;
  }
  std::string checkpoint = argc > 3 ? argv[3] : "embed_checkpoint";
  try {
    return run(argv[1], steps, checkpoint);
  } catch (const pf::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.message().c_str());
    return 1;
  }
}
