// PyTorch's schedule CSV (torch.distributed.pipelining's compute-only format): a row per rank, a cell per action,
// read into Pipeforge's action lists and written from them.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"
#include "runtime/schedule_written.h"

namespace pf {

namespace {

using schedule_files::DeviceLine;
using schedule_files::Dialect;
using schedule_files::Written;
using schedule_files::WrittenLists;

constexpr std::string_view kSyntax =
    "a cell is the model stage, F (forward), I (input gradient), W (weight gradient) or B (whole backward), then "
    "the micro-batch: 0F3, 5I3";

/// One compute action of a cell, where it stands.
struct Cell {
  int stage = 0, microbatch = 0;
  char kind = 'F';  // F, I, W or B
  std::string_view token;
  int line = 0, col = 0;
};

/// Actions PyTorch lists beside the compute ones, which the lists imply
/// (the transfers) or which Pipeforge's data parallelism does its own way.
bool is_implied(std::string_view type) {
  for (std::string_view implied : {"SEND_F", "RECV_F", "SEND_B", "RECV_B", "UNSHARD", "RESHARD", "REDUCE_GRAD"})
    if (type == implied) return true;
  return false;
}

/// Up to six decimal digits at the front of `text`; the digits taken are removed.
std::optional<int> take_count(std::string_view& text) {
  size_t n = 0;
  while (n < text.size() && n < 7 && text[n] >= '0' && text[n] <= '9') ++n;
  if (n == 0 || n > 6) return std::nullopt;
  int value = 0;
  std::from_chars(text.data(), text.data() + n, value);
  text.remove_prefix(n);
  return value;
}

class CsvReader {
 public:
  CsvReader(std::string_view text, const std::string& path) {
    lists_.file = std::make_shared<SourceFile>(path, std::string(text));
    lists_.dialect = Dialect::torch_csv;
  }

  Schedule read() {
    const std::string& text = lists_.file->text();
    std::vector<std::string_view> lines;
    for (size_t start = 0; start <= text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      std::string_view line = std::string_view(text).substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      lines.push_back(line);
      start = end + 1;
    }
    while (!lines.empty() && lines.back().find_first_not_of(" \t") == std::string_view::npos) lines.pop_back();
    if (lines.empty())
      throw Error(fmt::format("{}: no rank's actions: write a row of cells such as 0F0,0B0 for each rank",
                              lists_.file->name()));
    std::vector<std::vector<Cell>> ranks;
    for (size_t r = 0; r < lines.size(); ++r) ranks.push_back(read_row(static_cast<int>(r) + 1, lines[r]));
    place_stages(ranks);
    return schedule_files::build_written(lists_);
  }

 private:
  [[noreturn]] void fail(int line, int col, const std::string& message) const {
    throw Error(message, Location{lists_.file, line, col});
  }

  std::vector<Cell> read_row(int line_no, std::string_view line) const {
    std::vector<Cell> cells;
    for (size_t start = 0; start <= line.size();) {
      size_t end = line.find(',', start);
      if (end == std::string_view::npos) end = line.size();
      std::string_view cell = line.substr(start, end - start);
      size_t first = start;
      // The byte-order mark of a file saved as "UTF-8 with BOM" (PyTorch reads
      // its CSVs as utf-8-sig too).
      if (first == 0 && cell.substr(0, 3) == "\xEF\xBB\xBF") {
        cell.remove_prefix(3);
        first = 3;
      }
      // Spaces and the quotes a CSV writer may put around a cell.
      while (!cell.empty() && (cell.front() == ' ' || cell.front() == '\t' || cell.front() == '"')) {
        cell.remove_prefix(1);
        ++first;
      }
      while (!cell.empty() && (cell.back() == ' ' || cell.back() == '\t' || cell.back() == '"')) cell.remove_suffix(1);
      if (!cell.empty()) read_cell(line_no, static_cast<int>(first) + 1, cell, cells);
      start = end + 1;
    }
    return cells;
  }

  /// "0F3", "(0F3;1B2)OVERLAP_F_B" (its actions in order), "1SEND_F3" (implied: skipped).
  void read_cell(int line_no, int col, std::string_view cell, std::vector<Cell>& out) const {
    if (cell.front() == '(') {
      const size_t close = cell.find(')');
      if (close == std::string_view::npos || cell.substr(close + 1) != "OVERLAP_F_B")
        fail(line_no, col,
             fmt::format("'{}' is not an action: a cell of several runs them as (0F3;1B2)OVERLAP_F_B", cell));
      for (size_t start = 1; start < close;) {
        size_t end = cell.find(';', start);
        if (end == std::string_view::npos || end > close) end = close;
        std::string_view sub = cell.substr(start, end - start);
        size_t lead = 0;
        while (lead < sub.size() && sub[lead] == ' ') ++lead;
        sub.remove_prefix(lead);
        while (!sub.empty() && sub.back() == ' ') sub.remove_suffix(1);
        if (!sub.empty()) read_action(line_no, col + static_cast<int>(start + lead), sub, out);
        start = end + 1;
      }
      return;
    }
    read_action(line_no, col, cell, out);
  }

  void read_action(int line_no, int col, std::string_view token, std::vector<Cell>& out) const {
    std::string_view rest = token;
    const std::optional<int> stage = take_count(rest);
    if (!stage) fail(line_no, col, fmt::format("'{}' is not an action: {}", token, kSyntax));
    size_t letters = 0;
    while (letters < rest.size() && ((rest[letters] >= 'A' && rest[letters] <= 'Z') || rest[letters] == '_'))
      ++letters;
    const std::string_view type = rest.substr(0, letters);
    rest.remove_prefix(letters);
    if (is_implied(type)) return;
    if (type.size() != 1 || std::string_view("FIWB").find(type[0]) == std::string_view::npos)
      fail(line_no, col, fmt::format("'{}' is not an action: {}", token, kSyntax));
    const std::optional<int> mb = take_count(rest);
    if (!mb || !rest.empty()) fail(line_no, col, fmt::format("'{}' is not an action: {}", token, kSyntax));
    out.push_back({*stage, *mb, type[0], token, line_no, col});
  }

  /// Each stage on the rank whose row names it, as its chunk in model
  /// order; every rank the same number of stages.
  void place_stages(const std::vector<std::vector<Cell>>& ranks) {
    std::map<int, const Cell*> first_of_stage;
    std::map<int, int> rank_of_stage;
    int stages = 0;
    for (size_t r = 0; r < ranks.size(); ++r) {
      if (ranks[r].empty()) fail(static_cast<int>(r) + 1, 1, fmt::format("rank {} runs no action", r));
      for (const Cell& c : ranks[r]) {
        const auto [it, fresh] = rank_of_stage.emplace(c.stage, static_cast<int>(r));
        if (fresh) first_of_stage[c.stage] = &c;
        if (it->second != static_cast<int>(r)) {
          const Cell& first = *first_of_stage[c.stage];
          fail(c.line, c.col,
               fmt::format("stage {} runs on rank {} here and on rank {} at {}:{}: each stage belongs to one rank",
                           c.stage, r, it->second, first.line, first.col));
        }
        stages = std::max(stages, c.stage + 1);
      }
    }
    for (int s = 0; s < stages; ++s)
      if (!rank_of_stage.count(s))
        fail(1, 1, fmt::format("no rank runs stage {}: the rows name stages up to {}, and each of 0 to {} needs a rank",
                               s, stages - 1, stages - 1));
    std::vector<std::vector<int>> held(ranks.size());  // per rank, its stages in model order
    for (const auto& [s, r] : rank_of_stage) held[static_cast<size_t>(r)].push_back(s);
    for (size_t r = 1; r < ranks.size(); ++r)
      if (held[r].size() != held[0].size())
        fail(static_cast<int>(r) + 1, 1,
             fmt::format("rank {} runs {} of the {} stages and rank 0 runs {}: each rank holds as many", r,
                         held[r].size(), stages, held[0].size()));

    std::vector<int> device_of_stage;
    for (const auto& [s, r] : rank_of_stage) device_of_stage.push_back(r);
    lists_.placement = StagePlacement::listed(device_of_stage);
    for (const std::vector<Cell>& row : ranks)
      for (const Cell& c : row) lists_.split = lists_.split || c.kind == 'I' || c.kind == 'W';
    for (size_t r = 0; r < ranks.size(); ++r) {
      DeviceLine& device = lists_.devices[static_cast<int>(r)];
      device.line = static_cast<int>(r) + 1;
      device.col = 1;
      const std::vector<int>& mine = held[r];
      for (const Cell& c : ranks[r]) {
        const int chunk = static_cast<int>(std::find(mine.begin(), mine.end(), c.stage) - mine.begin());
        const ActionKind kind = c.kind == 'F' ? ActionKind::forward
                                : c.kind == 'W' ? ActionKind::backward_weight
                                                : ActionKind::backward;
        device.actions.push_back({{kind, c.microbatch, chunk}, c.token, c.line, c.col});
        // A whole backward among split ones: its input gradient, then its weight's.
        if (c.kind == 'B' && lists_.split)
          device.actions.push_back({{ActionKind::backward_weight, c.microbatch, chunk}, c.token, c.line, c.col});
      }
    }
  }

  WrittenLists lists_;
};

bool ends_with(std::string_view text, std::string_view tail) {
  return text.size() >= tail.size() && text.substr(text.size() - tail.size()) == tail;
}

}  // namespace

Schedule read_torch_schedule_csv(std::string_view text, const std::string& path) {
  return CsvReader(text, path).read();
}

std::string write_torch_schedule_csv(const Schedule& schedule) {
  std::string out;
  for (const std::vector<Action>& list : schedule.per_device) {
    std::string row;
    for (const Action& a : list) {
      if (!is_compute(a.kind)) continue;
      const char kind = a.kind == ActionKind::forward           ? 'F'
                        : a.kind == ActionKind::backward_input  ? 'I'
                        : a.kind == ActionKind::backward_weight ? 'W'
                                                                : 'B';
      row += fmt::format("{}{}{}{}", row.empty() ? "" : ",", a.stage, kind, a.microbatch);
    }
    out += row + "\n";
  }
  return out;
}

Schedule read_schedule_file(const std::string& path) {
  const std::shared_ptr<const SourceFile> file = read_source_file(path);
  if (ends_with(path, ".csv")) return read_torch_schedule_csv(file->text(), path);
  return read_schedule_text(file->text(), path);
}

}  // namespace pf
