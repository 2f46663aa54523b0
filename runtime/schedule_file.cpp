// Schedule files: each device's compute actions written out as text, read back into action lists with
// diagnostics at the line and column of the offending action (the checks serve PyTorch's CSV too).
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ir/diagnostic.h"
#include "runtime/schedule.h"
#include "runtime/schedule_orders.h"
#include "runtime/schedule_written.h"

namespace pf {

namespace {

using schedule_orders::DeviceOrders;
using schedule_orders::Work;
using schedule_files::DeviceLine;
using schedule_files::Dialect;
using schedule_files::Written;
using schedule_files::WrittenLists;

constexpr std::string_view kSyntax =
    "an action is F (forward), B (backward, or its input gradient where W follows) or W (weight gradient), then "
    "the micro-batch, then c and the chunk where devices hold several: F3, B3, W3c1";

constexpr std::string_view kPlacementSyntax =
    "placement is round-robin (stage s on device s % p, the default), v (chunk 0 of device d is stage d, chunk 1 "
    "stage 2p - 1 - d), or the device of each stage in model order (0 1 1 0)";

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r'; }

/// A count written in at most six decimal digits (no sign): nullopt otherwise.
std::optional<int> parse_count(std::string_view digits) {
  int value = 0;
  if (digits.empty() || digits.size() > 6 ||
      !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
  if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
  return value;
}

/// "F3", "B12c1", "W0": the work it names; nullopt for anything else.
std::optional<Work> parse_action(std::string_view token) {
  if (token.size() < 2) return std::nullopt;
  ActionKind kind;
  switch (token[0]) {
    case 'F': kind = ActionKind::forward; break;
    case 'B': kind = ActionKind::backward; break;
    case 'W': kind = ActionKind::backward_weight; break;
    default: return std::nullopt;
  }
  const size_t c = token.find('c');
  const std::optional<int> mb = parse_count(token.substr(1, c == std::string_view::npos ? c : c - 1));
  const std::optional<int> chunk = c == std::string_view::npos ? 0 : parse_count(token.substr(c + 1));
  if (!mb || !chunk) return std::nullopt;
  return Work{kind, *mb, *chunk};
}

class Reader {
 public:
  Reader(std::string_view text, const std::string& path) {
    lists_.file = std::make_shared<SourceFile>(path, std::string(text));
  }

  Schedule read() {
    const std::string& text = lists_.file->text();
    int line_no = 0;
    for (size_t start = 0; start <= text.size();) {
      size_t end = text.find('\n', start);
      if (end == std::string::npos) end = text.size();
      read_line(++line_no, std::string_view(text).substr(start, end - start));
      start = end + 1;
    }
    if (lists_.devices.empty())
      throw Error(fmt::format("{}: no device's actions: write a line such as `dev 0: F0 B0` for each device",
                              lists_.file->name()));
    for (const auto& [d, dev] : lists_.devices)
      for (const Written& w : dev.actions) lists_.split = lists_.split || w.work.kind == ActionKind::backward_weight;
    return schedule_files::build_written(lists_);
  }

 private:
  [[noreturn]] void fail(int line, int col, const std::string& message) const {
    throw Error(message, Location{lists_.file, line, col});
  }

  void read_line(int line_no, std::string_view line) {
    line = line.substr(0, line.find('#'));
    // Words with their columns (1-based).
    std::vector<std::pair<std::string_view, int>> words;
    for (size_t i = 0; i < line.size();) {
      if (is_space(line[i])) {
        ++i;
        continue;
      }
      size_t j = i;
      while (j < line.size() && !is_space(line[j])) ++j;
      words.emplace_back(line.substr(i, j - i), static_cast<int>(i) + 1);
      i = j;
    }
    if (words.empty()) return;
    if (words[0].first == "placement") return read_placement(line_no, words);
    if (words[0].first != "dev")
      fail(line_no, words[0].second,
           fmt::format("expected `dev N: actions...` or `placement round-robin|v|DEVICES`, got '{}'", words[0].first));
    read_device(line_no, words);
  }

  void read_placement(int line_no, const std::vector<std::pair<std::string_view, int>>& words) {
    if (lists_.placement_line > 0)
      fail(line_no, words[0].second,
           fmt::format("a second placement line (the first is line {})", lists_.placement_line));
    lists_.placement_line = line_no;
    if (words.size() == 2 && (words[1].first == "round-robin" || words[1].first == "v")) {
      lists_.placement = words[1].first == "v" ? StagePlacement::v_shape() : StagePlacement::round_robin();
      return;
    }
    std::vector<int> devices;
    for (size_t i = 1; i < words.size(); ++i) {
      const std::optional<int> d = parse_count(words[i].first);
      if (!d) fail(line_no, words[i].second, std::string(kPlacementSyntax));
      devices.push_back(*d);
    }
    if (devices.empty()) fail(line_no, words[0].second, std::string(kPlacementSyntax));
    try {
      lists_.placement = StagePlacement::listed(devices);
    } catch (const Error& e) {
      fail(line_no, words[1].second, e.message());
    }
    lists_.listed = std::move(devices);
  }

  void read_device(int line_no, std::vector<std::pair<std::string_view, int>> words) {
    // "dev 0: F0" and "dev 0 : F0" alike, and "dev 0:F0".
    std::string_view number = words.size() > 1 ? words[1].first : std::string_view();
    const int number_col = words.size() > 1 ? words[1].second : words[0].second + 3;
    size_t first_action = 2;
    if (const size_t colon = number.find(':'); colon != std::string_view::npos) {
      if (colon + 1 < number.size()) {
        words[1] = {number.substr(colon + 1), words[1].second + static_cast<int>(colon) + 1};
        first_action = 1;
      }
      number = number.substr(0, colon);
    } else if (words.size() > 2 && words[2].first.front() == ':') {
      if (words[2].first.size() > 1)
        words[2] = {words[2].first.substr(1), words[2].second + 1};
      else
        first_action = 3;
    } else {
      fail(line_no, number_col, "expected `dev N:`, the device's number and a colon before its actions");
    }
    const std::optional<int> device = parse_count(number);
    if (!device) fail(line_no, number_col, fmt::format("'{}' is not a device number", number));
    if (const auto it = lists_.devices.find(*device); it != lists_.devices.end())
      fail(line_no, words[0].second,
           fmt::format("dev {} has a second line (the first is line {})", *device, it->second.line));
    DeviceLine& dev = lists_.devices[*device];
    dev.line = line_no;
    dev.col = words[0].second;
    for (size_t i = first_action; i < words.size(); ++i) {
      const auto& [token, col] = words[i];
      if (token == ".") continue;  // an idle cell of the picture
      const std::optional<Work> work = parse_action(token);
      if (!work) fail(line_no, col, fmt::format("'{}' is not an action: {}", token, kSyntax));
      dev.actions.push_back({*work, token, line_no, col});
    }
  }

  WrittenLists lists_;
};

/// The checks every written schedule goes through, and the schedule built
/// from its lists; messages name devices and actions in the file's dialect.
class Builder {
 public:
  explicit Builder(const WrittenLists& lists) : lists_(lists), torch_(lists.dialect == Dialect::torch_csv) {}

  Schedule build() const {
    const std::map<int, DeviceLine>& devices = lists_.devices;
    const int p = static_cast<int>(devices.size());
    for (int d = 0; d < p; ++d)
      if (!devices.count(d)) {
        const DeviceLine& last = devices.rbegin()->second;
        fail(last.line, last.col,
             fmt::format("dev {} is missing: the lines name devices up to {}, and each of 0 to {} needs its own",
                         d, devices.rbegin()->first, devices.rbegin()->first));
      }
    int m = 0, v = 0;
    for (const auto& [d, dev] : devices)
      for (const Written& w : dev.actions) {
        m = std::max(m, w.work.microbatch + 1);
        v = std::max(v, w.work.chunk + 1);
      }
    if (m == 0) fail(devices.begin()->second.line, devices.begin()->second.col, "no device runs any action");
    const int placement_line = lists_.placement_line;
    if (lists_.placement.is_v_shape() && v != 2)
      fail(placement_line, 1,
           fmt::format("placement v gives each device 2 chunks (the arms of its V), but the actions name {}", v));
    const std::vector<int>& listed = lists_.listed;
    if (!listed.empty()) {
      const int listed_devices = *std::max_element(listed.begin(), listed.end()) + 1;
      if (listed_devices != p)
        fail(placement_line, 1,
             fmt::format("the placement puts stages on {} devices, but the lines are for {}: list a device of 0 to {} "
                         "for each stage",
                         listed_devices, p, p - 1));
      if (static_cast<int>(listed.size()) != p * v)
        fail(placement_line, 1,
             fmt::format("the placement gives each device {} chunks, but the actions name {}",
                         static_cast<int>(listed.size()) / p, v));
    }

    const bool split = lists_.split;
    Schedule shape{ScheduleKind::custom, p, m, v, {}, lists_.placement, split};
    DeviceOrders orders(static_cast<size_t>(p));
    for (const auto& [d, dev] : devices) {
      check_device(shape, d, dev);
      for (const Written& w : dev.actions) {
        Work work = w.work;
        if (split && work.kind == ActionKind::backward) work.kind = ActionKind::backward_input;
        orders[static_cast<size_t>(d)].push_back(work);
      }
    }
    check_dependencies(shape);
    Schedule schedule =
        schedule_orders::schedule_from_orders(ScheduleKind::custom, p, m, v, orders, lists_.placement, split);
    try {
      validate(schedule);
    } catch (const Error& e) {  // what the checks above should have caught first
      throw Error(fmt::format("{}: {}", lists_.file->name(), e.message()));
    }
    return schedule;
  }

 private:
  /// Each (micro-batch, chunk) of the device once per kind, F before B
  /// before W, and every one present.
  void check_device(const Schedule& shape, int d, const DeviceLine& dev) const {
    const int m = shape.microbatches, v = shape.virtual_stages;
    std::map<std::pair<int, int>, const Written*> seen[3];  // F, B, W by (micro-batch, chunk)
    auto slot = [](ActionKind kind) { return kind == ActionKind::forward ? 0 : kind == ActionKind::backward ? 1 : 2; };
    const char* input_gradient = torch_ ? "input gradient (I)" : "input gradient (B)";
    for (const Written& w : dev.actions) {
      const std::pair<int, int> key{w.work.microbatch, w.work.chunk};
      const int k = slot(w.work.kind);
      if (const auto it = seen[k].find(key); it != seen[k].end())
        fail(w, fmt::format("{} runs {} twice (first at {}:{})", device(d), w.token, it->second->line,
                            it->second->col));
      if (k > 0 && !seen[k - 1].count(key))
        fail(w, fmt::format("{} comes before {} on {}: a micro-batch's {} needs its {} first", w.token,
                            label(shape, d, k - 1, key), device(d), k == 1 ? "backward" : "weight gradient",
                            k == 1 ? "forward" : input_gradient));
      seen[k][key] = &w;
    }
    const char* kinds = !shape.split_backward ? "F and B" : torch_ ? "F, I and W" : "F, B and W";
    for (int c = 0; c < v; ++c)
      for (int mb = 0; mb < m; ++mb)
        for (int k = 0; k < (shape.split_backward ? 3 : 2); ++k)
          if (!seen[k].count({mb, c}))
            fail(dev.line, dev.col,
                 fmt::format("{} never runs {}: each {} runs {} of every one of the {} micro-batches{}", device(d),
                             label(shape, d, k, {mb, c}), torch_ ? "rank" : "device", kinds, m,
                             v > 1 ? fmt::format(" on each of its {} {}", v, torch_ ? "stages" : "chunks") : ""));
  }

  /// "dev 0", or "rank 0" in PyTorch's words.
  std::string device(int d) const { return fmt::format("{} {}", torch_ ? "rank" : "dev", d); }

  /// Action kind `k` (F, B, W) of (micro-batch, chunk) on device `d`:
  /// action_label's "F3", "B3c1", or PyTorch's "5F3", "5I3" (the model
  /// stage, the kind, the micro-batch).
  std::string label(const Schedule& shape, int d, int k, std::pair<int, int> key) const {
    constexpr ActionKind kinds[] = {ActionKind::forward, ActionKind::backward, ActionKind::backward_weight};
    const int stage = shape.stage_at(d, key.second);
    if (!torch_) return action_label(shape, {kinds[k], key.first, stage, -1});
    const char* letter = k == 0 ? "F" : k == 2 ? "W" : shape.split_backward ? "I" : "B";
    return fmt::format("{}{}{}", stage, letter, key.first);
  }

  /// Runs the lists as far as their inputs allow: a forward needs the
  /// previous stage's forward of its micro-batch, a backward the next
  /// stage's. Where every device left waits on another, names what each
  /// waits for.
  void check_dependencies(const Schedule& shape) const {
    const int p = shape.devices, stages = shape.model_stages();
    std::vector<std::vector<bool>> forward_done(static_cast<size_t>(stages),
                                                std::vector<bool>(static_cast<size_t>(shape.microbatches)));
    std::vector<std::vector<bool>> backward_done = forward_done;
    std::vector<size_t> next(static_cast<size_t>(p), 0);
    // The stage and micro-batch an action waits on, if any.
    auto waits_on = [&](int d, const Written& w) -> std::optional<std::pair<int, int>> {
      const int s = shape.stage_at(d, w.work.chunk), mb = w.work.microbatch;
      if (w.work.kind == ActionKind::forward && s > 0 && !forward_done[s - 1][mb]) return std::pair{s - 1, mb};
      if (w.work.kind == ActionKind::backward && s + 1 < stages && !backward_done[s + 1][mb])
        return std::pair{s + 1, mb};
      return std::nullopt;
    };
    for (bool moved = true; moved;) {
      moved = false;
      for (int d = 0; d < p; ++d) {
        const std::vector<Written>& list = lists_.devices.at(d).actions;
        for (size_t& i = next[static_cast<size_t>(d)]; i < list.size() && !waits_on(d, list[i]); ++i) {
          const int s = shape.stage_at(d, list[i].work.chunk), mb = list[i].work.microbatch;
          if (list[i].work.kind == ActionKind::forward) forward_done[s][mb] = true;
          if (list[i].work.kind == ActionKind::backward) backward_done[s][mb] = true;
          moved = true;
        }
      }
    }
    std::string waits;
    const Written* first = nullptr;
    for (int d = 0; d < p; ++d) {
      const std::vector<Written>& list = lists_.devices.at(d).actions;
      if (next[static_cast<size_t>(d)] == list.size()) continue;
      const Written& w = list[next[static_cast<size_t>(d)]];
      const auto [s, mb] = *waits_on(d, w);
      const int other = shape.device_of(s);
      const int k = w.work.kind == ActionKind::forward ? 0 : 1;
      waits += fmt::format("{}{} waits at {} for {}'s {}", waits.empty() ? "" : ", ", device(d), w.token,
                           device(other), label(shape, other, k, {mb, shape.chunk_of(s)}));
      if (!first) first = &w;
    }
    if (first)
      fail(*first, fmt::format("the schedule deadlocks: {}; move an action after the ones it needs", waits));
  }

  [[noreturn]] void fail(int line, int col, const std::string& message) const {
    throw Error(message, Location{lists_.file, line, col});
  }
  [[noreturn]] void fail(const Written& w, const std::string& message) const { fail(w.line, w.col, message); }

  const WrittenLists& lists_;
  bool torch_;
};

}  // namespace

Schedule schedule_files::build_written(const WrittenLists& lists) { return Builder(lists).build(); }

Schedule read_schedule_text(std::string_view text, const std::string& path) { return Reader(text, path).read(); }

Schedule planned_schedule(ScheduleKind kind, std::string_view actions, int devices, int microbatches,
                          int virtual_stages, const ActionCosts& costs) {
  if (kind != ScheduleKind::custom) return make_schedule(kind, devices, microbatches, virtual_stages, costs);
  Schedule written = read_schedule_text(actions, "the custom schedule");
  if (written.devices != devices || written.microbatches != microbatches || written.virtual_stages != virtual_stages)
    throw Error(fmt::format("the custom schedule runs {} devices, {} micro-batches and {} chunks per device, not the "
                            "{}, {} and {} of its plan",
                            written.devices, written.microbatches, written.virtual_stages, devices, microbatches,
                            virtual_stages));
  return written;
}

std::string write_schedule_text(const Schedule& schedule) {
  std::string out = fmt::format("# {} p={} m={} v={}: each device's compute actions in order\n",
                                schedule_kind_name(schedule.kind), schedule.devices, schedule.microbatches,
                                schedule.virtual_stages);
  if (schedule.placement != StagePlacement::round_robin()) out += "placement " + schedule.placement.name() + "\n";
  for (int d = 0; d < schedule.devices; ++d) {
    out += fmt::format("dev {}:", d);
    for (const Action& a : schedule.per_device.at(static_cast<size_t>(d)))
      if (is_compute(a.kind)) {
        out += ' ';
        out += action_label(schedule, a);
      }
    out += "\n";
  }
  return out;
}

}  // namespace pf
