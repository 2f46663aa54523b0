// The broken-model corpus in process: every file gives its expected located
// error, and random mutations of a valid model never crash. This is the
// program the sanitizer build runs (the command-line form, with exit
// statuses, is tests/corpus/check_corpus.py).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "ir/parser.h"
#include "ir/verifier.h"
#include "passes/cost_summary.h"
#include "passes/pass.h"

namespace pf {
namespace {

const std::string kCorpus = std::string(PF_SOURCE_DIR) + "/tests/corpus";

// What `pipeforge check` does with a file; returns the rendered error.
std::string check(std::shared_ptr<const SourceFile> file) {
  try {
    Module m = parse_module(file);
    DimBinding b = m.binding();
    verify_module(m, b, VerifyOptions{true});
    PassContext ctx{b};
    run_passes(m, {"inline"}, ctx);
    summarize_cost(m.graph(), b);
  } catch (const Error& e) {
    return e.render();
  }
  return "";
}

std::map<std::string, std::string> expected() {
  std::map<std::string, std::string> out;
  std::ifstream in(kCorpus + "/expected.txt");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] != '#') out[line.substr(0, line.find(' '))] = line.substr(line.find(' ') + 1);
  return out;
}

TEST(BrokenCorpus, EveryFileGivesItsLocatedError) {
  auto want = expected();
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kCorpus + "/broken")) {
    std::string name = entry.path().filename().string();
    ++files;
    std::string rendered = check(read_source_file(entry.path().string()));
    ASSERT_FALSE(rendered.empty()) << name << " was accepted";
    std::string first = rendered.substr(0, rendered.find('\n'));
    ASSERT_TRUE(want.count(name)) << name << " has no line in expected.txt";
    std::string located = entry.path().string();
    located += ':';
    located += want[name];
    EXPECT_EQ(first, located);
    // The quoted line, then a caret: three lines in all.
    EXPECT_EQ(std::count(rendered.begin(), rendered.end(), '\n'), 3) << rendered;
  }
  EXPECT_GE(files, 50);
}

TEST(BrokenCorpus, MutationsAndJunkNeverCrash) {
  std::string valid;
  {
    std::ifstream in(std::string(PF_SOURCE_DIR) + "/examples/mlp.pf");
    valid.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::mt19937_64 rng(2024);
  for (int i = 0; i < 300; ++i) {
    std::string text = valid;
    int edits = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < edits; ++k) {
      size_t at = rng() % text.size();
      switch (rng() % 3) {
        case 0: text[at] = static_cast<char>(rng() % 256); break;
        case 1: text.erase(at, 1 + rng() % 16); break;
        default: text.insert(at, 1 + rng() % 4, "%@[](){}=,:-*/0123456789abc\n"[rng() % 29]);
      }
      if (text.empty()) text.push_back('x');
    }
    // Either it still checks, or it fails with a located error.
    std::string rendered = check(std::make_shared<SourceFile>("mutant.pf", text));
    if (!rendered.empty()) {
      EXPECT_EQ(rendered.rfind("mutant.pf:", 0), 0u) << rendered;
    }
  }
}

}  // namespace
}  // namespace pf
