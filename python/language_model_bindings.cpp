// pipeforge.LanguageModel: a trained language model's next-token logits and the tokens drawn from them.
#include <fmt/format.h>
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "python/bindings.h"
#include "tools/language_model.h"

namespace pf::python {

namespace {

/// A LanguageModel, one caller at a time: it runs without the GIL.
struct LanguageModelHandle {
  explicit LanguageModelHandle(tools::LanguageModel m) : model(std::move(m)) {}
  tools::LanguageModel model;
  std::mutex busy;
};

/// Token ids from Python: a sequence of int, or str / bytes as their (UTF-8) bytes.
std::vector<int32_t> token_ids(py::handle tokens, const char* what) {
  std::vector<int32_t> out;
  if (py::isinstance<py::str>(tokens) || py::isinstance<py::bytes>(tokens)) {
    for (char c : tokens.cast<std::string>()) out.push_back(static_cast<unsigned char>(c));
    return out;
  }
  if (!py::isinstance<py::sequence>(tokens))
    throw py::type_error(fmt::format("{}: expected a sequence of token ids, or str or bytes, not {}", what,
                                     type_name_of(tokens)));
  for (py::handle t : tokens.cast<py::sequence>()) out.push_back(t.cast<int32_t>());
  return out;
}

/// Prompts from Python: one (token_ids), or a list or tuple of them (its
/// items str, bytes or sequences of ids rather than ids); `several` says
/// which it was.
std::vector<std::vector<int32_t>> prompts_of(py::handle prompt, bool& several) {
  several = false;
  if (py::isinstance<py::list>(prompt) || py::isinstance<py::tuple>(prompt)) {
    const auto items = prompt.cast<py::sequence>();
    several = items.size() > 0 && (py::isinstance<py::str>(items[0]) || py::isinstance<py::bytes>(items[0]) ||
                                   py::isinstance<py::sequence>(items[0]));
  }
  if (!several) return {token_ids(prompt, "prompt")};
  std::vector<std::vector<int32_t>> out;
  for (py::handle p : prompt.cast<py::sequence>()) out.push_back(token_ids(p, "prompt"));
  return out;
}

/// A dict of arrays by parameter name (a Runtime's state_dict()) as
/// safetensors in memory, each converted to float32.
SafeTensors weights_of(const py::dict& state) {
  SafeTensors out;
  for (auto [key, value] : state) {
    const auto array = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(value);
    if (!array)
      throw py::type_error(fmt::format("weights '{}': expected an array of numbers, not {}", str_of(key),
                                       type_name_of(value)));
    Shape shape(array.shape(), array.shape() + array.ndim());
    out.add(str_of(key), TensorType{DType::f32, shape}, array.data());
  }
  return out;
}

std::unique_ptr<LanguageModelHandle> open(py::handle model, py::handle weights, py::handle bind) {
  const std::shared_ptr<const SourceFile> source = model_source(model);
  const std::string binding = bind_text(bind);
  if (py::isinstance<py::dict>(weights)) {
    SafeTensors arrays = weights_of(weights.cast<py::dict>());
    py::gil_scoped_release release;
    return std::make_unique<LanguageModelHandle>(
        tools::LanguageModel(tools::load_model(source, binding, /*require_loss=*/true), std::move(arrays), "weights"));
  }
  const std::string path = path_of(weights);
  py::gil_scoped_release release;
  return std::make_unique<LanguageModelHandle>(
      tools::LanguageModel(tools::load_model(source, binding, /*require_loss=*/true), path));
}

py::array_t<float> logits(LanguageModelHandle& h, py::handle tokens) {
  const std::vector<int32_t> ids = token_ids(tokens, "tokens");
  std::vector<float> out;
  {
    py::gil_scoped_release release;
    std::lock_guard lock(h.busy);
    const std::span<const float> row = h.model.next(ids);
    out.assign(row.begin(), row.end());
  }
  py::array_t<float> array(static_cast<py::ssize_t>(out.size()));
  std::copy(out.begin(), out.end(), array.mutable_data());
  return array;
}

py::object generate(LanguageModelHandle& h, py::handle prompt, int64_t tokens, double temperature, int64_t top_k,
                    double top_p, uint64_t seed, bool cache, std::optional<int64_t> samples, py::handle stop,
                    std::optional<int64_t> max_batch) {
  if (tokens < 0) throw py::value_error(fmt::format("tokens must be 0 or more, not {}", tokens));
  if (samples && *samples < 1) throw py::value_error(fmt::format("samples must be 1 or more, not {}", *samples));
  if (max_batch && *max_batch < 1)
    throw py::value_error(fmt::format("max_batch must be 1 or more, not {}", *max_batch));
  bool several = false;
  const std::vector<std::vector<int32_t>> prompts = prompts_of(prompt, several);
  const std::vector<std::span<const int32_t>> views(prompts.begin(), prompts.end());
  tools::Generation what{tokens, tools::Sampling{temperature, top_k, top_p}, seed, samples.value_or(1), {},
                         max_batch.value_or(0)};
  if (!stop.is_none()) {
    // One stop sequence (str, bytes) or a list of them (str, bytes, lists of
    // ids, or ids: each a sequence of one, as an end-of-text id).
    if (py::isinstance<py::str>(stop) || py::isinstance<py::bytes>(stop)) {
      what.stop.push_back(token_ids(stop, "stop"));
    } else {
      if (!py::isinstance<py::sequence>(stop))
        throw py::type_error(fmt::format("stop: expected str, bytes or a list of them, not {}", type_name_of(stop)));
      for (py::handle s : stop.cast<py::sequence>())
        what.stop.push_back(py::isinstance<py::int_>(s) ? std::vector<int32_t>{s.cast<int32_t>()}
                                                        : token_ids(s, "stop"));
    }
  }
  std::vector<std::vector<int32_t>> drawn;
  {
    py::gil_scoped_release release;
    std::lock_guard lock(h.busy);
    h.model.use_cache(cache);
    drawn = h.model.generate(views, what);
  }
  // Per prompt (where several were given): its samples' lists, or its one list.
  const auto per_prompt = static_cast<size_t>(what.samples);
  const auto of_prompt = [&](size_t i) -> py::object {
    if (!samples) return py::cast(drawn[i]);
    const auto first = drawn.begin() + static_cast<std::ptrdiff_t>(i * per_prompt);
    return py::cast(std::vector<std::vector<int32_t>>(first, first + static_cast<std::ptrdiff_t>(per_prompt)));
  };
  if (!several) return of_prompt(0);
  py::list out;
  for (size_t i = 0; i < prompts.size(); ++i) out.append(of_prompt(i));
  return out;
}

// Why generate() reads every token again, or None where it reads each drawn one alone over a cache.
py::object why_uncached(const LanguageModelHandle& h) {
  const std::string& why = h.model.why_uncached();
  if (why.empty()) return py::none();
  return py::str(why);
}

}  // namespace

void bind_language_model(py::module_& m) {
  py::class_<LanguageModelHandle>(m, "LanguageModel", R"(A trained language model on one CPU device, for sampling.

    lm = pipeforge.LanguageModel("examples/gpt.pf", "w.safetensors", bind="L=1,C=32,H=2,T=16,S=16,V=256")
    ids = lm.generate("the c", tokens=40, temperature=0.8, top_k=40, seed=1)
    text = bytes(ids).decode(errors="replace")

The model reads token ids (its first input, i32[B,T]) and trains on the
cross_entropy of its logits at every position, as examples/gpt.pf; it runs
forward up to those logits for one sequence (B = 1), with weights from a
safetensors file or a checkpoint folder. It reads the latest T tokens with
padding after a shorter sequence, so it must be causal, which loading
checks. generate() reads each drawn token alone, over a cache of the keys
and values of those before it, where the model allows (`uncached` says why
not). `pipeforge sample` is the same, with the same draws for a seed.)")
      .def(py::init(&open), py::arg("model"), py::arg("weights"), py::arg("bind") = py::none(),
           "model: IR text or a path; weights: a safetensors file, a checkpoint folder, or a dict of arrays by "
           "parameter name (a Runtime's state_dict()); bind: dimensions to override, \"L=4,C=128\" or "
           "{\"L\": 4, \"C\": 128} (the batch is bound to one sequence)")
      .def_property_readonly("name", [](const LanguageModelHandle& h) { return h.model.name(); },
                             "the model's graph name")
      .def_property_readonly("context", [](const LanguageModelHandle& h) { return h.model.context(); },
                             "T: the most tokens it reads at once")
      .def_property_readonly("vocabulary", [](const LanguageModelHandle& h) { return h.model.vocabulary(); },
                             "V: token ids are 0 .. V - 1")
      .def_property_readonly("uncached", &why_uncached,
                             "None where generate() reads each drawn token alone, over a cache of the keys and values "
                             "before it; else why it reads the latest tokens all again for each")
      .def("logits", &logits, py::arg("tokens"),
           "the logits (float32, V) of the token after `tokens`: 1 to T ids, or str / bytes as their bytes")
      .def("generate", &generate, py::arg("prompt"), py::arg("tokens"), py::arg("temperature") = 1.0,
           py::arg("top_k") = 0, py::arg("top_p") = 1.0, py::arg("seed") = 0, py::arg("cache") = true,
           py::arg("samples") = py::none(), py::arg("stop") = py::none(), py::arg("max_batch") = py::none(),
           "`tokens` ids drawn one after another after `prompt` (ids, or str / bytes as their bytes), each from "
           "the softmax of the logits divided by `temperature` (0: the most likely) among the `top_k` most likely "
           "(0: all), then among the fewest most likely whose probabilities add up to `top_p` (1: all), from "
           "std::mt19937_64(seed); returns the drawn ids. cache=False reads the latest tokens all again for each "
           "(the same draws, slower). samples=k returns k such lists, the s-th drawn from seed + s, decoded side by "
           "side over the cache. A list of prompts (str, bytes or lists of ids) returns a result per prompt, each "
           "what that prompt alone returns, the prompts decoded side by side where the model allows; max_batch=n "
           "decodes at most n sequences at once, each that ends making room for the next (the same tokens). stop: "
           "a str / bytes, or a list of them, of lists of ids or of ids: a sample ends after the token that "
           "completes one (kept)");
}

}  // namespace pf::python
