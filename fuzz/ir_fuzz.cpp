// The IR's front end on any bytes: parse, verify (shape inference included)
// and, for a model that verifies, the model pipeline of passes. A bad model
// must give pf::Error; anything else (a crash, another exception, a
// sanitizer report, a hang) is a defect.
#include <cstddef>
#include <cstdint>
#include <string>

#include "ir/diagnostic.h"
#include "ir/parser.h"
#include "ir/verifier.h"
#include "passes/pipeline.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    pf::Module m = pf::parse_module_text("fuzz.pf", text);
    const pf::DimBinding binding = m.binding();
    pf::verify_module(m, binding);
    pf::PassContext ctx{binding};
    pf::run_pipeline(m, pf::PassPipeline::model, ctx);
  } catch (const pf::Error&) {
    // the located error a user sees
  }
  return 0;
}
