// `pipeforge sample`: text from a trained language model, one token at a time, on one CPU device.
#include <fmt/format.h>

#include <chrono>
#include <iostream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/cpu/blas.h"
#include "ir/diagnostic.h"
#include "tools/command.h"
#include "tools/language_model.h"
#include "tools/option_checks.h"

namespace pf::tools {

namespace {

struct SampleOptions {
  std::string file;
  std::string bind;
  std::string weights;
  std::vector<std::string> prompts;  // a new line when none is given
  bool ids = false;
  Generation generation;  // --tokens 200 unless given
  std::vector<std::string> stop;
  int threads = 1;
  bool no_cache = false;
};

/// `text` given to `flag` as token ids: its bytes, or with --ids the ids it
/// lists; each checked against the vocabulary, and `if_empty` said where
/// there are none.
std::vector<int32_t> token_ids(const std::string& text, const char* flag, const char* if_empty, bool ids,
                               int64_t vocabulary, const std::string& model) {
  std::vector<int32_t> out;
  if (ids) {
    for (int id : parse_int_list(text, flag)) out.push_back(id);
  } else {
    for (char c : text) out.push_back(static_cast<unsigned char>(c));
  }
  if (out.empty()) throw Error(fmt::format("{} is empty: {}", flag, if_empty));
  for (size_t i = 0; i < out.size(); ++i)
    if (out[i] < 0 || out[i] >= vocabulary)
      throw Error(fmt::format("{}: {} {} (at {}) is not in @{}'s vocabulary of {} ids{}", flag, ids ? "id" : "byte",
                              out[i], i, model, vocabulary,
                              ids ? "" : "; a model of token ids other than bytes takes --ids"));
  return out;
}

void print_token(int64_t token, bool ids, bool first) {
  if (ids)
    std::cout << (first ? "" : " ") << token;
  else
    std::cout.put(static_cast<char>(token));
}

void sample(const SampleOptions& o) {
  if (o.file.ends_with(".json"))
    throw Error(fmt::format("{}: sample runs a model (.pf) on one CPU device; give the model the plan was compiled "
                            "from, with the plan's --bind",
                            o.file));
  cpu::set_cpu_threads(o.threads);
  LanguageModel lm(load_model(o.file, o.bind, /*require_loss=*/true), o.weights);
  lm.use_cache(!o.no_cache);
  if (!o.ids && lm.vocabulary() > 256)
    throw Error(fmt::format("@{} has {} token ids, more than the 256 bytes: give --ids, with --prompt as ids",
                            lm.name(), lm.vocabulary()));
  if (o.ids && o.prompts.empty())
    throw Error("--ids needs --prompt: the ids to go on from, such as --prompt 3,17,5");
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::span<const int32_t>> views;
  for (const std::string& text : o.prompts.empty() ? std::vector<std::string>{"\n"} : o.prompts)
    prompts.push_back(token_ids(text, "--prompt", "give the model at least one token to go on from", o.ids,
                                lm.vocabulary(), lm.name()));
  for (const std::vector<int32_t>& prompt : prompts) views.emplace_back(prompt);
  const auto count = static_cast<int64_t>(prompts.size());
  Generation generation = o.generation;
  for (const std::string& text : o.stop)
    generation.stop.push_back(
        token_ids(text, "--stop", "a sample would end before its first token", o.ids, lm.vocabulary(), lm.name()));
  const Sampling& how = generation.sampling;

  std::string among = how.top_k > 0 ? fmt::format("top-k {}", how.top_k) : "";
  if (how.top_p < 1) among += fmt::format("{}top-p {}", among.empty() ? "" : ", ", how.top_p);
  const int64_t k = generation.samples, sequences = count * k;
  const uint64_t seed = generation.seed;
  std::string lengths;
  for (size_t i = 0; i < prompts.size(); ++i)
    lengths += fmt::format("{}{}", i == 0 ? "" : i + 1 == prompts.size() ? " and " : ", ", prompts[i].size());
  std::cerr << fmt::format("sampling @{} with {}: {}{} tokens after {} of {}, context {}, temperature {}, {}, "
                           "{}\n",
                           lm.name(), o.weights, k > 1 ? fmt::format("{} samples of ", k) : "",
                           generation.tokens, count > 1 ? fmt::format("each of {} prompts", count) : "a prompt",
                           lengths, lm.context(), how.temperature, among.empty() ? "every token" : among,
                           k > 1 ? fmt::format("seeds {} to {}", seed, seed + static_cast<uint64_t>(k - 1))
                                 : fmt::format("seed {}", seed));
  const int64_t width = batch_width(sequences, generation.max_batch);
  const std::string& why_not = lm.why_not_side_by_side(k, count, generation.max_batch);
  const bool side_by_side = lm.cached() && width > 1 && why_not.empty();
  const std::string what = count > 1 ? fmt::format("{} sequences ({} prompts x {} sample{})", sequences, count, k,
                                                   k > 1 ? "s" : "")
                                     : fmt::format("{} samples", k);
  std::string samples_line;
  if (sequences > 1 && width == 1)
    samples_line = fmt::format("; the {} one after another (--max-batch 1)", what);
  else if (sequences > 1)
    samples_line = side_by_side  ? fmt::format("; the {} side by side{}", what,
                                               width < sequences
                                                   ? fmt::format(", {} at once, each that ends making room for the "
                                                                 "next",
                                                                 width)
                                                   : "")
                   : lm.cached() ? fmt::format("; the {} {}: {}", what,
                                               count > 1 ? "side by side per prompt where they can be"
                                                         : "one after another",
                                               why_not)
                                 : fmt::format("; each of the {} on its own", what);
  if (lm.cached())
    std::cerr << "each drawn token read alone, over a cache of the keys and values before it" << samples_line << "\n";
  else
    std::cerr << fmt::format("each drawn token read with the latest {} before it, all again{}{}\n", lm.context() - 1,
                             o.no_cache ? " (--no-cache)" : ": " + lm.why_uncached(), samples_line);
  // One sequence is printed as it is drawn; several, each whole at the end.
  if (sequences == 1)
    for (size_t i = 0; i < prompts[0].size(); ++i) print_token(prompts[0][i], o.ids, i == 0);
  // The first tokens wait for the prompt to be read; the others show the pace.
  const auto start = std::chrono::steady_clock::now();
  auto first = start;
  int64_t drawn = 0;
  const std::vector<std::vector<int32_t>> texts =
      lm.generate(views, generation, [&](int64_t, int32_t token) {
        if (drawn++ == 0) first = std::chrono::steady_clock::now();
        if (sequences > 1) return;
        print_token(token, o.ids, false);
        std::cout.flush();
      });
  if (sequences == 1) std::cout << "\n";
  if (sequences > 1)
    for (int64_t q = 0; q < sequences; ++q) {
      const int64_t p = q / k, s = q % k;
      const std::vector<int32_t>& prompt = prompts[static_cast<size_t>(p)];
      if (!o.ids)
        std::cout << fmt::format("=== {}{} ===\n", count > 1 ? fmt::format("prompt {} of {}", p + 1, count) : "",
                                 k == 1 ? ""
                                        : fmt::format("{}sample {} of {}, seed {}", count > 1 ? ", " : "", s + 1, k,
                                                      seed + static_cast<uint64_t>(s)));
      for (size_t i = 0; i < prompt.size(); ++i) print_token(prompt[i], o.ids, i == 0);
      for (int32_t token : texts[static_cast<size_t>(q)]) print_token(token, o.ids, false);
      std::cout << "\n";
    }
  const auto end = std::chrono::steady_clock::now();
  const auto ms = [](auto d) { return std::chrono::duration<double, std::milli>(d).count(); };
  // Side by side, the first step draws a token of every sequence at once.
  const int64_t at_first = side_by_side ? width : 1, after = drawn - at_first;
  const double per_token = after > 0 ? ms(end - first) / double(after) : 0.0;
  std::cerr << fmt::format("{} tokens in {:.2f} s: the first {}after {:.1f} ms, then {:.2f} ms per token{}\n", drawn,
                           ms(end - start) / 1e3, at_first > 1 ? fmt::format("{} ", at_first) : "", ms(first - start),
                           per_token,
                           side_by_side ? fmt::format(" ({:.2f} ms per step of {})", per_token * double(width), width)
                                        : "");
}

}  // namespace

void add_sample_command(CLI::App& app) {
  auto o = std::make_shared<SampleOptions>();
  o->generation.tokens = 200;
  CLI::App* cmd = app.add_subcommand(
      "sample", "text from a trained language model (.pf, reading token ids and trained on their cross_entropy), a "
                "token at a time on one CPU device");
  cmd->add_option("file", o->file, "model file (.pf)")->required();
  add_bind_option(*cmd, o->bind);
  cmd->add_option("--weights", o->weights, "the trained weights: a safetensors file or a checkpoint folder")
      ->required();
  cmd->add_option("--prompt", o->prompts,
                  "the text to go on from, a token per byte (default: a new line); repeat for several prompts, "
                  "decoded side by side over the cache where the model allows");
  cmd->add_flag("--ids", o->ids, "tokens are ids, not bytes: --prompt lists them (3,17,5) and so does the output");
  at_least(cmd->add_option("--tokens", o->generation.tokens, "tokens to draw (per sample, at most)"), 1)
      ->capture_default_str();
  at_least(cmd->add_option("--temperature", o->generation.sampling.temperature,
                           "divides the logits before the softmax: below 1 sharper, above 1 flatter; 0 takes the "
                           "most likely token"),
           0)
      ->capture_default_str();
  at_least(cmd->add_option("--top-k", o->generation.sampling.top_k,
                           "draw among the k most likely tokens only (0: among all)"),
           0)
      ->capture_default_str();
  fraction(cmd->add_option("--top-p", o->generation.sampling.top_p,
                           "then among the fewest most likely tokens whose probabilities add up to p or more (1: "
                           "among all)"))
      ->capture_default_str();
  cmd->add_option("--seed", o->generation.seed, "seed of the draws")->capture_default_str();
  at_least(cmd->add_option("--threads", o->threads, "threads of the CPU kernels"), 1)->capture_default_str();
  cmd->add_flag("--no-cache", o->no_cache,
                "read the latest tokens all again for each one drawn, instead of the one drawn over a cache of the "
                "keys and values before it");
  at_least(cmd->add_option("--samples", o->generation.samples,
                           "continuations of the prompt to draw, sample s from seed + s; over a cache they are "
                           "decoded side by side, a step reading one token of each"),
           1)
      ->capture_default_str();
  at_least(cmd->add_option("--max-batch", o->generation.max_batch,
                           "decode at most this many sequences at once over the cache, each that ends making room "
                           "for the next sample or prompt (0: all at once)"),
           0)
      ->capture_default_str();
  cmd->add_option("--stop", o->stop,
                  "end a sample after the token that completes this text (bytes, or ids with --ids: 46,10), kept "
                  "in its output; repeat for several, such as --stop . --stop $'\\n'");
  cmd->callback([o] { sample(*o); });
}

}  // namespace pf::tools
