// Training works: models converge on one CPU device, and its threads change no bit of a step.
#include <gtest/gtest.h>

#include <cstring>

#include "backends/cpu/blas.h"

#include "ir/parser.h"
#include "runtime/dataset.h"
#include "runtime/random_batch.h"
#include "tests/oracle/trainer.h"

namespace pf {
namespace {

Module example(const char* name) {
  return parse_module(read_source_file(std::string(PF_SOURCE_DIR) + "/examples/" + name));
}

std::vector<const void*> pointers(std::vector<std::vector<std::byte>>& buffers) {
  std::vector<const void*> out;
  for (auto& b : buffers) out.push_back(b.data());
  return out;
}

std::vector<std::vector<std::byte>> buffers_for(const Dataset& d) {
  std::vector<std::vector<std::byte>> out;
  for (const auto& [name, type] : d.inputs()) out.emplace_back(static_cast<size_t>(type.bytes()));
  return out;
}

void next(Dataset& d, std::vector<std::vector<std::byte>>& buffers) {
  std::vector<void*> out;
  for (auto& b : buffers) out.push_back(b.data());
  d.next_batch(out);
}

TEST(Training, MlpLearnsASeparableTask) {
  Module m = example("mlp.pf");
  DimBinding binding = m.binding({{"B", 64}, {"I", 32}, {"H", 64}, {"L", 1}, {"K", 4}});
  TrainingOptions options;
  options.optimizer = "adamw";
  options.lr = 3e-3;
  options.steps = 1000;
  Trainer trainer(std::move(m), binding, options);
  trainer.params().initialize(1);
  trainer.start();
  SeparableDataset train(32, 4, 64, /*seed=*/5, /*stream=*/0), held_out(32, 4, 64, 5, /*stream=*/1);
  auto batch = buffers_for(train);
  for (int step = 0; step < options.steps; ++step) {
    next(train, batch);
    StepResult r = trainer.compute_gradients(pointers(batch));
    trainer.apply(r);
  }
  double correct = 0;
  for (int i = 0; i < 8; ++i) {
    next(held_out, batch);
    correct += *trainer.compute_gradients(pointers(batch)).accuracy;
  }
  EXPECT_GE(correct / 8, 0.95);
}

TEST(Training, TinyGptLearnsBytesOfText) {
  Module m = example("gpt.pf");
  DimBinding binding = m.binding({{"B", 16}, {"T", 64}, {"S", 64}, {"C", 64}, {"H", 4}, {"L", 2}, {"V", 256}});
  TrainingOptions options;
  options.optimizer = "adamw";
  options.lr = 2e-3;
  options.warmup = 20;
  options.steps = 300;
  Trainer trainer(std::move(m), binding, options);
  trainer.params().initialize(1);
  trainer.start();
  // The GPL's text ships with every Debian system (package base-files).
  ByteTextDataset text("/usr/share/common-licenses/GPL-3", 16, 64, 7);
  auto batch = buffers_for(text);
  double first = 0, last = 0;
  for (int step = 0; step < options.steps; ++step) {
    next(text, batch);
    StepResult r = trainer.compute_gradients(pointers(batch));
    trainer.apply(r);
    if (step == 0) first = r.loss;
    if (step >= options.steps - 20) last += r.loss / 20;
  }
  EXPECT_NEAR(first, std::log(256.0), 0.1);  // uniform over bytes at the start
  EXPECT_LT(last, 2.5);
}

// Two threads split GEMMs by whole columns, run a layer's two gradient GEMMs
// side by side and split the elementwise loops: none of it may change a bit
// of the loss or of any gradient (sizes chosen so that every path is taken).
TEST(Training, TwoThreadsComputeTheBitsOfOne) {
  auto gradients = [](int threads) {
    cpu::set_cpu_threads(threads);
    Module m = example("gpt.pf");
    DimBinding binding = m.binding({{"B", 4}, {"T", 128}, {"S", 128}, {"C", 128}, {"H", 4}, {"L", 2}, {"V", 512}});
    TrainingOptions options;
    options.optimizer = "sgd";
    Trainer trainer(std::move(m), binding, options);
    trainer.params().initialize(3);
    trainer.start();
    const RandomBatch batch = random_batch(trainer.graph(), 11, 512);
    std::vector<float> out{static_cast<float>(trainer.compute_gradients(batch.pointers).loss)};
    for (const auto& e : trainer.params().entries()) out.insert(out.end(), e.grad.begin(), e.grad.end());
    cpu::set_cpu_threads(1);
    return out;
  };
  const std::vector<float> one = gradients(1), two = gradients(2);
  ASSERT_EQ(one.size(), two.size());
  EXPECT_EQ(one[0], two[0]) << "loss";
  EXPECT_EQ(std::memcmp(one.data(), two.data(), one.size() * sizeof(float)), 0);
}

}  // namespace
}  // namespace pf
