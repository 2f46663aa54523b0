# lit configuration for Pipeforge's IR tests.
import os
import shutil
import subprocess

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
# FileCheck on `opt --print-changed`: whole lines, and no line about a pass
# that the test does not name (add --check-prefix).
config.substitutions.append(("%changed", "FileCheck --match-full-lines --implicit-check-not='{{^pass }}'"))

# Debian's interpreter, which has python3-onnx and python3-torch (the first
# python3 on PATH may be another); "onnx" where it can build ONNX files.
system_python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else "python3"
config.substitutions.append(("%python", system_python))
if subprocess.run([system_python, "-c", "import onnx, numpy"], capture_output=True).returncode == 0:
    config.available_features.add("onnx")

# Features: "cuda" where this build has the CUDA backend (PF_CUDA), and
# "cuda-device" where a GPU is visible too, so that a test can say which
# message `pipeforge run` gives for a plan that names GPUs; "cuda-2-devices"
# where two are (ranks over NCCL).
if config.pf_cuda.upper() in ("ON", "1", "TRUE", "YES"):
    config.available_features.add("cuda")
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0") not in ("", "-1")
    smi = shutil.which("nvidia-smi")
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True) if visible and smi else None
    if listed and listed.returncode == 0:
        config.available_features.add("cuda-device")
        # Two ranks over NCCL need two GPUs.
        if listed.stdout.count("GPU ") >= 2:
            config.available_features.add("cuda-2-devices")
