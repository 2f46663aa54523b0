// `pipeforge run MODEL.pf`: train a model on one CPU device.
#include <fmt/format.h>

#include <chrono>
#include <iostream>
#include <memory>

#include "backends/cpu/blas.h"
#include "ir/printer.h"
#include "ir/verifier.h"
#include "ir/units.h"
#include "runtime/dataset.h"
#include "runtime/safetensors.h"
#include "runtime/trainer.h"
#include "tools/command.h"

namespace pf::tools {

namespace {

struct RunOptions {
  std::string file;
  std::string bind;
  int64_t steps = 10;
  int64_t batch = 0;
  TrainerOptions train;
  std::string text, init_from, data, save_grads, save_weights;
  int threads = 1;
  bool lr_given = false;
};

/// Where a step's inputs come from: a fixed batch from a file, or a dataset.
class BatchSource {
 public:
  BatchSource(const RunOptions& o, const Function& g, uint64_t seed) {
    for (ValueId a : g.args) {
      types_.push_back(g.type_of(a));
      names_.push_back(g.values[a].name);
    }
    for (const TensorType& t : types_) buffers_.emplace_back(static_cast<size_t>(t.bytes()));
    if (!o.data.empty()) {
      SafeTensors file = SafeTensors::read(o.data);
      std::vector<std::pair<std::string, TensorType>> expected;
      for (size_t i = 0; i < types_.size(); ++i) expected.emplace_back(names_[i], types_[i]);
      check_tensors(file, expected, o.data);
      for (size_t i = 0; i < types_.size(); ++i) {
        const TensorData& t = file.at(names_[i]);
        std::copy(t.bytes.begin(), t.bytes.end(), buffers_[i].begin());
      }
      return;
    }
    auto is = [&](size_t i, DType dt, size_t rank) {
      return i < types_.size() && types_[i].dtype == dt && types_[i].rank() == static_cast<int64_t>(rank);
    };
    if (types_.size() == 2 && is(0, DType::i32, 2) && is(1, DType::i32, 2)) {
      if (o.text.empty())
        throw Error(fmt::format("@{} reads tokens: give it a text file with --text FILE (or a batch with --data)",
                                g.name));
      const Shape& s = types_[0].shape;
      dataset_ = std::make_unique<ByteTextDataset>(o.text, s[0], s[1], seed);
      tokens_per_batch_ = s[0] * s[1];
    } else if (types_.size() == 2 && is(0, DType::f32, 2) && is(1, DType::i32, 1)) {
      int64_t classes = 0;
      for (const Op& op : g.ops)
        if (op.kind == OpKind::cross_entropy) classes = g.type_of(op.operands[0]).shape.back();
      dataset_ = std::make_unique<SeparableDataset>(types_[0].shape[1], classes, types_[0].shape[0], seed);
    } else if (types_.size() == 2 && is(0, DType::f32, 4) && is(1, DType::i32, 1) &&
               types_[0].shape == Shape{types_[0].shape[0], 3, 32, 32}) {
      dataset_ = std::make_unique<GratingImageDataset>(types_[0].shape[0], seed);
    } else {
      throw Error(fmt::format("no built-in data fits @{}'s inputs; give a batch with --data D.safetensors", g.name));
    }
    if (!o.text.empty() && tokens_per_batch_ == 0)
      throw Error(fmt::format("--text: @{} does not read tokens (two i32[B,T] inputs)", g.name));
  }

  std::vector<const void*> next() {
    if (dataset_) {
      std::vector<void*> out;
      for (auto& b : buffers_) out.push_back(b.data());
      dataset_->next_batch(out);
    }
    std::vector<const void*> in;
    for (auto& b : buffers_) in.push_back(b.data());
    return in;
  }

  int64_t samples() const { return types_.empty() || types_[0].shape.empty() ? 1 : types_[0].shape[0]; }
  int64_t tokens() const { return tokens_per_batch_; }

 private:
  std::vector<TensorType> types_;
  std::vector<std::string> names_;
  std::vector<std::vector<std::byte>> buffers_;
  std::unique_ptr<Dataset> dataset_;
  int64_t tokens_per_batch_ = 0;
};

void run_model(const RunOptions& o) {
  cpu::set_blas_threads(o.threads);
  LoadedModel model = load_model(o.file, o.bind, true);
  if (o.batch > 0) bind_batch(model, o.batch);
  TrainerOptions train = o.train;
  train.steps = o.steps;
  if (!o.lr_given && train.optimizer == "adamw") train.lr = 1e-3;
  Trainer trainer(std::move(model.module), model.binding, train);
  if (!o.init_from.empty()) {
    trainer.params().load_values(SafeTensors::read(o.init_from), o.init_from);
  } else {
    trainer.params().initialize(train.seed);
  }
  trainer.start();
  BatchSource source(o, trainer.graph(), train.seed);
  std::cout << fmt::format("training @{}: {} parameters, {} steps, {} lr {}, {} thread{}\n", trainer.graph().name,
                           format_count(trainer.params().numel()), o.steps, train.optimizer, format_real(train.lr),
                           o.threads, o.threads == 1 ? "" : "s");
  for (int64_t step = 1; step <= o.steps; ++step) {
    auto start = std::chrono::steady_clock::now();
    std::vector<const void*> inputs = source.next();
    StepResult r = trainer.compute_gradients(inputs);
    if (step == 1 && !o.save_grads.empty()) {
      SafeTensors grads;
      trainer.params().save_grads(grads);
      grads.write(o.save_grads);
    }
    trainer.apply(r);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::string rate = source.tokens() > 0
                           ? fmt::format("{} tokens/s", format_count(static_cast<int64_t>(source.tokens() / seconds)))
                           : fmt::format("{} samples/s", format_count(static_cast<int64_t>(source.samples() / seconds)));
    std::cout << fmt::format("step {:>5}  loss {:.6f}{}  |g| {:.4g}  lr {:.3g}  {:.1f} ms  {}\n", step, r.loss,
                             r.accuracy ? fmt::format("  acc {:.3f}", *r.accuracy) : "", r.grad_norm, r.lr,
                             seconds * 1e3, rate);
    if (!std::isfinite(r.grad_norm)) std::cout << "  (gradient is not finite: step skipped)\n";
  }
  if (!o.save_weights.empty()) {
    SafeTensors weights;
    trainer.params().save_values(weights);
    weights.write(o.save_weights);
    std::cout << fmt::format("wrote {}\n", o.save_weights);
  }
}

}  // namespace

void add_run_command(CLI::App& app) {
  auto o = std::make_shared<RunOptions>();
  CLI::App* cmd = app.add_subcommand("run", "train a model on one CPU device, printing one line per step");
  cmd->add_option("file", o->file, "model file (.pf)")->required();
  add_bind_option(*cmd, o->bind);
  cmd->add_option("--steps", o->steps, "training steps")->check(CLI::PositiveNumber);
  cmd->add_option("--batch", o->batch, "batch size (binds the first input's leading dimension)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--optimizer", o->train.optimizer, "sgd or adamw")->check(CLI::IsMember({"sgd", "adamw"}));
  cmd->add_option("--lr", o->train.lr, "learning rate (default 0.01 for sgd, 0.001 for adamw)")
      ->each([o](const std::string&) { o->lr_given = true; });
  cmd->add_option("--momentum", o->train.momentum, "sgd momentum");
  cmd->add_option("--weight-decay", o->train.weight_decay, "decoupled weight decay (matrices only)");
  cmd->add_option("--clip", o->train.clip, "clip gradients to this global norm (0: off)");
  cmd->add_option("--warmup", o->train.warmup, "linear warm-up steps, then cosine decay to lr/10");
  cmd->add_flag("--cosine", o->train.cosine, "cosine decay to lr/10 over the run");
  cmd->add_option("--seed", o->train.seed, "seed of the initial weights and of the data");
  cmd->add_option("--text", o->text, "train a token model on the bytes of this file");
  cmd->add_option("--init-from", o->init_from, "load every parameter from this safetensors file");
  cmd->add_option("--data", o->data, "use this batch (safetensors, by input name) at every step");
  cmd->add_option("--save-grads", o->save_grads, "write the first step's gradients here (safetensors)");
  cmd->add_option("--save-weights", o->save_weights, "write the trained weights here (safetensors)");
  cmd->add_option("--threads", o->threads, "BLAS threads")->check(CLI::PositiveNumber);
  cmd->callback([o] { run_model(*o); });
}

}  // namespace pf::tools
