# lit configuration for Pipeforge's IR tests.
import os

import lit.formats

config.name = "pipeforge"
config.test_format = lit.formats.ShTest(execute_external=False)
config.suffixes = [".pf", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.pf_binary_dir, "tests", "lit")

tools = os.path.join(config.pf_binary_dir, "tools")
config.environment["PATH"] = os.pathsep.join([tools, config.llvm_tools_dir, config.environment.get("PATH", "")])
config.substitutions.append(("%examples", os.path.join(config.pf_source_dir, "examples")))
# FileCheck on diagnostics: the quoted line and the caret must match exactly.
config.substitutions.append(("%diag", "FileCheck --strict-whitespace --match-full-lines"))
