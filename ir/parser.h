// Reads the textual IR into a Module.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ir/module.h"

namespace pf {

/// Parses a whole module. Syntax, unknown ops and attributes, and names
/// (redefinition, use before definition, undefined values) are checked here;
/// types and shapes by the verifier. Throws a located Error.
Module parse_module(std::shared_ptr<const SourceFile> file);
Module parse_module_text(std::string name, std::string text);

/// How many modules this process has parsed: a count that lets tests see
/// that loading a plan parses each stage program once.
int64_t modules_parsed();

}  // namespace pf
